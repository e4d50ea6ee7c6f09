"""How a parallel replay starts its worker processes and shares out the segments."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from beacon_verifier import replay
from beacon_verifier.replay import RUN_SEGMENTS, _runs, _worker_context

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


@pytest.mark.parametrize(
    ("segments", "jobs"), [(1, 2), (4, 2), (31, 2), (365, 2), (365, 8), (9, 64)]
)
def test_runs_are_consecutive_bounded_and_shrink_towards_the_end(segments: int, jobs: int) -> None:
    tasks = list(range(segments))
    runs = _runs(tasks, jobs)  # type: ignore[arg-type]
    assert [t for run in runs for t in run] == tasks  # every segment once, in order
    sizes = [len(run) for run in runs]
    assert all(1 <= n <= RUN_SEGMENTS for n in sizes)
    assert sizes == sorted(sizes, reverse=True)  # the last ones short: workers end together
    assert sizes[-1] == 1
    if segments >= 4 * jobs:
        assert max(sizes) > 1  # a worker has a next day to read ahead
