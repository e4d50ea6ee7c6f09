"""Writing the time index: which mutable index objects to (re)write for a new pulse.

The format, keys and lookup rules are in ``beacon_verifier.timeindex`` (written
once, on the verifier side). This module plans the writes on the beacon side:

- ``plan_index_update(new, get)``: given a just-published pulse and a ``get`` that
  reads the current index objects, the ``(key, bytes)`` mutable writes to make,
  **in order**. Idempotent: after a crash part-way, planning again from what the
  store then holds yields the writes still needed (and re-planning a pulse that
  is already fully indexed yields none).
- ``build_indexes(entries)``: every index object for a whole set of pulses, from
  scratch (rebuilds, tests).
- ``update_indexes(publisher, new, max_age=...)``: plan, then write through the
  ``Publisher`` port.

Order, so that a reader never sees a pointer to something missing and never an
inconsistent index:

1. the pulse itself is already published (the caller's duty) before its entry
   appears in any index object;
2. the hour object of the new pulse, then one object per empty hour of the gap
   (if any) since the previous pulse, then the previous pulse's hour object with
   its ``next`` now set;
3. ``bounds.json`` last: a reader treats a missing hour object inside the
   bounds as an inconsistency, so the bounds only grow once every hour object
   up to the new pulse exists.

A gap of N empty hours costs N small writes once, when the gap closes; in exchange
every lookup needs one index GET inside the published range and two outside it.

Deliberately not here: any I/O besides the injected ``get`` and the port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from beacon_verifier.errors import FetchError
from beacon_verifier.timeindex import (
    BOUNDS_KEY,
    HOUR_MS,
    Bounds,
    HourIndex,
    TimeEntry,
    encode_bounds,
    encode_hour_index,
    hour_index_key,
    hour_start,
    parse_bounds,
    parse_hour_index,
)

from beacon.errors import ConditionFailedError, PublishError, TransientPublishError
from beacon.faults import failpoint
from beacon.publish import JSON, Publisher
from beacon.publish.conditional import ATTEMPTS, VersionedReads

__all__ = [
    "INDEX_MAX_AGE",
    "TimeEntry",
    "build_indexes",
    "plan_index_update",
    "update_indexes",
]

#: Suggested Cache-Control max-age (seconds) of index objects: they change every pulse.
INDEX_MAX_AGE = 30


def _read_hour(get: Callable[[str], bytes | None], hour: int) -> HourIndex | None:
    key = hour_index_key(hour)
    data = get(key)
    if data is None:
        return None
    try:
        return parse_hour_index(data, key=key, hour_ms=hour)
    except FetchError as exc:
        raise PublishError(f"cannot update the time index: {exc}") from exc


def _read_bounds(get: Callable[[str], bytes | None]) -> Bounds | None:
    data = get(BOUNDS_KEY)
    if data is None:
        return None
    try:
        return parse_bounds(data)
    except FetchError as exc:
        raise PublishError(f"cannot update the time index: {exc}") from exc


def _bridges(last: TimeEntry, new: TimeEntry) -> list[HourIndex]:
    """Empty hour objects for the hours strictly between ``last``'s and ``new``'s."""
    return [
        HourIndex(hour_start=hour, previous=last, pulses=(), next=new)
        for hour in range(hour_start(last.time_ms) + HOUR_MS, hour_start(new.time_ms), HOUR_MS)
    ]


def plan_index_update(
    new: TimeEntry, get: Callable[[str], bytes | None]
) -> list[tuple[str, bytes]]:
    """The mutable writes that add ``new`` to the time index, in the order to make them.

    ``get(key)`` returns the current bytes of an index object or None; it is
    called for ``bounds.json``, the new pulse's hour and the previous pulse's
    hour. Call this only after the pulse itself is published, and for pulses in
    publication order.

    Returns ``[]`` when ``new`` is already fully indexed. Raises ``PublishError``
    when an index object is malformed, or when ``new`` is not after the last
    indexed pulse and not in the index (out of order), or the stored index
    contradicts itself; ``PublishError`` from ``get`` passes through.
    """
    bounds = _read_bounds(get)
    hour = hour_start(new.time_ms)
    current = _read_hour(get, hour)

    if bounds is not None and new <= bounds.last:
        if current is not None and new in current.pulses:
            return []  # already indexed: a retry after the last write succeeded
        raise PublishError(
            f"cannot index pulse {new.chain}/{new.pulse} at {new.time_ms}: not after the last "
            f"indexed pulse {bounds.last.chain}/{bounds.last.pulse} at {bounds.last.time_ms}"
        )
    last = None if bounds is None else bounds.last

    writes: list[tuple[str, bytes]] = []
    try:
        if current is None:
            updated = HourIndex(hour_start=hour, previous=last, pulses=(new,), next=None)
        elif new in current.pulses:
            updated = current  # written before a crash; nothing to change
        elif current.next is None:
            updated = replace(current, pulses=(*current.pulses, new))
        else:
            raise ValueError(f"its hour object already points past it, to {current.next}")
        if updated is not current:
            writes.append((updated.key, encode_hour_index(updated)))

        if last is not None and hour_start(last.time_ms) != hour:
            writes.extend((b.key, encode_hour_index(b)) for b in _bridges(last, new))
            before = _read_hour(get, hour_start(last.time_ms))
            if before is None:
                raise ValueError(f"the hour object of the last pulse ({last}) is missing")
            if before.next != new:
                closed = replace(before, next=new)
                writes.append((closed.key, encode_hour_index(closed)))

        first = new if bounds is None else bounds.first
        writes.append((BOUNDS_KEY, encode_bounds(Bounds(first=first, last=new))))
    except ValueError as exc:
        raise PublishError(
            f"cannot index pulse {new.chain}/{new.pulse} at {new.time_ms}: "
            f"the stored time index is inconsistent: {exc}"
        ) from exc
    return writes


def build_indexes(entries: Iterable[TimeEntry]) -> dict[str, bytes]:
    """Every index object for ``entries`` (any order, duplicates ignored), from scratch.

    Equal to applying ``plan_index_update`` pulse by pulse in time order to an
    empty store. Returns ``{}`` for no entries.
    """
    ordered = sorted(set(entries))
    if not ordered:
        return {}
    by_hour: dict[int, list[TimeEntry]] = {}
    for entry in ordered:
        by_hour.setdefault(hour_start(entry.time_ms), []).append(entry)
    hours = sorted(by_hour)
    out: dict[str, bytes] = {}
    for i, hour in enumerate(hours):
        pulses = by_hour[hour]
        previous = by_hour[hours[i - 1]][-1] if i > 0 else None
        following = by_hour[hours[i + 1]][0] if i + 1 < len(hours) else None
        index = HourIndex(hour_start=hour, previous=previous, pulses=tuple(pulses), next=following)
        out[index.key] = encode_hour_index(index)
        if following is not None:
            for bridge in _bridges(pulses[-1], following):
                out[bridge.key] = encode_hour_index(bridge)
    out[BOUNDS_KEY] = encode_bounds(Bounds(first=ordered[0], last=ordered[-1]))
    return out


def update_indexes(
    publisher: Publisher,
    new: TimeEntry,
    *,
    max_age: int = INDEX_MAX_AGE,
    before_write: Callable[[], None] | None = None,
) -> int:
    """Add ``new`` to the time index on ``publisher``; returns the number of writes made.

    Every write is conditional on the version its plan read
    (``beacon.publish.conditional``): when another writer changed an object
    meanwhile, the update is planned again from what the store then holds.
    ``before_write`` runs before each write (the lease check).

    Raises ``PublishError`` (from planning or from the store). Safe to call again
    after a failure: it resumes where the store stands.
    """
    for _ in range(ATTEMPTS):
        reads = VersionedReads(publisher)
        writes = plan_index_update(new, reads.get)
        failpoint("after-index-plan")
        try:
            for key, data in writes:
                if before_write is not None:
                    before_write()
                reads.put(key, data, content_type=JSON, max_age=max_age)
        except ConditionFailedError:
            continue
        return len(writes)
    raise TransientPublishError(f"the time index kept changing while indexing {new}")
