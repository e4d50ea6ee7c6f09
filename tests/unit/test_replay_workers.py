"""How a parallel replay starts its worker processes."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from beacon_verifier import replay
from beacon_verifier.replay import _worker_context

FORKS = "fork" in multiprocessing.get_all_start_methods()


@pytest.mark.skipif(not FORKS, reason="this platform cannot fork")
def test_workers_fork_when_no_other_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in the command line; a test process may run threads of its own.
    monkeypatch.setattr(replay.threading, "active_count", lambda: 1)
    assert _worker_context().get_start_method() == "fork"


def test_workers_are_spawned_while_another_thread_runs() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert _worker_context().get_start_method() == "spawn"
    finally:
        release.set()
        other.join()
