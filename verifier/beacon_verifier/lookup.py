"""Fetch a pulse by time from a site, with NIST's semantics.

``pulse_by_time(source, kind, t_ms)`` answers the three NIST time queries
(``at_or_after``: ``pulse/time/{t}``; ``previous``: ``pulse/time/previous/{t}``;
``next``: ``pulse/time/next/{t}``):

- on a site of this beacon, from its time index (``timeindex``) with at most two
  index GETs, then the one pulse the index names, checked to be the pulse the
  index promised;
- on a site without a time index (``index/bounds.json`` absent), such as NIST's
  own REST API, by asking NIST's dynamic path itself (one more GET), and checking
  that the answer satisfies the query.

It does not verify the pulse's signature: callers do that with
``checks.verify_pulse``.
"""

from __future__ import annotations

from collections.abc import Callable

from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import Source
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, format_timestamp, parse_pulse
from beacon_verifier.timeindex import BOUNDS_KEY, Kind, lookup

__all__ = ["nist_time_key", "pulse_by_time"]

_NIST_PATHS: dict[str, str] = {
    "at_or_after": f"{layout.ROOT}/pulse/time/{{t}}",
    "previous": f"{layout.ROOT}/pulse/time/previous/{{t}}",
    "next": f"{layout.ROOT}/pulse/time/next/{{t}}",
}
_RELATIONS: dict[str, tuple[str, Callable[[int, int], bool]]] = {
    "at_or_after": ("at or after", lambda pulse_ms, t: pulse_ms >= t),
    "previous": ("before", lambda pulse_ms, t: pulse_ms < t),
    "next": ("after", lambda pulse_ms, t: pulse_ms > t),
}


def nist_time_key(kind: Kind, t_ms: int) -> str:
    """NIST's REST path answering ``kind`` at ``t_ms`` (computed by NIST's server)."""
    return _NIST_PATHS[kind].format(t=t_ms)


class _Watch:
    """A ``get`` that remembers whether ``bounds.json`` was asked for and absent."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.no_index = False

    def __call__(self, key: str) -> bytes | None:
        data = self.source.get(key)
        if key == BOUNDS_KEY and data is None:
            self.no_index = True
        return data


def pulse_by_time(source: Source, kind: Kind, t_ms: int) -> Pulse | None:
    """The pulse NIST would answer for ``kind`` at ``t_ms``, or None where NIST answers 404.

    Raises ``FetchError`` when the index or the pulse cannot be fetched, or when
    the pulse found contradicts the query or the index that named it;
    ``PulseFormatError`` when the pulse is malformed.
    """
    watch = _Watch(source)
    entry = lookup(kind, t_ms, watch)
    if entry is None:
        return _from_nist_path(source, kind, t_ms) if watch.no_index else None
    key = layout.pulse_key(entry.chain, entry.pulse)
    data = source.get(key, max_bytes=MAX_PULSE_BYTES)
    if data is None:
        raise FetchError(f"{source.describe()}: the time index names {key}, which is missing")
    pulse = parse_pulse(data)
    found = (pulse.chain_index, pulse.pulse_index, pulse.time_ms)
    if found != (entry.chain, entry.pulse, entry.time_ms):
        raise FetchError(
            f"{source.describe()}: {key} is pulse {found[0]}/{found[1]} at {pulse.time_stamp}, "
            f"not the pulse {entry.chain}/{entry.pulse} at {entry.time_ms} ms the index names"
        )
    return pulse


def _from_nist_path(source: Source, kind: Kind, t_ms: int) -> Pulse | None:
    """Ask a NIST REST API; its answer must satisfy the query."""
    key = nist_time_key(kind, t_ms)
    data = source.get(key, max_bytes=MAX_PULSE_BYTES)
    if data is None:
        return None
    pulse = parse_pulse(data)
    relation, holds = _RELATIONS[kind]
    if not holds(pulse.time_ms, t_ms):
        raise FetchError(
            f"{source.describe()}: {key} answered pulse {pulse.chain_index}/{pulse.pulse_index} "
            f"at {pulse.time_stamp}, which is not {relation} {format_timestamp(t_ms)}"
        )
    return pulse
