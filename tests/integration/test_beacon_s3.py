"""`beacon run` publishing to a real S3 store (SeaweedFS on loopback)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from beacon_verifier import layout

from tests.beacon_proc import run_beacon, run_verify, start_beacon
from tests.integration.s3server import SeaweedS3Server

pytestmark = pytest.mark.integration


def _s3_env(server: SeaweedS3Server, prefix: str) -> dict[str, str]:
    return {
        "BEACON_ENTROPY_SOURCE": "os",
        "BEACON_KEY_BITS": "2048",
        "BEACON_PUBLISHER": "s3",
        "BEACON_S3_BUCKET": server.bucket,
        "BEACON_S3_PREFIX": prefix,
        "BEACON_S3_ENDPOINT_URL": server.endpoint_url,
        "BEACON_S3_REGION": server.region,
        "BEACON_BASE_URL": f"{server.endpoint_url}/{server.bucket}/{prefix}",
        # credentials come from the standard AWS chain, never from beacon settings
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_DEFAULT_REGION": server.region,
    }


def _keys(server: SeaweedS3Server, prefix: str) -> set[str]:
    paginator = server.client().get_paginator("list_objects_v2")
    keys = set()
    for page in paginator.paginate(Bucket=server.bucket, Prefix=prefix + "/"):
        keys.update(obj["Key"][len(prefix) + 1 :] for obj in page.get("Contents", []))
    return keys


def _local_keys(site: Path) -> set[str]:
    return {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}


def _shape(keys: set[str]) -> set[str]:
    """Key names with certificate ids and timestamps blanked: the grammar, not the values."""
    out = set()
    for key in keys:
        parts = key.split("/")
        if "certificate" in parts or parts[-2:-1] == ["time"]:
            parts[-1] = "*"
        if parts[:3] == ["beacon", "2.0", "index"] and parts[-1] != "bounds.json":
            parts[-1] = "*"
        out.add("/".join(parts))
    return out


def test_same_object_names_as_local_and_verifies(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    env = _s3_env(s3_running, key_prefix)
    (tmp_path / "s3").mkdir()
    (tmp_path / "local").mkdir()
    done = run_beacon(tmp_path / "s3", ["run", "--period", "1", "--count", "6"], env=env)
    assert done.returncode == 0, done.stderr
    local = run_beacon(
        tmp_path / "local",
        ["run", "--period", "1", "--count", "6"],
        env={"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"},
    )
    assert local.returncode == 0, local.stderr
    s3_keys = _keys(s3_running, key_prefix)
    assert layout.pulse_key(1, 6) in s3_keys
    assert _shape(s3_keys) == _shape(_local_keys(tmp_path / "local" / "public"))

    checked = run_verify_s3(s3_running, key_prefix)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["pulsesChecked"] == 6
    # Secrets never reach what the beacon printed.
    assert s3_running.secret_key not in done.stdout + done.stderr


def run_verify_s3(server: SeaweedS3Server, prefix: str):  # type: ignore[no-untyped-def]
    import os

    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_DEFAULT_REGION": server.region,
        }
    )
    try:
        return run_verify(["chain", f"s3://{server.bucket}/{prefix}", "--json"])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_store_outage_delays_but_loses_nothing(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    env = _s3_env(s3_running, key_prefix)
    proc = start_beacon(tmp_path, ["run", "--period", "1"], env=env)
    try:
        time.sleep(4)
        s3_running.stop()
        time.sleep(5)  # several periods with the store down
        s3_running.start()
        time.sleep(8)  # backoff, then the outbox drains in order
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "publish failed" in err  # the outage was seen and retried
    checked = run_verify_s3(s3_running, key_prefix)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["missing"] == [] and report["pulsesChecked"] >= 12
    client = s3_running.client()
    last = json.loads(
        client.get_object(Bucket=s3_running.bucket, Key=f"{key_prefix}/{layout.LAST_KEY}")[
            "Body"
        ].read()
    )["pulse"]
    assert last["pulseIndex"] == report["lastIndex"]
