"""A broken store fails loudly (issue 21, E), with real processes.

Permanent store errors end ``beacon run`` with exit 1 and one line naming the
store and the cause; an outage after a good start is retried, the outbox is
bounded, and SIGINT during the outage ends the run within 5 s, outbox kept.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from beacon.state import State
from tests.beacon_proc import beacon_running, run_beacon
from tests.integration.s3server import SeaweedS3Server

pytestmark = pytest.mark.integration

OS_SOURCE = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}


def refused(cwd: Path, env: dict[str, str], *args: str) -> str:
    """Run a beacon that must refuse; returns its one error line."""
    began = time.monotonic()
    done = run_beacon(cwd, ["run", "--period", "2", "--count", "1", *args], env=env, timeout=60)
    elapsed = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("beacon: ")]
    assert len(lines) == 1, done.stderr
    assert elapsed < 30, f"took {elapsed:.1f} s"  # was: standby forever
    return lines[0]


def test_an_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "site").write_text("not a directory")
    line = refused(tmp_path, OS_SOURCE, "--out", "site")
    assert "site" in line and "store" in line, line


def test_an_out_dir_under_proc_is_refused(tmp_path: Path) -> None:
    line = refused(tmp_path, OS_SOURCE, "--out", "/proc/beacon-site")
    assert "/proc/beacon-site" in line, line


def test_a_missing_bucket_is_refused(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    env = s3_running.beacon_env(key_prefix) | {"BEACON_S3_BUCKET": "no-such-bucket-i21"}
    line = refused(tmp_path, env)
    assert "s3://no-such-bucket-i21" in line, line


def test_a_dead_endpoint_is_refused_within_a_period(tmp_path: Path, key_prefix: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    env = OS_SOURCE | {
        "BEACON_PUBLISHER": "s3",
        "BEACON_S3_BUCKET": "beacon",
        "BEACON_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "BEACON_S3_REGION": "us-east-1",
        "BEACON_BASE_URL": "https://beacon.example",  # S3 needs an explicit base_url
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
    }
    line = refused(tmp_path, env)
    assert "s3://beacon" in line, line


def test_object_lock_on_a_bucket_without_it_is_refused(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    env = s3_running.beacon_env(key_prefix) | {"BEACON_S3_OBJECT_LOCK_DAYS": "1"}
    line = refused(tmp_path, env)
    assert f"s3://{s3_running.bucket}" in line, line


def test_an_outage_is_retried_signs_nothing_unseen_and_sigint_ends_it_quickly(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    env = s3_running.beacon_env(key_prefix)
    try:
        with beacon_running(tmp_path, ["run", "--period", "1"], env=env) as proc:
            state_path = tmp_path / "beacon-data" / "state.sqlite"
            deadline = time.monotonic() + 60
            while not _published(state_path):
                assert time.monotonic() < deadline and proc.poll() is None, "nothing published"
                time.sleep(0.2)
            s3_running.stop()
            time.sleep(6)  # several periods of outage
            assert proc.poll() is None, "an outage after a good start must be retried"
            began = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            assert time.monotonic() - began <= 5, err
        assert proc.returncode == 0, err
        assert "while the store cannot take its plan" in err, err
        state = State(state_path, readonly=True)
        try:
            # No pulse is signed that the store has not seen the plan of: at most the
            # one being published when the store went away is kept.
            assert state.outbox_length() <= 1
        finally:
            state.close()
    finally:
        s3_running.start()
    resumed = run_beacon(tmp_path, ["run", "--period", "1", "--count", "1"], env=env)
    assert resumed.returncode == 0, resumed.stderr
    state = State(tmp_path / "beacon-data" / "state.sqlite", readonly=True)
    try:
        assert state.outbox_length() == 0
    finally:
        state.close()


def _published(state_path: Path) -> bool:
    if not state_path.exists():
        return False
    state = State(state_path, readonly=True)
    try:
        return state.published_head() is not None
    finally:
        state.close()
