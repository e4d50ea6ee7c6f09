"""Time lookups on a static beacon site: NIST's ``pulse/time`` queries from index objects.

A NIST beacon answers three time queries (times in Unix milliseconds):

- ``at_or_after`` (``pulse/time/{t}``): the first pulse whose timeStamp is at or after t;
- ``previous`` (``pulse/time/previous/{t}``): the last pulse strictly before t;
- ``next`` (``pulse/time/next/{t}``): the first pulse strictly after t;

and answers 404 when there is no such pulse. A static host cannot compute these, so
the beacon publishes small mutable JSON index objects, and ``resolve`` answers each
query with **at most two GETs of index objects**, whatever the gaps; the caller
then GETs the pulse itself (``layout.pulse_key``), three GETs in all at worst.

The index objects (keys relative to the site root)::

    beacon/2.0/index/hour/{YYYY-MM-DD}T{HH}.json    one per UTC hour from the hour of the
                                                    first pulse to the hour of the last
    beacon/2.0/index/bounds.json                    the first and the last pulse

An hour object exists for **every** hour in that range, including hours with no
pulse (written when a gap closes), and carries the pulses of its hour plus the
last pulse before the hour and the first pulse after it::

    {"version":1,"hourStart":1535648400000,"previous":[1535648340000,1,54565],
     "pulses":[[1535648400000,1,54566],[1535648460000,1,54567]],"next":null}

Each entry is ``[unixMs, chainIndex, pulseIndex]``; ``previous``/``next`` are null
when there is no such pulse (yet). ``bounds.json`` is
``{"version":1,"first":[...],"last":[...]}``.

Lookup: GET the hour object of t. If it exists it answers the query alone (one
GET). If not, t lies outside the hours of [first, last], and ``bounds.json``
answers it (two GETs). A missing hour object inside that range means an
incomplete index or one that changed during the lookup: ``FetchError``.

The beacon writes the objects of one pulse in an order that keeps this sound for
a reader at any moment (``beacon.publish.indexes``): pulses before any index entry
that names them, hour objects before ``bounds.json``.

This module is pure apart from the injected ``get``; it imports only the
standard library and ``beacon_verifier``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal, get_args

from beacon_verifier import layout
from beacon_verifier.errors import FetchError, PulseFormatError
from beacon_verifier.format import load_json

Kind = Literal["at_or_after", "previous", "next"]
KINDS: tuple[Kind, ...] = get_args(Kind)

INDEX_VERSION = 1
HOUR_MS = 3_600_000
INDEX_ROOT = f"{layout.ROOT}/index"
BOUNDS_KEY = f"{INDEX_ROOT}/bounds.json"
#: The most index GETs ``resolve`` ever makes for one query.
MAX_INDEX_GETS = 2
#: Index objects larger than this are refused (an hour of 1-second pulses is ~90 KB).
MAX_INDEX_BYTES = 4 * 1024 * 1024

_MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last hour with a key
_MAX_INDEX = 2**64 - 1


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class TimeEntry:
    """One pulse in the time index. Ordered by (time_ms, chain, pulse).

    Raises ``ValueError`` when a field is not an int in range.
    """

    time_ms: int
    chain: int
    pulse: int

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("time_ms", self.time_ms, 0, _MAX_TIME_MS),
            ("chain", self.chain, 1, _MAX_INDEX),
            ("pulse", self.pulse, 1, _MAX_INDEX),
        ):
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")

    def to_json(self) -> list[int]:
        return [self.time_ms, self.chain, self.pulse]


@dataclass(frozen=True, slots=True, kw_only=True)
class HourIndex:
    """The index object of one UTC hour.

    ``previous`` is the last pulse before the hour, ``next`` the first pulse after
    it (None: there is none yet). Raises ``ValueError`` when the pulses are not
    strictly increasing inside the hour, the neighbours are not outside it, or
    within one chain pulse indices do not increase with time.
    """

    hour_start: int
    previous: TimeEntry | None
    pulses: tuple[TimeEntry, ...]
    next: TimeEntry | None

    def __post_init__(self) -> None:
        if type(self.hour_start) is not int or self.hour_start % HOUR_MS != 0:
            raise ValueError(f"hour_start {self.hour_start!r} is not the start of an hour")
        if not 0 <= self.hour_start <= _MAX_TIME_MS:
            raise ValueError(f"hour_start {self.hour_start} is out of range")
        end = self.hour_start + HOUR_MS
        for before, after in pairwise(self.pulses):
            if not before < after:
                raise ValueError(f"pulses not strictly increasing at {after.to_json()}")
        for entry in self.pulses:
            if not self.hour_start <= entry.time_ms < end:
                raise ValueError(f"pulse {entry.to_json()} is outside the hour")
        if self.previous is not None and self.previous.time_ms >= self.hour_start:
            raise ValueError(f"previous {self.previous.to_json()} is not before the hour")
        if self.next is not None and self.next.time_ms < end:
            raise ValueError(f"next {self.next.to_json()} is not after the hour")
        known = [e for e in (self.previous, *self.pulses, self.next) if e is not None]
        for before, after in pairwise(known):
            if before.chain == after.chain and not (
                before.pulse < after.pulse and before.time_ms < after.time_ms
            ):
                raise ValueError(
                    f"pulse indices of chain {after.chain} do not increase with time "
                    f"at {after.to_json()}"
                )

    @property
    def key(self) -> str:
        return hour_index_key(self.hour_start)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """The first and the last indexed pulse. Raises ``ValueError`` if first > last."""

    first: TimeEntry
    last: TimeEntry

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"last {self.last.to_json()} before first {self.first.to_json()}")


# --- keys ---------------------------------------------------------------------


def hour_start(t_ms: int) -> int:
    """The start (Unix ms) of the UTC hour that contains ``t_ms``."""
    return t_ms - t_ms % HOUR_MS


def hour_index_key(t_ms: int) -> str:
    """The key of the index object of the UTC hour containing ``t_ms``.

    Raises ``ValueError`` when the hour is before 1970 or after year 9999 (no
    pulse can be there, so no such object exists).
    """
    if type(t_ms) is not int or not 0 <= t_ms <= _MAX_TIME_MS:
        raise ValueError(f"time {t_ms!r} ms has no hour index")
    moment = datetime.fromtimestamp(hour_start(t_ms) // 1000, tz=UTC)
    return f"{INDEX_ROOT}/hour/{moment:%Y-%m-%dT%H}.json"


# --- bytes --------------------------------------------------------------------


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def _entry_json(entry: TimeEntry | None) -> list[int] | None:
    return None if entry is None else entry.to_json()


def encode_hour_index(index: HourIndex) -> bytes:
    """The canonical bytes of an hour object (deterministic, one line, ASCII)."""
    return _dumps(
        {
            "version": INDEX_VERSION,
            "hourStart": index.hour_start,
            "previous": _entry_json(index.previous),
            "pulses": [entry.to_json() for entry in index.pulses],
            "next": _entry_json(index.next),
        }
    )


def encode_bounds(bounds: Bounds) -> bytes:
    """The canonical bytes of ``bounds.json``."""
    return _dumps(
        {"version": INDEX_VERSION, "first": bounds.first.to_json(), "last": bounds.last.to_json()}
    )


class _Malformed(Exception):
    """Internal: a reason, turned into ``FetchError`` naming the key."""


def _load(data: bytes) -> dict[str, Any]:
    try:
        obj = load_json(data, max_bytes=MAX_INDEX_BYTES)
    except PulseFormatError as exc:
        # load_json names the whole document "json", and a repeated key by its name.
        raise _Malformed(exc.reason if exc.field == "json" else str(exc)) from exc
    if not isinstance(obj, dict):
        raise _Malformed("not a JSON object")
    version = obj.get("version")
    if version != INDEX_VERSION or type(version) is not int:
        raise _Malformed(f"unsupported version {version!r} (this verifier reads {INDEX_VERSION})")
    return obj


def _field(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        raise _Malformed(f"field {name!r} is missing")
    return obj[name]


def _int(value: object, where: str) -> int:
    if type(value) is not int:
        raise _Malformed(f"{where} must be an integer, got {type(value).__name__}")
    return value


def _entry(value: object, where: str) -> TimeEntry:
    if not isinstance(value, list) or len(value) != 3:
        raise _Malformed(f"{where} must be [unixMs, chainIndex, pulseIndex]")
    time_ms, chain, pulse = (_int(v, where) for v in value)
    try:
        return TimeEntry(time_ms=time_ms, chain=chain, pulse=pulse)
    except ValueError as exc:
        raise _Malformed(f"{where}: {exc}") from exc


def _opt_entry(value: object, where: str) -> TimeEntry | None:
    return None if value is None else _entry(value, where)


def parse_hour_index(data: bytes, *, key: str, hour_ms: int | None = None) -> HourIndex:
    """Parse an hour object fetched from ``key``.

    ``hour_ms``, when given, is the hour the caller asked for; an object for
    another hour is refused. Raises ``FetchError`` naming ``key`` for anything
    malformed; never another exception.
    """
    try:
        obj = _load(data)
        pulses = _field(obj, "pulses")
        if not isinstance(pulses, list):
            raise _Malformed("pulses must be a list")
        index = HourIndex(
            hour_start=_int(_field(obj, "hourStart"), "hourStart"),
            previous=_opt_entry(_field(obj, "previous"), "previous"),
            pulses=tuple(_entry(p, f"pulses[{i}]") for i, p in enumerate(pulses)),
            next=_opt_entry(_field(obj, "next"), "next"),
        )
        if hour_ms is not None and index.hour_start != hour_ms:
            raise _Malformed(f"hourStart {index.hour_start} is not the hour asked for ({hour_ms})")
    except (_Malformed, ValueError) as exc:
        raise FetchError(f"malformed time index {key}: {exc}") from exc
    return index


def parse_bounds(data: bytes, *, key: str = BOUNDS_KEY) -> Bounds:
    """Parse ``bounds.json``. Raises ``FetchError`` naming ``key`` when malformed."""
    try:
        obj = _load(data)
        return Bounds(
            first=_entry(_field(obj, "first"), "first"),
            last=_entry(_field(obj, "last"), "last"),
        )
    except (_Malformed, ValueError) as exc:
        raise FetchError(f"malformed time index {key}: {exc}") from exc


# --- lookup -------------------------------------------------------------------


class _Budget:
    """Counts index GETs and refuses to exceed ``MAX_INDEX_GETS``."""

    __slots__ = ("_get", "count")

    def __init__(self, get: Callable[[str], bytes | None]) -> None:
        self._get = get
        self.count = 0

    def __call__(self, key: str) -> bytes | None:
        if self.count >= MAX_INDEX_GETS:
            raise FetchError(f"time lookup needs more than {MAX_INDEX_GETS} index objects")
        self.count += 1
        return self._get(key)


def _in_hour(kind: Kind, t_ms: int, index: HourIndex) -> TimeEntry | None:
    # Every pulse of the hour is listed, so outside them the answer is a neighbour.
    if kind == "previous":
        before = [e for e in index.pulses if e.time_ms < t_ms]
        return before[-1] if before else index.previous
    if kind == "at_or_after":
        found = next((e for e in index.pulses if e.time_ms >= t_ms), None)
    else:
        found = next((e for e in index.pulses if e.time_ms > t_ms), None)
    return found if found is not None else index.next


def answer_in_hour(kind: Kind, t_ms: int, index: HourIndex) -> TimeEntry | None:
    """``lookup``'s answer when ``index`` is the (parsed) hour object of ``t_ms``.

    For a server that keeps hour objects parsed (``beacon serve``) rather than
    parsing one per query.
    """
    return _in_hour(kind, t_ms, index)


def _outside(kind: Kind, t_ms: int, bounds: Bounds, missing: str | None) -> TimeEntry | None:
    hour = hour_start(t_ms)
    if hour < hour_start(bounds.first.time_ms):
        return None if kind == "previous" else bounds.first
    if hour > hour_start(bounds.last.time_ms):
        return bounds.last if kind == "previous" else None
    raise FetchError(
        f"time index incomplete: {missing} is missing although {BOUNDS_KEY} covers its hour "
        "(the index changed during the lookup; retry)"
    )


def lookup(kind: Kind, t_ms: int, get: Callable[[str], bytes | None]) -> TimeEntry | None:
    """Answer a NIST time query from the index objects, with at most two GETs.

    ``get(key)`` returns an object's bytes or None when there is none. Returns
    the index entry of the answer, or None where NIST answers 404. Raises
    ``ValueError`` for an unknown ``kind`` or a non-int ``t_ms``; ``FetchError``
    when an index object is malformed or the index is inconsistent (and whatever
    ``FetchError`` ``get`` raises).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if type(t_ms) is not int:
        raise ValueError(f"t_ms must be an int, got {type(t_ms).__name__}")
    fetch = _Budget(get)
    try:
        key: str | None = hour_index_key(t_ms)
    except ValueError:
        key = None  # before 1970 or after 9999: no hour object can exist
    if key is not None:
        data = fetch(key)
        if data is not None:
            return _in_hour(kind, t_ms, parse_hour_index(data, key=key, hour_ms=hour_start(t_ms)))
    data = fetch(BOUNDS_KEY)
    if data is None:
        return None  # nothing published yet
    return _outside(kind, t_ms, parse_bounds(data), key)


def resolve(kind: Kind, t_ms: int, get: Callable[[str], bytes | None]) -> tuple[int, int] | None:
    """``lookup`` returning ``(chainIndex, pulseIndex)`` of the answer, or None (404).

    The caller then fetches ``layout.pulse_key(chain, pulse)`` and should check
    that the pulse's timeStamp is the one the index promised (``lookup`` gives it).
    Raises as ``lookup``.
    """
    entry = lookup(kind, t_ms, get)
    return None if entry is None else (entry.chain, entry.pulse)
