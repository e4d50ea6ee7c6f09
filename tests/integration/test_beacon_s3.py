"""`beacon run` publishing to a real S3 store (SeaweedFS on loopback)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from beacon_verifier import layout

from tests.beacon_proc import beacon_running, run_verify
from tests.integration.s3server import SeaweedS3Server

pytestmark = pytest.mark.integration


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
        if {"certificate", "pq-key", "plan"} & set(parts) or parts[-2:-1] == ["time"]:
            parts[-1] = "*"
        if parts[:3] == ["beacon", "2.0", "index"] and parts[-1] != "bounds.json":
            parts[-1] = "*"
        out.add("/".join(parts))
    return out


def test_same_object_names_as_local_and_verifies(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    # The acceptance run: 30 pulses at a 1 s period to each store, side by side.
    (tmp_path / "s3").mkdir()
    (tmp_path / "local").mkdir()
    args = ["run", "--period", "1", "--count", "30"]
    local_env = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
    with (
        beacon_running(tmp_path / "s3", args, env=s3_running.beacon_env(key_prefix)) as to_s3,
        beacon_running(tmp_path / "local", args, env=local_env) as to_dir,
    ):
        s3_out, s3_err = to_s3.communicate(timeout=180)
        _, dir_err = to_dir.communicate(timeout=180)
    assert to_s3.returncode == 0, s3_err
    assert to_dir.returncode == 0, dir_err
    s3_keys = _keys(s3_running, key_prefix)
    assert layout.pulse_key(1, 30) in s3_keys
    assert _shape(s3_keys) == _shape(_local_keys(tmp_path / "local" / "public"))

    checked = run_verify_s3(s3_running, key_prefix)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["pulsesChecked"] == 30
    local = run_verify(["chain", str(tmp_path / "local" / "public"), "--json"])
    assert local.returncode == 0, local.stdout + local.stderr
    assert json.loads(local.stdout)["pulsesChecked"] == 30
    # Secrets never reach what the beacon printed.
    assert s3_running.secret_key not in s3_out + s3_err


def run_verify_s3(server: SeaweedS3Server, prefix: str) -> subprocess.CompletedProcess[str]:
    return run_verify(["chain", f"s3://{server.bucket}/{prefix}", "--json"], env=server.aws_env())


def test_a_store_outage_is_a_marked_gap_and_loses_nothing(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    """No pulse is signed while the store cannot take its plan (``beacon.plan``):
    nobody could see it yet. Signing resumes with the store, and the gap is marked."""
    env = s3_running.beacon_env(key_prefix)
    with beacon_running(tmp_path, ["run", "--period", "1"], env=env) as proc:
        time.sleep(4)
        s3_running.stop()
        time.sleep(5)  # several periods with the store down
        s3_running.start()
        time.sleep(8)  # backoff, then signing and publishing resume
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "while the store cannot take its plan" in err  # the outage was seen
    assert "signing resumes" in err
    checked = run_verify_s3(s3_running, key_prefix)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["missing"] == [] and report["pulsesChecked"] >= 6
    assert report["gaps"] >= 1  # the outage, marked with statusCode bit 2
    client = s3_running.client()
    last = json.loads(
        client.get_object(Bucket=s3_running.bucket, Key=f"{key_prefix}/{layout.LAST_KEY}")[
            "Body"
        ].read()
    )["pulse"]
    assert last["pulseIndex"] == report["lastIndex"]
