"""Settings: defaults, TOML, environment, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from beacon.config import Settings, load_settings
from beacon.errors import ConfigError


def test_defaults_need_no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s == Settings()
    assert s.period_ms == 60_000
    # The address `beacon run` serves the site at: never a path on the operator's disk.
    assert s.site_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"BEACON_SERVE_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"BEACON_SERVE_PORT": "0"}, "http://127.0.0.1:8080"),  # `beacon serve`'s default
        ({"BEACON_SERVE_ADDRESS": "0.0.0.0"}, "http://127.0.0.1:8080"),  # noqa: S104
        ({"BEACON_SERVE_ADDRESS": "::1"}, "http://[::1]:8080"),
        ({"BEACON_SERVE_ADDRESS": "192.0.2.7"}, "http://192.0.2.7:8080"),
    ],
)
def test_default_base_url_is_the_gateway(
    env: dict[str, str], url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ=env).site_url == url


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
        ("publisher = 's3'\ns3_bucket = 'b'", {}, "publisher 's3' needs base_url"),
        ("base_url = 'file:///srv/site'", {}, "base_url must be an http(s):// URL"),
        ("serve_port = 70000", {}, "serve_port must be 0 (off)"),
        ("serve_address = 'localhost'", {}, "serve_address must be an IP address"),
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


def test_external_settings(tmp_path: Path) -> None:
    s = load_settings(environ={})
    assert s.external_source == "drand" and s.external_wait_ms == 5000
    assert s.drand_chain_hash.startswith("52db9ba7") and len(s.drand_urls) == 4
    env = {"BEACON_DRAND_URLS": "http://127.0.0.1:1, http://127.0.0.1:2"}
    assert load_settings(environ=env).drand_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    path = tmp_path / "beacon.toml"
    path.write_text('drand_urls = ["https://a.example", "https://b.example"]\n')
    assert load_settings(path, environ={}).drand_urls == ("https://a.example", "https://b.example")
    for bad, needle in (
        ({"BEACON_EXTERNAL_SOURCE": "nist"}, "external_source must be one of drand, none"),
        ({"BEACON_DRAND_URLS": "ftp://x"}, "drand_urls: 'ftp://x' is not an http(s):// URL"),
        ({"BEACON_DRAND_CHAIN_HASH": "abcd"}, "drand_chain_hash must be 64 hex digits"),
        ({"BEACON_DRAND_PUBLIC_KEY": "zz"}, "drand_public_key must be 192 hex digits"),
        ({"BEACON_EXTERNAL_WAIT_MS": "-1"}, "external_wait_ms must be 0 or more"),
    ):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_settings(environ=bad)
    # "none" needs no relay
    assert load_settings(environ={"BEACON_EXTERNAL_SOURCE": "none", "BEACON_DRAND_URLS": ""})


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
