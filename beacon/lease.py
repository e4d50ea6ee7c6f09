"""The publishing lease: exactly one of several instances publishes a chain.

Two (or more) ``beacon run`` instances share the signing key and the store but
not their state. The one that holds the lease object ``lease.json`` at the site
root is active: it ticks and publishes. The others are standbys: they watch the
object and take it over when it has not changed for a whole TTL.

The store arbitrates, with conditional writes (``Publisher.put_if``: S3
``If-None-Match`` / ``If-Match`` on the ETag, a directory lock locally): taking
a free lease creates the object only if absent, renewing or taking over
replaces it only if it is still the version last seen. Two instances can never
both succeed from the same version.

Time is measured with each process's monotonic clock, never the wall clock (a
stepped clock must not hand the lease over):

- the active counts its lease valid until ``ttl * VALID_FRACTION`` after the
  *start* of its last successful write;
- a standby takes over only after seeing the same version for ``ttl`` from the
  moment it first *read* it, which is after that write ended.

So an active that stopped renewing (dead, paused, cut off) has stopped
publishing before any standby may take over. A standby that cannot read the
store starts counting again, so a store outage does not hand the lease over.
The create-only pulse writes stay the last line of defence: even a paused
active that resumes after a takeover cannot publish a second pulse with an
index already taken.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from beacon.errors import ConditionFailedError, LeaseLostError, PublishError
from beacon.publish import Publisher

LEASE_KEY = "lease.json"
LEASE_VERSION = 1
#: The active stops trusting its lease this far into the TTL (clock-rate margin).
VALID_FRACTION = 0.8
#: TTL cap, so that a long period still fails over in well under two periods.
MAX_TTL_MS = 30_000
_MAX_LEASE_BYTES = 4096

Role = Literal["active", "standby"]


def lease_ttl_ms(period_ms: int) -> int:
    """The lease TTL for a beacon with period ``period_ms``."""
    return min(period_ms, MAX_TTL_MS)


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The content of ``lease.json``."""

    holder: str
    sequence: int
    ttl_ms: int

    def to_bytes(self) -> bytes:
        document = {
            "holder": self.holder,
            "sequence": self.sequence,
            "ttlMs": self.ttl_ms,
            "version": LEASE_VERSION,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None when ``data`` is not a lease this version writes."""
        if len(data) > _MAX_LEASE_BYTES:
            return None
        try:
            document = json.loads(data)
            holder, sequence, ttl = document["holder"], document["sequence"], document["ttlMs"]
        except (ValueError, TypeError, KeyError):
            return None
        if not (isinstance(holder, str) and type(sequence) is int and type(ttl) is int):
            return None
        return cls(holder=holder, sequence=sequence, ttl_ms=ttl)


class Lease:
    """One instance's view of the lease; thread-safe.

    ``try_acquire`` is the standby's poll; ``renew`` the active's heartbeat;
    ``ensure`` the check before every publication.
    """

    def __init__(
        self,
        store: Publisher,
        holder: str,
        ttl_ms: int,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_ms / 1000
        self._ttl_ms = ttl_ms
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.role: Role = "standby"
        #: Who holds the lease as far as this instance knows (None: nobody yet).
        self.current_holder: str | None = None
        #: The holder this instance took the lease from, on a takeover.
        self.taken_from: str | None = None
        self._version: str | None = None  # the version of our own last write
        self._sequence = 0
        self._valid_until = float("-inf")
        self._seen: tuple[str, float] | None = None  # (foreign version, first seen at)

    @property
    def poll_interval(self) -> float:
        return self.ttl_s / 4

    @property
    def renew_interval(self) -> float:
        return self.ttl_s / 3

    def valid(self) -> bool:
        """True while this instance may publish without renewing first."""
        return self.role == "active" and self._monotonic() < self._valid_until

    def try_acquire(self) -> bool:
        """One standby step: take the lease if it is free, ours, or expired. True when active.

        Raises ``PublishError`` when the store fails (the caller polls again).
        """
        with self._lock:
            try:
                found = self.store.get_versioned(LEASE_KEY)
            except PublishError:
                self._seen = None  # an unreachable store is not an expired lease
                raise
            if found is None:
                return self._write(None, taken_from=None)
            data, version = found
            record = LeaseRecord.from_bytes(data)
            owner = record.holder if record is not None else "(unreadable lease)"
            self.current_holder = owner
            if owner == self.holder:  # ours, from before a restart: resume at once
                if record is not None:
                    self._sequence = max(self._sequence, record.sequence)
                return self._write(version, taken_from=None)
            now = self._monotonic()
            if self._seen is None or self._seen[0] != version:
                self._seen = (version, now)
                return False
            if now - self._seen[1] < self.ttl_s:
                return False
            return self._write(version, taken_from=owner)

    def _write(self, version: str | None, *, taken_from: str | None) -> bool:
        started = self._monotonic()
        record = LeaseRecord(self.holder, self._sequence + 1, self._ttl_ms)
        try:
            self._version = self.store.put_if(LEASE_KEY, record.to_bytes(), version=version)
        except ConditionFailedError:
            self._seen = None  # someone else wrote it: watch the new version
            return False
        self._sequence = record.sequence
        self._valid_until = started + self.ttl_s * VALID_FRACTION
        self._seen = None
        self.role = "active"
        self.current_holder = self.holder
        self.taken_from = taken_from
        return True

    def renew(self) -> None:
        """Extend the lease. Raises ``LeaseLostError`` if another instance holds it.

        Raises ``PublishError`` when the store fails; the lease then stays valid
        only until its deadline.
        """
        with self._lock:
            if self.role != "active":
                raise LeaseLostError(
                    f"this instance does not hold the lease ({self.current_holder})"
                )
            started = self._monotonic()
            record = LeaseRecord(self.holder, self._sequence + 1, self._ttl_ms)
            try:
                self._version = self.store.put_if(
                    LEASE_KEY, record.to_bytes(), version=self._version
                )
            except ConditionFailedError:
                if not self._reclaim(record):
                    raise LeaseLostError(f"the lease is held by {self.current_holder}") from None
            self._sequence = record.sequence
            self._valid_until = started + self.ttl_s * VALID_FRACTION

    def _reclaim(self, attempted: LeaseRecord) -> bool:
        """After a failed renewal: True if the stored lease is our own attempted write.

        That happens when a write succeeded but its response was lost.
        """
        found = self.store.get_versioned(LEASE_KEY)
        record = None if found is None else LeaseRecord.from_bytes(found[0])
        if found is not None and record == attempted:
            self._version = found[1]
            return True
        self.role = "standby"
        self._valid_until = float("-inf")
        self.current_holder = record.holder if record is not None else None
        return False

    def ensure(self) -> None:
        """Before publishing: renew unless the lease is still valid.

        Raises ``LeaseLostError`` when another instance holds the lease,
        ``PublishError`` when it cannot be renewed now.
        """
        if not self.valid():
            self.renew()
