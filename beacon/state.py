"""Durable state in SQLite: chain head, skip-list anchors, the committed next value, outbox.

One transaction per tick stores the new pulse (in the outbox), the new head and
the commitment for the next pulse, before anything is published. The committed
entropy record stays secret here until its pulse is released. The database
file is created 0600; WAL journaling; ``synchronous=FULL`` so a committed tick
survives power loss.

``InstanceLock`` keeps a second beacon process off the same state.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beacon.entropy import EntropyDraw
from beacon.errors import StateError
from beacon.faults import failpoint
from beacon.pulse.builder import Anchor, ChainHead, PulseSlot
from beacon.sqlite import immediate, open_private

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain_index INTEGER NOT NULL, pulse_index INTEGER NOT NULL, time_ms INTEGER NOT NULL,
    output_value BLOB NOT NULL, certificate_id BLOB NOT NULL, precommitment BLOB NOT NULL,
    ended INTEGER NOT NULL, anchors TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commitment (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain_index INTEGER NOT NULL, pulse_index INTEGER NOT NULL,
    record BLOB NOT NULL, kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_index INTEGER NOT NULL, pulse_index INTEGER NOT NULL, time_ms INTEGER NOT NULL,
    pulse BLOB NOT NULL, record BLOB NOT NULL, kind TEXT NOT NULL, links TEXT NOT NULL,
    cosignature BLOB,
    UNIQUE (chain_index, pulse_index)
);
CREATE TABLE IF NOT EXISTS published (
    chain_index INTEGER NOT NULL, pulse_index INTEGER NOT NULL, time_ms INTEGER NOT NULL,
    pulse BLOB NOT NULL, record BLOB NOT NULL, kind TEXT NOT NULL, links TEXT NOT NULL,
    cosignature BLOB,
    PRIMARY KEY (chain_index, pulse_index)
);
CREATE INDEX IF NOT EXISTS published_time ON published (time_ms);
CREATE TABLE IF NOT EXISTS plan (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain_index INTEGER NOT NULL, pulse_index INTEGER NOT NULL, plan BLOB NOT NULL,
    next_record BLOB, next_kind TEXT
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A committed pulse and its entropy record.

    ``seq`` is its place in the outbox while the store has not confirmed it; 0
    once it is published (kept until its day is archived). ``links`` names the
    pulse index (same chain) that each of its hour/day/month/year links points to.
    """

    seq: int
    chain_index: int
    pulse_index: int
    time_ms: int
    pulse: bytes
    record: bytes
    kind: str
    links: dict[str, int]
    cosignature: bytes | None = None  # the pulse's ML-DSA-65 co-signature object


def _item(row: tuple[Any, ...]) -> OutboxItem:
    seq, chain, pulse_index, time_ms, pulse, record, kind, links, cosignature = row
    return OutboxItem(
        seq,
        chain,
        pulse_index,
        time_ms,
        bytes(pulse),
        bytes(record),
        kind,
        json.loads(links),
        None if cosignature is None else bytes(cosignature),
    )


@dataclass(frozen=True, slots=True)
class Commitment:
    """The entropy record already committed to for pulse (chain_index, pulse_index)."""

    chain_index: int
    pulse_index: int
    draw: EntropyDraw


@dataclass(frozen=True, slots=True)
class SavedPlan:
    """A pulse plan kept in the state (``beacon.plan``), and the value it commits to."""

    chain_index: int
    pulse_index: int
    data: bytes
    next_draw: EntropyDraw | None

    @property
    def slot(self) -> PulseSlot:
        return PulseSlot(self.chain_index, self.pulse_index)


def _anchors_to_json(anchors: dict[str, Anchor]) -> str:
    return json.dumps(
        {k: [a.pulse_index, a.time_ms, a.output_value.hex()] for k, a in sorted(anchors.items())}
    )


def _anchors_from_json(text: str) -> dict[str, Anchor]:
    return {
        k: Anchor(pulse_index=v[0], time_ms=v[1], output_value=bytes.fromhex(v[2]))
        for k, v in json.loads(text).items()
    }


