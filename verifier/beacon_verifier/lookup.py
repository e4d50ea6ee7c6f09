"""Fetch a pulse by time from a site, with NIST's semantics.

``pulse_by_time(source, kind, t_ms)`` answers the three NIST time queries
(``at_or_after``: ``pulse/time/{t}``; ``previous``: ``pulse/time/previous/{t}``;
``next``: ``pulse/time/next/{t}``) from the site's time index with at most two
index GETs, then fetches the one pulse the index names and checks that it is
the pulse the index promised. It does not verify the pulse's signature: callers
do that with ``checks.verify_pulse``.
"""

from __future__ import annotations

from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import Source
from beacon_verifier.format import Pulse, parse_pulse
from beacon_verifier.timeindex import Kind, lookup

__all__ = ["pulse_by_time"]


def pulse_by_time(source: Source, kind: Kind, t_ms: int) -> Pulse | None:
    """The pulse NIST would answer for ``kind`` at ``t_ms``, or None where NIST answers 404.

    Raises ``FetchError`` when the index or the pulse cannot be fetched, or when
    the pulse found is not the one the index names (a contradictory site);
    ``PulseFormatError`` when the pulse is malformed.
    """
    entry = lookup(kind, t_ms, source.get)
    if entry is None:
        return None
    key = layout.pulse_key(entry.chain, entry.pulse)
    data = source.get(key)
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
