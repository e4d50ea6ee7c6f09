"""Settings: defaults, TOML, environment, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon.config import Settings, load_settings
from beacon.errors import ConfigError


def test_defaults_need_no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s == Settings()
    assert s.period_ms == 60_000
    assert s.site_url == (tmp_path / "public").as_uri()


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "beacon.toml"
    cfg.write_text('period = 5\nname = "from file"\nbase_url = "https://b.example/"\n')
    s = load_settings(cfg, environ={"BEACON_PERIOD": "2"}, overrides={"out_dir": "site"})
    assert (s.period, s.name, s.out_dir) == (2.0, "from file", Path("site"))
    assert s.site_url == "https://b.example"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("period = 0.5", {}, "at least 1 second"),
        ("period = 7", {}, "divide a day"),
        ("period = 1.0005", {}, "whole number of milliseconds"),
        ("perod = 5", {}, "unknown setting 'perod'"),
        ("period = 'soon'", {}, "period must be a float"),
        ("entropy_source = 'dice'", {}, "entropy_source must be one of"),
        ("publisher = 's3'", {}, "needs s3_bucket"),
        ("period = [", {}, "not valid TOML"),
        ("", {"BEACON_CHAIN": "x"}, "BEACON_CHAIN: chain must be a int"),
        ("", {"BEACON_NOPE": "1"}, "unknown setting BEACON_NOPE"),
        ("base_url = 'ftp://x'", {}, "base_url must be"),
        ("ibm_channel = 'ibm_cloud'", {}, "ibm_channel must be one of"),
        ("ibm_shots = 1", {}, "ibm_shots at least 2"),
        ("", {"BEACON_POOL_MAX_AGE_HOURS": "0"}, "pool_max_age_hours and job_qpu"),
        ("qpu_seconds_per_day = -1", {}, "qpu_seconds_per_day must be 0 or more"),
    ],
)
def test_errors_are_one_clear_line(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    cfg = tmp_path / "beacon.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BEACON_PERIOD": "nan"}, "period must be a finite number"),
        ({"BEACON_PERIOD": "inf"}, "period must be a finite number"),
        ({"BEACON_NAME": ""}, "name must be 1 to 64 characters"),
        ({"BEACON_NAME": "x" * 65}, "name must be 1 to 64 characters"),
        ({"BEACON_S3_PREFIX": "../x"}, "s3_prefix must be plain path segments"),
        ({"BEACON_S3_PREFIX": "a//b"}, "s3_prefix must be plain path segments"),
        ({"BEACON_OUTBOX_MAX": "0"}, "outbox_max must be at least 1"),
    ],
)
def test_bad_values_issue_21(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(environ=env)
    assert "\n" not in str(caught.value)


def test_a_plain_prefix_is_fine() -> None:
    assert load_settings(environ={"BEACON_S3_PREFIX": "/beacon/prod/"}).s3_prefix == "/beacon/prod/"