class State:
    """The beacon's durable state. Not thread-safe: one connection per thread."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:
                if not path.exists():
                    raise StateError(f"no beacon state at {path}")
                uri = f"{path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, isolation_level=None, timeout=10, check_same_thread=False
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._db = open_private(path, StateError, what="state")
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state {path}: {exc}") from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise StateError(f"{path}: unknown state schema {row[0] if row else None}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with immediate(self._db, StateError, what=f"state {self.path}"):
            yield self._db

    # --- reads ---------------------------------------------------------------

    def head(self) -> ChainHead | None:
        row = self._db.execute(
            "SELECT chain_index, pulse_index, time_ms, output_value, certificate_id, "
            "precommitment, ended, anchors FROM head"
        ).fetchone()
        if row is None:
            return None
        return ChainHead(
            chain_index=row[0],
            pulse_index=row[1],
            time_ms=row[2],
            output_value=bytes(row[3]),
            certificate_id=bytes(row[4]),
            precommitment_value=bytes(row[5]),
            ended=bool(row[6]),
            anchors=_anchors_from_json(row[7]),
        )

    def commitment(self) -> Commitment | None:
        row = self._db.execute(
            "SELECT chain_index, pulse_index, record, kind FROM commitment"
        ).fetchone()
        if row is None:
            return None
        return Commitment(row[0], row[1], EntropyDraw(record=bytes(row[2]), kind=row[3]))

    def plan(self) -> SavedPlan | None:
        """The plan of the next pulse, saved before it went to the store (``beacon.plan``)."""
        row = self._db.execute(
            "SELECT chain_index, pulse_index, plan, next_record, next_kind FROM plan"
        ).fetchone()
        if row is None:
            return None
        next_draw = None if row[3] is None else EntropyDraw(record=bytes(row[3]), kind=row[4])
        return SavedPlan(row[0], row[1], bytes(row[2]), next_draw)

    def outbox(self, limit: int = 100) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT seq, chain_index, pulse_index, time_ms, pulse, record, kind, links, "
            "cosignature "
            "FROM outbox ORDER BY chain_index, pulse_index LIMIT ?",
            (limit,),
        )
        return [_item(r) for r in rows]

    def published_before(self, time_ms: int) -> list[OutboxItem]:
        """Published pulses not yet archived with a timeStamp before ``time_ms``, in time order."""
        rows = self._db.execute(
            "SELECT 0, chain_index, pulse_index, time_ms, pulse, record, kind, links, "
            "cosignature "
            "FROM published WHERE time_ms < ? "
            "ORDER BY time_ms, chain_index, pulse_index",
            (time_ms,),
        )
        return [_item(r) for r in rows]

    def recent_published(self, limit: int) -> list[OutboxItem]:
        """The ``limit`` latest published pulses not yet archived, newest first."""
        rows = self._db.execute(
            "SELECT 0, chain_index, pulse_index, time_ms, pulse, record, kind, links, "
            "cosignature "
            "FROM published "
            "ORDER BY time_ms DESC, chain_index DESC, pulse_index DESC LIMIT ?",
            (limit,),
        )
        return [_item(r) for r in rows]

    def pulse_at(self, chain_index: int, pulse_index: int) -> bytes | None:
        """The bytes of pulse ``chain_index/pulse_index`` if the state still holds it."""
        for table in ("outbox", "published"):
            row = self._db.execute(
                f"SELECT pulse FROM {table} WHERE chain_index=? AND pulse_index=?",  # noqa: S608
                (chain_index, pulse_index),
            ).fetchone()
            if row is not None:
                return bytes(row[0])
        return None

    def held_after(self, chain_index: int, pulse_index: int) -> list[tuple[int, int]]:
        """(chain, index) of every pulse held after ``chain_index/pulse_index``, in order."""
        rows = self._db.execute(
            "SELECT chain_index, pulse_index FROM outbox WHERE (chain_index, pulse_index) > (?, ?) "
            "UNION SELECT chain_index, pulse_index FROM published "
            "WHERE (chain_index, pulse_index) > (?, ?) ORDER BY 1, 2",
            (chain_index, pulse_index, chain_index, pulse_index),
        )
        return [(int(c), int(p)) for c, p in rows]

    def published_head(self) -> tuple[int, int] | None:
        """The highest (chain, index) this state ever saw confirmed by a store, or None."""
        found = []
        text = self.meta("published_head")
        if text is not None:
            chain, _, index = text.partition("/")
            found.append((int(chain), int(index)))
        row = self._db.execute(
            "SELECT chain_index, pulse_index FROM published "
            "ORDER BY chain_index DESC, pulse_index DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            found.append((int(row[0]), int(row[1])))
        return max(found) if found else None

    def outbox_length(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def counters(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._db.execute("SELECT name, value FROM counters")}

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def request(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM requests WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    # --- writes --------------------------------------------------------------

    def commit_pulse(
        self,
        *,
        head: ChainHead,
        pulse: bytes,
        draw: EntropyDraw,
        next_draw: EntropyDraw,
        cosignature: bytes | None = None,
    ) -> None:
        """Store a new pulse (and its co-signature), its head and the next commitment at once."""
        with self._tx() as db:
            previous = self.head()
            links = (
                {unit: anchor.pulse_index for unit, anchor in previous.anchors.items()}
                if previous is not None
                and not previous.ended
                and previous.chain_index == head.chain_index
                else {}
            )
            db.execute(
                "INSERT INTO outbox (chain_index, pulse_index, time_ms, pulse, record, kind, "
                "links, cosignature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    head.chain_index,
                    head.pulse_index,
                    head.time_ms,
                    pulse,
                    draw.record,
                    draw.kind,
                    json.dumps(links, sort_keys=True),
                    cosignature,
                ),
            )
            failpoint("in-transaction")
            _write_head(db, head)
            db.execute("DELETE FROM plan")
            if head.ended:
                db.execute("DELETE FROM commitment")
                db.execute("DELETE FROM requests WHERE name='final'")
            else:
                _write_commitment(db, head.chain_index, head.pulse_index + 1, next_draw)
            _bump(db, "pulses")
            _bump(db, f"source:{draw.kind}")

    def save_plan(
        self, chain_index: int, pulse_index: int, plan: bytes, next_draw: EntropyDraw | None
    ) -> None:
        """Keep the plan of the next pulse (and the value it commits to) before it is stored.

        ``next_draw`` is None for a plan inherited from another instance, whose
        committed next value this state never had.
        """
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO plan VALUES (1, ?, ?, ?, ?, ?)",
                (
                    chain_index,
                    pulse_index,
                    plan,
                    None if next_draw is None else next_draw.record,
                    None if next_draw is None else next_draw.kind,
                ),
            )

    def commit_to(self, chain_index: int, pulse_index: int, draw: EntropyDraw) -> None:
        """Make ``draw`` the value committed to for pulse (chain, index)."""
        with self._tx() as db:
            _write_commitment(db, chain_index, pulse_index, draw)

    def drop_plan(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM plan")

    def mark_published(self, seq: int, time_ms: int) -> None:
        """Move a confirmed pulse from the outbox to the pulses kept until their day is archived."""
        with self._tx() as db:
            row = db.execute(
                "SELECT chain_index, pulse_index FROM outbox WHERE seq=?", (seq,)
            ).fetchone()
            highest = self.published_head() or (0, 0)
            db.execute(
                "INSERT OR IGNORE INTO published SELECT chain_index, pulse_index, time_ms, "
                "pulse, record, kind, links, cosignature FROM outbox WHERE seq=?",
                (seq,),
            )
            if row is not None and (int(row[0]), int(row[1])) > highest:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('published_head', ?)",
                    (f"{row[0]}/{row[1]}",),
                )
            db.execute("DELETE FROM outbox WHERE seq=?", (seq,))
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_published_ms', ?)", (str(time_ms),)
            )

    def requeue_published(self, chain_index: int, pulse_index: int) -> int:
        """Put the published pulses after ``chain_index/pulse_index`` back in the outbox.

        For a store that is behind this state (a new or emptied out dir): they
        are published again, in order, before anything new. Returns how many.
        """
        with self._tx() as db:
            moved = db.execute(
                "INSERT INTO outbox (chain_index, pulse_index, time_ms, pulse, record, kind, "
                "links, cosignature) SELECT chain_index, pulse_index, time_ms, pulse, record, "
                "kind, links, cosignature FROM published WHERE (chain_index, pulse_index) > (?, ?)",
                (chain_index, pulse_index),
            ).rowcount
            db.execute(
                "DELETE FROM published WHERE (chain_index, pulse_index) > (?, ?)",
                (chain_index, pulse_index),
            )
        return int(moved)

    def enqueue(self, items: Sequence[OutboxItem]) -> None:
        """Queue pulses read back from the store, so their derived objects are completed."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO outbox (chain_index, pulse_index, time_ms, pulse, record, "
                "kind, links, cosignature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.chain_index,
                        i.pulse_index,
                        i.time_ms,
                        i.pulse,
                        i.record,
                        i.kind,
                        json.dumps(i.links, sort_keys=True),
                        i.cosignature,
                    )
                    for i in items
                ],
            )

    def adopt_head(self, head: ChainHead) -> int:
        """Continue from ``head`` (read from the store after a failover takeover).

        Drops the outbox (pulses that were never published, or that another
        instance already superseded), the plan (``beacon.plan``: reconciliation
        looks for the store's) and the commitment (its value was never
        published, so the next pulse cannot open it: statusCode bit 1). Returns
        how many outbox pulses were dropped.
        """
        with self._tx() as db:
            dropped = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            db.execute("DELETE FROM outbox")
            db.execute("DELETE FROM commitment")
            db.execute("DELETE FROM plan")
            _write_head(db, head)
            _bump(db, "takeovers")
        return dropped

    def instance_id(self) -> str:
        """This state's instance id (16 hex digits, made on first use): the lease holder."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='instance_id'").fetchone()
            if row is not None:
                return str(row[0])
            value = secrets.token_hex(8)
            db.execute("INSERT INTO meta VALUES ('instance_id', ?)", (value,))
            return value

    def forget_published_before(self, time_ms: int) -> None:
        """Drop archived pulses (those with a timeStamp before ``time_ms``)."""
        with self._tx() as db:
            db.execute("DELETE FROM published WHERE time_ms < ?", (time_ms,))

    def bump(self, name: str, by: int = 1) -> None:
        with self._tx() as db:
            _bump(db, name, by)

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def set_request(self, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO requests VALUES (?, ?)", (name, value))


def _write_head(db: sqlite3.Connection, head: ChainHead) -> None:
    db.execute(
        "INSERT OR REPLACE INTO head VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            head.chain_index,
            head.pulse_index,
            head.time_ms,
            head.output_value,
            head.certificate_id,
            head.precommitment_value,
            int(head.ended),
            _anchors_to_json(head.anchors),
        ),
    )


def _write_commitment(
    db: sqlite3.Connection, chain_index: int, pulse_index: int, draw: EntropyDraw
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO commitment VALUES (1, ?, ?, ?, ?)",
        (chain_index, pulse_index, draw.record, draw.kind),
    )


def _bump(db: sqlite3.Connection, name: str, by: int = 1) -> None:
    db.execute(
        "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
        (name, by, by),
    )


class InstanceLock:
    """An exclusive, non-blocking lock on the data directory, holding our pid.

    The kernel drops it when the process dies, even by SIGKILL.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "beacon.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"another beacon (pid {read_pid(self.path) or '?'}) is running on "
                f"{self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def read_pid(lock_path: Path) -> int | None:
    """The pid of the beacon holding ``lock_path``, or None if no process holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # we could lock it: nobody holds it
    finally:
        os.close(fd)
