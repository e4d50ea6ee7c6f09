"""The pure logic of network audits: limiter, retry budget, backoff, Retry-After."""

from __future__ import annotations

import threading
import time

import pytest
from beacon_verifier.throttle import (
    MAX_CONCURRENCY,
    MAX_RETRY_AFTER,
    Limiter,
    RetryBudget,
    backoff,
    retry_after,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_congestion_halves_the_limit_once_per_cooldown() -> None:
    clock = FakeClock()
    limiter = Limiter(32, cooldown=1.0, clock=clock)
    limiter.congested()
    assert limiter.limit == 16
    limiter.congested()  # the same burst of refusals
    assert limiter.limit == 16
    clock.now += 1.5
    limiter.congested()
    assert limiter.limit == 8
    for _ in range(10):
        clock.now += 2
        limiter.congested()
    assert limiter.limit == 1  # never below one


def test_calm_answers_grow_the_limit_back_to_where_it_started() -> None:
    clock = FakeClock()
    limiter = Limiter(4, clock=clock)
    limiter.congested()
    assert limiter.limit == 2
    limiter.answered()
    assert limiter.limit == 2  # one more place after `limit` calm answers
    limiter.answered()
    assert limiter.limit == 3
    for _ in range(100):
        limiter.answered()
    assert limiter.limit == 4


def test_a_refusal_resets_the_calm_count() -> None:
    clock = FakeClock()
    limiter = Limiter(8, clock=clock)
    limiter.congested()  # 4
    for _ in range(3):
        limiter.answered()
    clock.now += 0.1  # within the cooldown: not halved again, but not calm either
    limiter.congested()
    limiter.answered()
    assert limiter.limit == 4


def test_acquire_holds_at_most_limit_at_once() -> None:
    limiter = Limiter(3)
    peak = 0
    lock = threading.Lock()
    inside = 0

    def work() -> None:
        nonlocal peak, inside
        limiter.acquire()
        with lock:
            inside += 1
            peak = max(peak, inside)
        time.sleep(0.02)
        with lock:
            inside -= 1
        limiter.release()

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3 and limiter.active == 0


def test_retry_after_pauses_new_requests() -> None:
    clock = FakeClock()
    limiter = Limiter(4, clock=clock)
    limiter.congested(pause=5.0)
    got = threading.Event()

    def take() -> None:
        limiter.acquire()
        got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert not got.wait(0.3)  # paused: the clock has not moved
    clock.now += 5.0
    assert got.wait(3.0)  # wakes within its 1 s poll once the pause is over
    limiter.release()


def test_a_pause_is_capped() -> None:
    clock = FakeClock()
    limiter = Limiter(4, clock=clock)
    limiter.congested(pause=10_000)
    assert limiter._paused_until == clock.now + MAX_RETRY_AFTER


@pytest.mark.parametrize("bad", [0, MAX_CONCURRENCY + 1])
def test_concurrency_is_bounded(bad: int) -> None:
    with pytest.raises(ValueError, match="concurrency must be"):
        Limiter(bad)


def test_the_retry_budget_is_shared_and_earned_back() -> None:
    budget = RetryBudget(initial=2, ratio=0.5, cap=3)
    assert budget.spend() and budget.spend()
    assert not budget.spend()  # spent: a failing site gets no more retries
    budget.earn()
    assert not budget.spend()  # half a token
    budget.earn()
    assert budget.spend()
    for _ in range(100):
        budget.earn()
    assert budget.tokens == 3  # capped


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    assert backoff(1, rng=lambda: 1.0) == 0.5
    assert backoff(2, rng=lambda: 1.0) == 1.0
    assert backoff(30, rng=lambda: 1.0) == 10.0
    assert backoff(3, rng=lambda: 0.0) == 0.0


def test_retry_after_forms() -> None:
    assert retry_after(None) is None
    assert retry_after("3") == 3.0
    assert retry_after(" 7 ") == 7.0
    assert retry_after("999999") == MAX_RETRY_AFTER
    assert retry_after("soon") is None
    assert retry_after("-1") is None
    now = 1_700_000_000.0
    assert retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)
    assert retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0.0  # in the past
