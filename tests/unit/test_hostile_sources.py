"""Hostile sources (issue 22): FIFOs, a directory symlinked out of the site, headers
trickled a byte at a time, and heads that claim absurd pulse indexes. Each ends in
one line, bounded in time (a subprocess timeout) and memory (an address-space limit)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from beacon_verifier import layout, web
from beacon_verifier.errors import FetchError

from beacon.pulse.keys import Signer
from tests.beacon_proc import beacon_env
from tests.unit.test_builder import MINUTE, ms
from tests.unit.test_replay import build_records_chain, write_site

#: The bounds every hostile case must end within.
SECONDS = 60
MEMORY = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def verify_bounded(*args: str) -> subprocess.CompletedProcess[str]:
    """``beacon-verify ARGS`` in a process limited to ``MEMORY`` bytes and ``SECONDS``."""
    return subprocess.run(
        [sys.executable, "-m", "beacon_verifier.cli", *args],
        capture_output=True,
        text=True,
        timeout=SECONDS,
        env=beacon_env(),
        preexec_fn=_limit_memory,
        check=False,
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture
def site(tmp_path: Path, signer: Signer) -> Path:
    times = [ms("2026-03-01T10:00:00") + i * MINUTE for i in range(5)]
    return write_site(tmp_path / "site", build_records_chain(times, signer), signer)


# --- FIFOs, devices and symlinks in a directory site ------------------------------------


def test_a_fifo_as_a_pulse_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pulse.json"
    os.mkfifo(fifo)
    proc = verify_bounded("pulse", str(fifo))
    assert proc.returncode == 3
    assert "is a FIFO, not a regular file" in one_line(proc.stderr)


def test_a_fifo_as_pulse_last_is_refused(site: Path) -> None:
    last = site / layout.LAST_KEY
    last.unlink()
    os.mkfifo(last)
    proc = verify_bounded("chain", str(site))
    assert proc.returncode == 3
    assert "is a FIFO, not a regular file" in one_line(proc.stderr)


def test_a_device_as_a_pulse_is_refused(site: Path) -> None:
    pulse = site / layout.pulse_key(1, 3)
    pulse.unlink()
    pulse.symlink_to("/dev/zero")
    proc = verify_bounded("chain", str(site), "--no-archives")
    assert proc.returncode == 3
    assert "is a device, not a regular file" in one_line(proc.stderr)


def test_an_entropy_directory_symlinked_to_root_does_not_pass(site: Path) -> None:
    entropy = site / "beacon/2.0/chain/1/entropy"
    for record in entropy.iterdir():
        record.unlink()
    entropy.rmdir()
    entropy.symlink_to("/")
    proc = verify_bounded("chain", str(site))
    assert proc.returncode != 0, proc.stdout
    assert "leads outside the site" in one_line(proc.stderr)


# --- heads that claim more than their timestamps allow ----------------------------------


@pytest.mark.parametrize("claimed", [10**9, 10**12])
def test_an_absurd_head_is_a_bad_head_in_one_line(site: Path, claimed: int) -> None:
    last = site / layout.LAST_KEY
    doc = json.loads(last.read_bytes())
    doc["pulse"]["pulseIndex"] = claimed
    for key in (layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY, layout.chain_last_key(1)):
        (site / key).write_text(json.dumps(doc))
    proc = verify_bounded("chain", str(site))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert f"bad head: pulse 1/{claimed}" in line
    assert "at most 5 pulses fit since pulse 1 at 2026-03-01T10:00:00.000Z" in line


def test_a_head_far_in_the_future_is_a_bad_head(site: Path) -> None:
    last = site / layout.LAST_KEY
    doc = json.loads(last.read_bytes())
    doc["pulse"]["timeStamp"] = "2999-01-01T00:00:00.000Z"
    for key in (layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY, layout.chain_last_key(1)):
        (site / key).write_text(json.dumps(doc))
    proc = verify_bounded("chain", str(site))
    assert proc.returncode == 1
    assert "more than a year after this machine's clock" in one_line(proc.stderr)


# --- headers trickled a byte at a time ---------------------------------------------------


@pytest.fixture
def trickler() -> Iterator[str]:
    """An HTTP server that sends its status line and headers one byte every 0.2 s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " * 50:
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_trickled_headers_end_at_the_object_deadline(
    trickler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "HTTP_DEADLINE", 1.5)
    monkeypatch.setattr(web, "HTTP_ATTEMPTS", 1)
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"no complete answer within 1.5 s"):
        web.http_get(f"{trickler}/beacon/2.0/pulse/last")
    assert time.monotonic() - started < SECONDS  # bounded, not a speed target
