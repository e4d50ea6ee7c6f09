"""The durable bit pool: never reuse, maximum age, QPU budget, low-water mark."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.entropy import QUANTUM_HARDWARE, QUANTUM_SIMULATOR
from beacon.entropy.extract import bits_needed, pack_bits, shot_major
from beacon.entropy.health import run_health_tests
from beacon.entropy.pool import (
    EXPIRED,
    FAILED,
    HARVESTED,
    EntropyPool,
    PoolPolicy,
    decide_harvest,
    utc_day,
)
from beacon.entropy.record import Provenance
from beacon.errors import EntropyError

DAY = 86_400.0
T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_batch(
    batch_id: str, *, shots: int = 1024, qubits: int = 8, seed: int = 0, harvested_at: float = T0
) -> tuple[Provenance, np.ndarray]:
    bits = np.random.default_rng(seed).integers(0, 2, size=(shots, qubits), dtype=np.uint8)
    provenance = Provenance(
        backend="fake_backend",
        job_id=f"job-{batch_id}",
        batch_id=batch_id,
        qubits=tuple(range(qubits)),
        shots=shots,
        harvested_at=harvested_at,
    )
    return provenance, bits


def add(pool: EntropyPool, batch_id: str, **kwargs: object) -> np.ndarray:
    provenance, bits = make_batch(batch_id, **kwargs)  # type: ignore[arg-type]
    pool.add_batch(
        kind=QUANTUM_HARDWARE, provenance=provenance, bits=bits, health=run_health_tests(bits)
    )
    return bits


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool(tmp_path: Path, clock: Clock) -> EntropyPool:
    return EntropyPool(tmp_path / "pool.db", PoolPolicy(), clock=clock)


def test_take_hands_out_consecutive_ranges_that_rederive(pool: EntropyPool) -> None:
    bits = add(pool, "b1")
    stream = shot_major(bits)
    previous_end = 0
    for _ in range(3):
        got = pool.take(1, 1)
        assert got.kind == QUANTUM_HARDWARE
        assert got.provenance.batch_id == "b1"
        c = got.conditioned
        assert c.start == previous_end
        assert c.end - c.start == bits_needed(got.health.min_entropy)
        assert c.raw == pack_bits(stream[c.start : c.end])
        assert c.value == hashlib.sha512(c.raw).digest()
        previous_end = c.end


def test_empty_pool_is_an_entropy_error(pool: EntropyPool) -> None:
    with pytest.raises(EntropyError, match="empty"):
        pool.take(1, 1)


def test_exhausted_batch_moves_on_to_the_next(pool: EntropyPool, clock: Clock) -> None:
    # 8192 bits, about the fewest the non-IID estimators pass: a few draws at most.
    add(pool, "small", shots=1024, qubits=8)
    clock.now += 1
    add(pool, "next", harvested_at=T0 + 1, seed=1)
    taken = [pool.take(1, 1).provenance.batch_id for _ in range(6)]
    first_next = taken.index("next")
    assert first_next >= 1 and set(taken[:first_next]) == {"small"}
    assert set(taken[first_next:]) == {"next"}
    assert pool.summary()["batches"] == {"exhausted": 1, "live": 1}


def test_offsets_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "pool.db"
    with EntropyPool(path, clock=clock) as first:
        add(first, "b1")
        end = first.take(1, 1).conditioned.end
    with EntropyPool(path, clock=clock) as second:
        assert second.take(1, 2).conditioned.start == end


def test_two_connections_never_share_bits(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "pool.db"
    a = EntropyPool(path, clock=clock)
    b = EntropyPool(path, clock=clock)
    add(a, "b1", shots=4096)
    spans = sorted(
        (c.start, c.end)
        for c in ((a if i % 2 else b).take(1, i + 1).conditioned for i in range(10))
    )
    assert len(spans) == 10
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))


def test_rejected_batches_are_kept_but_never_drawn(pool: EntropyPool) -> None:
    provenance, bits = make_batch("bad")
    bits[:, 0] = 1
    health = run_health_tests(bits)
    assert not health.passed
    pool.add_batch(kind=QUANTUM_HARDWARE, provenance=provenance, bits=bits, health=health)
    assert pool.summary()["batches"] == {"rejected": 1}
    assert pool.usable_draws() == 0
    with pytest.raises(EntropyError):
        pool.take(1, 1)


def test_batches_past_max_age_are_discarded(tmp_path: Path, clock: Clock) -> None:
    pool = EntropyPool(tmp_path / "p.db", PoolPolicy(max_age_seconds=3600), clock=clock)
    add(pool, "old")
    pool.take(1, 1)
    clock.now += 3601
    assert pool.usable_draws() == 0
    with pytest.raises(EntropyError, match="empty"):
        pool.take(1, 1)
    assert pool.summary()["batches"] == {EXPIRED: 1}


def test_used_batch_is_released_only_after_its_last_pulse(pool: EntropyPool) -> None:
    bits = add(pool, "b1", shots=1024, qubits=8)  # 8192 bits: a few draws, then exhausted
    add(pool, "unused")
    pulse, got = 5, pool.take(1, 5)
    assert got.provenance.batch_id == "b1"
    while (following := pool.take(1, pulse + 1)).provenance.batch_id == "b1":
        pulse, got = pulse + 1, following
    assert following.provenance.batch_id == "unused"
    assert pool.released_batches(1, pulse - 1) == []  # b1's last record is still secret
    [raw] = pool.released_batches(1, pulse)  # "unused" is still live: not released
    assert raw.batch_id == "b1"
    assert raw.data == pack_bits(shot_major(bits))
    assert hashlib.sha512(raw.data).digest() == got.batch_sha512
    assert got.batch_bits == bits.size
    pool.batch_published("b1")
    assert pool.released_batches(2, 1) == []  # published once, bits gone


def test_same_batch_twice_is_refused(pool: EntropyPool) -> None:
    add(pool, "b1")
    with pytest.raises(EntropyError):
        add(pool, "b1")


def test_kind_and_shape_are_checked(pool: EntropyPool) -> None:
    provenance, bits = make_batch("b1")
    health = run_health_tests(bits)
    with pytest.raises(ValueError):
        pool.add_batch(kind="os-fallback", provenance=provenance, bits=bits, health=health)
    with pytest.raises(ValueError):
        pool.add_batch(
            kind=QUANTUM_SIMULATOR, provenance=provenance, bits=bits[:512].copy(), health=health
        )


def test_pool_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    EntropyPool(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loose = tmp_path / "loose.db"
    loose.touch()
    os.chmod(loose, 0o644)
    with pytest.raises(EntropyError, match="chmod 600"):
        EntropyPool(loose)


class TestBudget:
    def test_submissions_are_charged_per_utc_day(self, tmp_path: Path, clock: Clock) -> None:
        policy = PoolPolicy(qpu_seconds_per_day=25, job_qpu_seconds_estimate=10)
        pool = EntropyPool(tmp_path / "p.db", policy, clock=clock)
        assert pool.harvest_decision().start
        pool.record_submission("j1", "ibm_x", qubits=(0, 1), shots=10)
        assert pool.spent_today() == 10
        assert not pool.harvest_decision().start  # j1 is pending
        pool.record_job_end("j1", state=FAILED, qpu_seconds=12.5)
        assert pool.spent_today() == 12.5
        assert pool.harvest_decision().start  # 12.5 + 10 <= 25
        pool.record_submission("j2", "ibm_x", qubits=(0, 1), shots=10)
        pool.record_job_end("j2", state=HARVESTED, qpu_seconds=3)
        decision = pool.harvest_decision()  # 15.5 + 10 > 25
        assert not decision.start and "budget" in decision.reason
        clock.now = (T0 // DAY + 1) * DAY  # next UTC midnight
        assert utc_day(clock.now) != utc_day(T0)
        assert pool.spent_today() == 0
        assert pool.harvest_decision().start

    def test_pending_jobs_remember_their_layout(self, pool: EntropyPool) -> None:
        pool.record_submission("j1", "ibm_x", qubits=(5, 3), shots=77)
        [job] = pool.pending_jobs()
        assert (job.job_id, job.backend, job.qubits, job.shots) == ("j1", "ibm_x", (5, 3), 77)
        with pytest.raises(ValueError):
            pool.record_job_end("j1", state="pending")


@settings(max_examples=200, deadline=None)
@given(
    usable=st.integers(0, 1000),
    pending=st.integers(0, 3),
    spent=st.floats(0, 100, allow_nan=False),
    budget=st.floats(0, 100, allow_nan=False),
    estimate=st.floats(0.1, 50, allow_nan=False),
    low_water=st.integers(0, 500),
)
def test_decision_never_exceeds_the_budget(
    usable: int, pending: int, spent: float, budget: float, estimate: float, low_water: int
) -> None:
    policy = PoolPolicy(
        low_water_draws=low_water, qpu_seconds_per_day=budget, job_qpu_seconds_estimate=estimate
    )
    decision = decide_harvest(policy, usable_draws=usable, pending_jobs=pending, spent_today=spent)
    assert decision.start == (pending == 0 and usable < low_water and spent + estimate <= budget)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(128, 2048), st.integers(1, 6)),
        st.tuples(st.just("take"), st.just(0), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 10_000), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
        st.tuples(st.just("publish"), st.integers(0, 40), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=operations)
def test_never_hands_out_the_same_bits_twice(ops: list[tuple[str, int, int]]) -> None:
    max_age = 7200.0
    clock = Clock()
    handed: dict[str, list[tuple[int, int]]] = {}
    streams: dict[str, np.ndarray] = {}
    born: dict[str, float] = {}
    last_use: dict[str, int] = {}
    digests: dict[str, bytes] = {}
    released: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.db"
        pool = EntropyPool(path, PoolPolicy(max_age_seconds=max_age), clock=clock)
        try:
            for i, (op, a, b) in enumerate(ops):
                if op == "add":
                    batch_id = f"b{i}"
                    bits = add(pool, batch_id, shots=a, qubits=b, seed=i, harvested_at=clock.now)
                    streams[batch_id] = shot_major(bits)
                    born[batch_id] = clock.now
                elif op == "wait":
                    clock.now += a
                elif op == "reopen":
                    pool.close()
                    pool = EntropyPool(path, PoolPolicy(max_age_seconds=max_age), clock=clock)
                elif op == "publish":
                    # Pulses up to index ``a`` are out: only batches they alone used come back.
                    for raw in pool.released_batches(1, a):
                        assert raw.batch_id not in released
                        assert last_use[raw.batch_id] <= a
                        assert raw.data == pack_bits(streams[raw.batch_id])
                        assert hashlib.sha512(raw.data).digest() == digests[raw.batch_id]
                        pool.batch_published(raw.batch_id)
                        released.add(raw.batch_id)
                else:
                    try:
                        got = pool.take(1, i + 1)
                    except EntropyError:
                        # Empty only when no live batch within max age could serve a draw.
                        continue
                    batch_id = got.provenance.batch_id
                    assert batch_id not in released
                    last_use[batch_id] = i + 1
                    digests[batch_id] = got.batch_sha512
                    c = got.conditioned
                    assert clock.now - born[batch_id] <= max_age
                    assert c.raw == pack_bits(streams[batch_id][c.start : c.end])
                    handed.setdefault(batch_id, []).append((c.start, c.end))
        finally:
            pool.close()
    for spans in handed.values():
        spans.sort()
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))


def test_batches_tested_before_the_non_iid_estimate_are_not_drawn(
    pool: EntropyPool, tmp_path: Path
) -> None:
    add(pool, "old")
    add(pool, "new", harvested_at=T0 + 1, seed=1)
    with sqlite3.connect(tmp_path / "pool.db") as db:  # as a pool written before the upgrade
        (health,) = db.execute("SELECT health FROM batch WHERE batch_id = 'old'").fetchone()
        doc = json.loads(health)
        del doc["nonIid"]
        db.execute("UPDATE batch SET health = ? WHERE batch_id = 'old'", (json.dumps(doc),))
    assert pool.take(1, 1).provenance.batch_id == "new"
    assert pool.summary()["batches"] == {"live": 1, "rejected": 1}
