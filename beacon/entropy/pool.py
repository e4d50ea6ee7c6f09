"""A durable pool of harvested quantum bits, each handed out at most once.

Quantum hardware time is scarce (IBM's open plan gives about ten QPU-minutes
per 28 days), so the hardware mode harvests bits in batches ahead of need and
draws from them pulse by pulse. The pool keeps the batches in SQLite (stdlib
``sqlite3``, WAL journal, ``synchronous=FULL``, ``secure_delete``; the file is
created with mode 0600 and refused when group or others may read it):

- **never reused**: a draw advances its batch's offset inside one
  ``BEGIN IMMEDIATE`` transaction and hands the bits out only after the commit
  is durable, so neither a second process nor a crash can hand them out again;
  leftovers too short for a draw are dropped with the batch;
- **maximum age**: live batches older than ``max_age_seconds`` are discarded
  (status ``expired``) before every draw, used or not;
- **published once used up**: a batch that pulses drew from keeps its bits
  after it is exhausted or expired, until ``released_batches`` has handed them
  to the publisher and ``batch_published`` has been called; only then are the
  bits overwritten. A batch is released only once every pulse that drew from
  it has been published (its records stay secret until then); a batch no
  pulse drew from is overwritten at once. Every record drawn from a batch
  carries the SHA-512 of the whole packed batch, so anyone can rerun the health
  tests and the conditioning on the published bytes;
- **QPU budget**: every submitted job is charged to its UTC day, at its
  estimate until its real usage is known; ``harvest_decision`` says no once
  the day's charges plus the next job's estimate would pass the budget;
- **low-water mark**: ``harvest_decision`` says yes once fewer than
  ``low_water_draws`` draws remain, so the next job runs before the pool is dry.

The pool decides and stores; it runs no jobs (``ibm_source`` does). Failing
batches are stored as ``rejected`` for audit and never drawn from. Every
harvest attempt ends in the job table (a job that could not even be submitted
too, charged nothing), which ``harvest_record`` reads back for the health
signals of ``beacon.entropy.harvest``. Errors from
SQLite or the filesystem come out as ``EntropyError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from beacon_verifier.format import canonical_json
from numpy.typing import NDArray

from beacon.entropy import QUANTUM_HARDWARE, QUANTUM_SIMULATOR, RawBatch
from beacon.entropy.extract import (
    Conditioned,
    bits_needed,
    condition_packed,
    pack_bits,
    shot_major,
)
from beacon.entropy.harvest import OK, HarvestRecord, one_line, record_from_rows
from beacon.entropy.health import HealthResult, health_from_dict
from beacon.entropy.record import Provenance
from beacon.errors import EntropyError
from beacon.sqlite import immediate, open_private

#: Batch states.
LIVE, EXHAUSTED, EXPIRED, REJECTED = "live", "exhausted", "expired", "rejected"
#: Job states.
PENDING, HARVESTED, FAILED, LOST = "pending", "harvested", "failed", "lost"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    batch_id     TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    backend      TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    qubits       TEXT NOT NULL,
    shots        INTEGER NOT NULL,
    harvested_at REAL NOT NULL,
    health       TEXT NOT NULL,
    min_entropy  REAL NOT NULL,
    bit_count    INTEGER NOT NULL,
    next_offset  INTEGER NOT NULL,
    status       TEXT NOT NULL,
    bits         BLOB,
    sha512       BLOB NOT NULL,
    last_chain   INTEGER,
    last_pulse   INTEGER
);
CREATE INDEX IF NOT EXISTS batch_live ON batch (status, harvested_at);
CREATE TABLE IF NOT EXISTS job (
    job_id       TEXT PRIMARY KEY,
    backend      TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    day          TEXT NOT NULL,
    qpu_estimate REAL NOT NULL,
    qpu_seconds  REAL,
    qubits       TEXT NOT NULL DEFAULT '[]',
    shots        INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    ended_at     REAL
);
"""
#: Columns added after the first release, with their definitions (added when missing).
_ADDED_COLUMNS = {"job": {"ended_at": "REAL"}}
#: How many ended jobs ``harvest_record`` reads back at most.
HARVEST_HISTORY = 1000


