"""Running real ``beacon`` / ``beacon-verify`` processes from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from beacon_verifier.chain import ChainReport
from beacon_verifier.fetch import LocalSource
from beacon_verifier.replay import replay_chain

ROOT = Path(__file__).resolve().parents[1]


def beacon_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "verifier")])
    env["BEACON_EXTERNAL_SOURCE"] = "none"  # no internet in tests; test_drand.py sets "drand"
    # Port 8080 may be taken (by another test, or anything else): tests that want
    # `beacon run` to serve its site pass BEACON_SERVE_PORT themselves.
    env["BEACON_SERVE_PORT"] = "0"
    env.update(extra or {})
    return env


def run_beacon(
    cwd: Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``beacon ARGS`` in ``cwd`` to completion; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "beacon.cli", *args],
        cwd=cwd,
        env=beacon_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def beacon_running(
    cwd: Path, args: Sequence[str], *, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start ``beacon ARGS`` in ``cwd`` (stdout and stderr piped, as text) for the block.

    The block stops it as the test needs (a signal, ``beacon stop``, or letting
    ``--count`` run out) and reads its output with ``communicate``. Whatever way
    the block ends, a process still running then is killed, and it is reaped.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "beacon.cli", *args],
        cwd=cwd,
        env=beacon_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def run_verify(
    args: Sequence[str], timeout: float = 120, *, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``beacon-verify ARGS`` to completion; ``env`` adds variables (e.g. AWS_*)."""
    return subprocess.run(
        [sys.executable, "-m", "beacon_verifier.cli", *args],
        env=beacon_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def replay(site: Path) -> ChainReport:
    return replay_chain(LocalSource(site))