def _forget_unused(db: sqlite3.Connection) -> None:
    """Overwrite the bits of closed batches no pulse drew from: nothing will ever cite them."""
    db.execute(
        "UPDATE batch SET bits = NULL WHERE status IN (?, ?) AND last_pulse IS NULL",
        (EXHAUSTED, EXPIRED),
    )


def utc_day(unix: float) -> str:
    """The UTC calendar day of a Unix time, ``YYYY-MM-DD``: the budget's accounting period."""
    return datetime.fromtimestamp(unix, tz=UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolPolicy:
    """When to harvest and what to throw away.

    Defaults fit IBM's open plan with a 60 s period: a job of 127 qubits x
    20,000 shots yields ~2.5 Mbit, about 1,900 draws at ~1,300 bits each;
    starting the next job with 240 draws (four hours) left leaves time to
    queue. Raises ``ValueError`` for a negative or zero figure.
    """

    low_water_draws: int = 240
    max_age_seconds: float = 2 * 86_400.0
    qpu_seconds_per_day: float = 20.0
    job_qpu_seconds_estimate: float = 10.0

    def __post_init__(self) -> None:
        if self.low_water_draws < 0:
            raise ValueError("low-water mark must be >= 0")
        if self.max_age_seconds <= 0:
            raise ValueError("maximum age must be positive")
        if self.qpu_seconds_per_day < 0 or self.job_qpu_seconds_estimate <= 0:
            raise ValueError("QPU budget must be >= 0 and the job estimate positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestDecision:
    """Whether to start a job now, and why (for logs and status)."""

    start: bool
    reason: str


def decide_harvest(
    policy: PoolPolicy, *, usable_draws: int, pending_jobs: int, spent_today: float
) -> HarvestDecision:
    """Pure rule: harvest when below the low-water mark, nothing pending, within budget."""
    if pending_jobs:
        return HarvestDecision(start=False, reason=f"{pending_jobs} job(s) pending")
    if usable_draws >= policy.low_water_draws:
        return HarvestDecision(
            start=False, reason=f"{usable_draws} draws left (low water {policy.low_water_draws})"
        )
    if spent_today + policy.job_qpu_seconds_estimate > policy.qpu_seconds_per_day:
        return HarvestDecision(
            start=False,
            reason=(
                f"QPU budget: {spent_today:.1f} s spent today, next job"
                f" ~{policy.job_qpu_seconds_estimate:.1f} s,"
                f" budget {policy.qpu_seconds_per_day:.1f} s"
            ),
        )
    return HarvestDecision(start=True, reason=f"{usable_draws} draws left")


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingJob:
    """A submitted job whose bits have not been collected yet."""

    job_id: str
    backend: str
    submitted_at: float
    qubits: tuple[int, ...]
    shots: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PooledBits:
    """Bits handed out by the pool: their batch, its health results, and the conditioned value.

    ``batch_sha512`` is the SHA-512 of the whole packed batch (``pack_bits`` of
    its shot-major stream, ``batch_bits`` bits), published once it is used up.
    """

    kind: str
    provenance: Provenance
    health: HealthResult
    conditioned: Conditioned
    batch_sha512: bytes
    batch_bits: int


class EntropyPool:
    """The SQLite pool at ``path`` (created 0600 if missing).

    ``clock`` gives Unix seconds and is injectable for tests. Safe to share
    between threads; several processes on one file are serialised by SQLite.
    Raises ``EntropyError`` when the file cannot be opened, is readable by
    group or others, or is not a pool.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        policy: PoolPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.policy = policy if policy is not None else PoolPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._db = open_private(self.path, EntropyError, what="entropy pool")
        try:
            self._db.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")}
                for name, definition in columns.items():
                    if name not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
        except sqlite3.Error as exc:
            raise EntropyError(f"cannot open entropy pool {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> EntropyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction under the lock; errors become ``EntropyError``."""
        with self._lock, immediate(self._db, EntropyError, what=f"entropy pool {self.path}"):
            yield self._db

    # --- jobs and budget ----------------------------------------------------------------

    def record_submission(
        self, job_id: str, backend: str, *, qubits: tuple[int, ...], shots: int
    ) -> None:
        """Charge a just-submitted job to today's budget at the policy's estimate.

        ``qubits`` (the physical qubit behind each classical bit) and ``shots``
        are kept so that a job collected after a restart is recorded right.
        """
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO job (job_id, backend, submitted_at, day, qpu_estimate,"
                " qubits, shots, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    backend,
                    now,
                    utc_day(now),
                    self.policy.job_qpu_seconds_estimate,
                    json.dumps(list(qubits)),
                    shots,
                    PENDING,
                ),
            )

    def record_job_end(
        self, job_id: str, *, state: str, qpu_seconds: float | None = None, detail: str = ""
    ) -> None:
        """Mark a job ``harvested``, ``failed`` or ``lost``, with its real QPU seconds when known.

        Raises ``ValueError`` for another state.
        """
        if state not in (HARVESTED, FAILED, LOST):
            raise ValueError(f"unknown job end state {state!r}")
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "UPDATE job SET state = ?, qpu_seconds = COALESCE(?, qpu_seconds), detail = ?,"
                " ended_at = ? WHERE job_id = ?",
                (state, qpu_seconds, one_line(detail), now, job_id),
            )

    def record_unsubmitted(self, backend: str, detail: str) -> None:
        """Record a harvest that failed before IBM took the job: failed, charged nothing."""
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO job (job_id, backend, submitted_at, day, qpu_estimate, qpu_seconds,"
                " state, detail, ended_at) VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?)",
                (
                    f"unsubmitted-{uuid.uuid4().hex}",
                    backend,
                    now,
                    utc_day(now),
                    FAILED,
                    one_line(detail),
                    now,
                ),
            )

    def harvest_record(self) -> HarvestRecord:
        """How the last harvests ended: the newest, and how many failed in a row.

        A batch stored as rejected (failed health tests) counts as a failure.
        Reads at most ``HARVEST_HISTORY`` ended jobs.
        """
        with self._transaction() as db:
            rows = db.execute(
                "SELECT CASE WHEN state = ? AND detail = '' THEN ? WHEN state = ? THEN ?"
                " ELSE state END, detail, COALESCE(ended_at, submitted_at) FROM job"
                " WHERE state != ? ORDER BY COALESCE(ended_at, submitted_at) DESC, rowid DESC"
                " LIMIT ?",
                (HARVESTED, OK, HARVESTED, REJECTED, PENDING, HARVEST_HISTORY),
            ).fetchall()
        return record_from_rows([(str(r[0]), str(r[1]), float(r[2])) for r in rows])

    def pending_jobs(self) -> list[PendingJob]:
        """Submitted jobs not yet harvested, failed or lost, oldest first."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT job_id, backend, submitted_at, qubits, shots FROM job WHERE state = ?"
                " ORDER BY submitted_at",
                (PENDING,),
            ).fetchall()
        return [
            PendingJob(
                job_id=str(r[0]),
                backend=str(r[1]),
                submitted_at=float(r[2]),
                qubits=tuple(int(q) for q in json.loads(r[3])),
                shots=int(r[4]),
            )
            for r in rows
        ]

    def spent_today(self) -> float:
        """QPU seconds charged to today (UTC): real usage where known, else the estimate."""
        day = utc_day(self._clock())
        with self._transaction() as db:
            row = db.execute(
                "SELECT COALESCE(SUM(COALESCE(qpu_seconds, qpu_estimate)), 0) FROM job"
                " WHERE day = ?",
                (day,),
            ).fetchone()
        return float(row[0])

    def harvest_decision(self) -> HarvestDecision:
        """Whether a new job should start now (see ``decide_harvest``)."""
        return decide_harvest(
            self.policy,
            usable_draws=self.usable_draws(),
            pending_jobs=len(self.pending_jobs()),
            spent_today=self.spent_today(),
        )

    # --- batches ------------------------------------------------------------------------

    def add_batch(
        self,
        *,
        kind: str,
        provenance: Provenance,
        bits: NDArray[np.uint8],
        health: HealthResult,
        qpu_seconds: float | None = None,
    ) -> None:
        """Store a harvested batch: ``live`` when it passed its health tests, else ``rejected``.

        Also marks its job harvested (charging ``qpu_seconds`` when given).
        Raises ``ValueError`` when ``kind`` is not a quantum kind or ``bits``
        does not match the provenance and health result, ``EntropyError``
        when the batch id is already stored or the database fails.
        """
        if kind not in (QUANTUM_HARDWARE, QUANTUM_SIMULATOR):
            raise ValueError(f"{kind!r} is not a quantum source kind")
        shape = (provenance.shots, len(provenance.qubits))
        if bits.shape != shape or (health.shots, health.qubits) != shape:
            raise ValueError("bits, provenance and health result describe different batches")
        now = self._clock()
        status = LIVE if health.passed else REJECTED
        packed = pack_bits(shot_major(bits))
        with self._transaction() as db:
            db.execute(
                "INSERT INTO batch (batch_id, kind, backend, job_id, qubits, shots,"
                " harvested_at, health, min_entropy, bit_count, next_offset, status, bits,"
                " sha512) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (
                    provenance.batch_id,
                    kind,
                    provenance.backend,
                    provenance.job_id,
                    json.dumps(list(provenance.qubits)),
                    provenance.shots,
                    provenance.harvested_at,
                    canonical_json(health.to_dict()).decode(),
                    health.min_entropy,
                    int(bits.size),
                    status,
                    packed,
                    hashlib.sha512(packed).digest(),
                ),
            )
            db.execute(
                "INSERT OR IGNORE INTO job (job_id, backend, submitted_at, day, qpu_estimate,"
                " qubits, shots, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    provenance.job_id,
                    provenance.backend,
                    now,
                    utc_day(now),
                    self.policy.job_qpu_seconds_estimate,
                    json.dumps(list(provenance.qubits)),
                    provenance.shots,
                    PENDING,
                ),
            )
            db.execute(
                "UPDATE job SET state = ?, qpu_seconds = COALESCE(?, qpu_seconds),"
                " detail = ?, ended_at = ? WHERE job_id = ?",
                (
                    HARVESTED,
                    qpu_seconds,
                    "" if health.passed else "rejected: " + ", ".join(health.failures),
                    now,
                    provenance.job_id,
                ),
            )

    def _expire(self, db: sqlite3.Connection, now: float) -> int:
        cursor = db.execute(
            "UPDATE batch SET status = ? WHERE status = ? AND harvested_at < ?",
            (EXPIRED, LIVE, now - self.policy.max_age_seconds),
        )
        _forget_unused(db)
        return int(cursor.rowcount)

    def discard_expired(self) -> int:
        """Discard live batches past the maximum age; returns how many."""
        with self._transaction() as db:
            return self._expire(db, self._clock())

    def usable_draws(self) -> int:
        """Draws the live, unexpired batches can still serve."""
        cutoff = self._clock() - self.policy.max_age_seconds
        with self._transaction() as db:
            rows = db.execute(
                "SELECT bit_count, next_offset, min_entropy FROM batch"
                " WHERE status = ? AND harvested_at >= ?",
                (LIVE, cutoff),
            ).fetchall()
        return sum((int(n) - int(off)) // bits_needed(float(h)) for n, off, h in rows)

    def oldest_usable_harvested_at(self) -> float | None:
        """Unix time of the oldest live, unexpired batch (drawn from next), or None."""
        cutoff = self._clock() - self.policy.max_age_seconds
        with self._transaction() as db:
            row = db.execute(
                "SELECT MIN(harvested_at) FROM batch WHERE status = ? AND harvested_at >= ?",
                (LIVE, cutoff),
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def take(self, chain_index: int, pulse_index: int) -> PooledBits:
        """Hand out never-used bits for pulse ``chain_index``/``pulse_index``, oldest batch first.

        The batch's offset advances in the same transaction that reads the
        bits; a batch too short for another draw is closed as ``exhausted``.
        The batch remembers the pulse, so it is released for publication only
        after that pulse. Raises ``EntropyError`` when no live batch has enough
        bits (the pool is empty) or the database fails.
        """
        now = self._clock()
        found: tuple[Any, ...] | None = None
        with self._transaction() as db:
            self._expire(db, now)
            while found is None:
                row = db.execute(
                    "SELECT batch_id, kind, backend, job_id, qubits, shots, harvested_at, health,"
                    " min_entropy, bit_count, next_offset, bits, sha512 FROM batch WHERE status = ?"
                    " ORDER BY harvested_at, batch_id LIMIT 1",
                    (LIVE,),
                ).fetchone()
                if row is None:
                    break  # commit the expiries and closures, then report the pool empty
                batch_id, bit_count, offset = str(row[0]), int(row[9]), int(row[10])
                if '"nonIid"' not in str(row[7]):
                    # Tested before the whole-batch SP 800-90B 6.3 estimate existed: its
                    # credit rests on per-qubit figures alone, so it is not drawn from.
                    db.execute(
                        "UPDATE batch SET status = ? WHERE batch_id = ?", (REJECTED, batch_id)
                    )
                    continue
                min_entropy = float(row[8])
                need = bits_needed(min_entropy)
                if offset + need > bit_count:
                    db.execute(
                        "UPDATE batch SET status = ? WHERE batch_id = ?", (EXHAUSTED, batch_id)
                    )
                    _forget_unused(db)
                    continue
                conditioned = condition_packed(bytes(row[11]), bit_count, offset, min_entropy)
                db.execute(
                    "UPDATE batch SET next_offset = ?, last_chain = ?, last_pulse = ?"
                    " WHERE batch_id = ? AND next_offset = ?",
                    (conditioned.end, chain_index, pulse_index, batch_id, offset),
                )
                if conditioned.end + need > bit_count:
                    db.execute(
                        "UPDATE batch SET status = ? WHERE batch_id = ?", (EXHAUSTED, batch_id)
                    )
                found = tuple(row)
        if found is None:
            raise EntropyError("entropy pool is empty: no live batch has enough bits")
        row = found
        batch_id = str(row[0])
        shots = int(row[5])
        provenance = Provenance(
            backend=str(row[2]),
            job_id=str(row[3]),
            batch_id=batch_id,
            qubits=tuple(int(q) for q in json.loads(row[4])),
            shots=shots,
            harvested_at=float(row[6]),
        )
        try:
            health = health_from_dict(json.loads(row[7]), shots=shots)
        except ValueError as exc:
            raise EntropyError(f"batch {batch_id} has a corrupt health record: {exc}") from exc
        return PooledBits(
            kind=str(row[1]),
            provenance=provenance,
            health=health,
            conditioned=conditioned,
            batch_sha512=bytes(row[12]),
            batch_bits=int(row[9]),
        )

    def released_batches(self, chain_index: int, pulse_index: int) -> list[RawBatch]:
        """Used-up batches with no secret left once pulse ``chain_index``/``pulse_index`` is out.

        Pulses are published in (chain, pulse) order, so a batch whose last
        draw was for an earlier or equal pulse has no secret left. Call
        ``batch_published`` for each once the store has confirmed it.
        """
        with self._transaction() as db:
            rows = db.execute(
                "SELECT batch_id, bits FROM batch WHERE status IN (?, ?) AND bits IS NOT NULL"
                " AND last_pulse IS NOT NULL AND (last_chain < ? OR"
                " (last_chain = ? AND last_pulse <= ?)) ORDER BY harvested_at, batch_id",
                (EXHAUSTED, EXPIRED, chain_index, chain_index, pulse_index),
            ).fetchall()
        return [RawBatch(batch_id=str(r[0]), data=bytes(r[1])) for r in rows]

    def batch_published(self, batch_id: str) -> None:
        """Overwrite a released batch's bits: the store holds them now."""
        with self._transaction() as db:
            db.execute(
                "UPDATE batch SET bits = NULL WHERE batch_id = ? AND status IN (?, ?)",
                (batch_id, EXHAUSTED, EXPIRED),
            )

    def summary(self) -> dict[str, Any]:
        """Counts for status pages: batches by state, usable draws and the age of the
        oldest usable batch (how close it is to ``max_age_seconds``), today's QPU seconds."""
        with self._transaction() as db:
            states = dict(db.execute("SELECT status, COUNT(*) FROM batch GROUP BY status"))
        oldest = self.oldest_usable_harvested_at()
        return {
            "batches": {str(k): int(v) for k, v in states.items()},
            "usableDraws": self.usable_draws(),
            "oldestUsableHarvestedAt": oldest,
            "oldestUsableAgeSeconds": None if oldest is None else self._clock() - oldest,
            "qpuSecondsToday": self.spent_today(),
            "qpuSecondsPerDay": self.policy.qpu_seconds_per_day,
        }
