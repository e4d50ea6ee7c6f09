"""Fetch a pulse by time, with NIST's semantics, and prove the answer.

``find_by_time(source, kind, t_ms)`` answers the three NIST time queries
(``at_or_after``: ``pulse/time/{t}``; ``previous``: ``pulse/time/previous/{t}``;
``next``: ``pulse/time/next/{t}``):

- on a site of this beacon, from its time index (``timeindex``) with at most two
  index GETs, then the pulse the index names;
- on a site without a time index (``index/bounds.json`` absent), such as NIST's
  own REST API or a static NIST mirror: ``at_or_after`` and ``next`` round t up
  to the next period boundary (the period of ``pulse/last``) and read
  ``pulse/time/{boundary}``, walking forward over gaps, one period per GET, at
  most ``MAX_WALK`` GETs; ``previous`` asks ``pulse/time/previous/{t}`` and,
  where that path does not exist (a static mirror), takes the pulse before the
  ``at_or_after`` answer (or the head).

**The answer is proved, not trusted.** The pulse that answers ``at_or_after`` or
``next`` must be chain start (pulse 1) or have a predecessor (by index, one GET)
that it links to by ``previous``, whose outputValue holds, and that does not
itself answer the query. The answer to ``previous`` must have a successor that
links to it and is not before t, or be the head of its chain. Where the index
named the wrong pulse, the lookup walks (by index, bounded by ``MAX_WALK``) to
the right one and says the index was wrong (``TimeAnswer.index_error``). Where
the proving pulse is not on the site, the answer stands unproved and says so
(``TimeAnswer.unproved``). GET costs are in ``docs/verifying-core.md``.

It does not verify the answer's signature: callers give it to ``core.check_pulse``
with ``TimeAnswer.predecessor`` as the predecessor evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from beacon_verifier import layout
from beacon_verifier.checks import check_output_value
from beacon_verifier.core import NOT_FETCHED, NotFetched
from beacon_verifier.errors import CheckError, FetchError
from beacon_verifier.fetch import Source
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, format_timestamp, parse_pulse
from beacon_verifier.timeindex import BOUNDS_KEY, Kind, lookup

__all__ = ["MAX_WALK", "TimeAnswer", "find_by_time", "nist_time_key", "pulse_by_time"]

#: The most pulses (or period boundaries) a lookup walks over to correct or find an answer.
MAX_WALK = 120

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


@dataclass(frozen=True, slots=True)
class TimeAnswer:
    """A proved answer to a time query.

    ``pulse``: the answer (None: there is none, as NIST answers 404).
    ``predecessor``: the answer's predecessor where the proof fetched it (evidence
    for the core), else ``NOT_FETCHED``. ``index_error``: what the site's index
    (or time path) said wrongly, when the lookup had to correct it. ``unproved``:
    why the answer could not be proved, when it could not.
    """

    pulse: Pulse | None
    predecessor: Pulse | NotFetched | None = NOT_FETCHED
    index_error: str | None = None
    unproved: str | None = None


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
    """The proved answer's pulse (``find_by_time``), corrected where the index was wrong."""
    return find_by_time(source, kind, t_ms).pulse


def find_by_time(source: Source, kind: Kind, t_ms: int) -> TimeAnswer:
    """The pulse NIST would answer for ``kind`` at ``t_ms``, proved (module docstring).

    Raises ``FetchError`` when the index or a pulse cannot be fetched, when the
    pulse the index names is missing, or when no answer is found within
    ``MAX_WALK`` steps; ``PulseFormatError`` when the answer is malformed.
    """
    watch = _Watch(source)
    entry = lookup(kind, t_ms, watch)
    if entry is None and watch.no_index:
        pulse, said = _without_index(source, kind, t_ms)
    elif entry is None:
        return TimeAnswer(None)  # the index says nothing is there (bounds.json)
    else:
        key = layout.pulse_key(entry.chain, entry.pulse)
        pulse = _get(source, entry.chain, entry.pulse)
        if pulse is None:
            raise FetchError(f"{source.describe()}: the time index names {key}, which is missing")
        found = (pulse.chain_index, pulse.pulse_index, pulse.time_ms)
        if found != (entry.chain, entry.pulse, entry.time_ms):
            raise FetchError(
                f"{source.describe()}: {key} is pulse {found[0]}/{found[1]} at "
                f"{pulse.time_stamp}, not the pulse {entry.chain}/{entry.pulse} at "
                f"{entry.time_ms} ms the index names"
            )
        said = "the time index"
    if pulse is None:
        return TimeAnswer(None)
    return _prove(source, kind, t_ms, pulse, said)


def _get(source: Source, chain: int, index: int) -> Pulse | None:
    data = source.get(layout.pulse_key(chain, index), max_bytes=MAX_PULSE_BYTES)
    return None if data is None else parse_pulse(data)


def _at(source: Source, key: str) -> Pulse | None:
    data = source.get(key, max_bytes=MAX_PULSE_BYTES)
    return None if data is None else parse_pulse(data)


def _without_index(source: Source, kind: Kind, t_ms: int) -> tuple[Pulse | None, str]:
    """The candidate answer on a site without a time index (NIST's REST, a mirror)."""
    where = source.describe()
    if kind == "previous":
        key = nist_time_key(kind, t_ms)
        pulse = _at(source, key)
        if pulse is not None:
            return pulse, key
    head = _at(source, layout.LAST_KEY)
    if head is None:
        return None, "pulse/last"
    if kind == "previous":
        after, said = _boundary_walk(source, head, t_ms, where)
        if after is None:
            return (head if head.time_ms < t_ms else None), "pulse/last"
        if after.pulse_index == 1:
            return None, said
        return _get(source, after.chain_index, after.pulse_index - 1), said
    return _boundary_walk(source, head, t_ms + (kind == "next"), where)


def _boundary_walk(source: Source, head: Pulse, t_ms: int, where: str) -> tuple[Pulse | None, str]:
    """The first pulse at or after ``t_ms``: ``pulse/time/{b}`` for the period boundaries
    b from t on (one GET each, at most ``MAX_WALK``), up to the head."""
    if head.time_ms < t_ms:
        return None, layout.LAST_KEY
    period = max(head.period, 1)
    boundary = -(-t_ms // period) * period
    for _ in range(MAX_WALK):
        if boundary > head.time_ms:
            return head, layout.LAST_KEY
        key = layout.time_key(boundary)
        pulse = _at(source, key)
        if pulse is not None:
            if pulse.time_ms < t_ms:
                raise FetchError(
                    f"{where}: {key} answered pulse {pulse.chain_index}/{pulse.pulse_index} "
                    f"at {pulse.time_stamp}, which is not at or after {format_timestamp(t_ms)}"
                )
            return pulse, key
        boundary += period
    raise FetchError(
        f"{where}: no pulse at or after {format_timestamp(t_ms)} within {MAX_WALK} periods "
        f"({period} ms), although pulse/last is at {head.time_stamp}"
    )


def _links(before: Pulse, after: Pulse) -> bool:
    """``after`` links to ``before`` by ``previous``, and ``before``'s outputValue holds
    (so its timeStamp is the one ``after``'s signature covers)."""
    if after.chain_index != before.chain_index or after.previous != before.output_value:
        return False
    try:
        check_output_value(before)
    except CheckError:
        return False
    return True


def _prove(source: Source, kind: Kind, t_ms: int, pulse: Pulse, said: str) -> TimeAnswer:
    """Check ``pulse`` answers the query by its neighbour; walk to the answer if not."""
    relation, holds = _RELATIONS[kind]
    when = format_timestamp(t_ms)
    chain, first = pulse.chain_index, pulse
    if kind == "previous":
        return _prove_previous(source, t_ms, pulse, said)
    # at_or_after / next: walk forward while the candidate fails the query ...
    for _ in range(MAX_WALK):
        if holds(pulse.time_ms, t_ms):
            break
        following = _get(source, chain, pulse.pulse_index + 1)
        if following is None or not _links(pulse, following):
            raise FetchError(
                f"{source.describe()}: {said} answered pulse {chain}/{first.pulse_index} at "
                f"{first.time_stamp}, which is not {relation} {when}, and the pulse after "
                "it cannot be followed"
            )
        pulse = following
    else:
        raise FetchError(f"{source.describe()}: no pulse {relation} {when} within {MAX_WALK}")
    # ... then back while its predecessor answers the query too.
    for _ in range(MAX_WALK):
        if pulse.pulse_index == 1:
            return _answer(pulse, None, first, said, kind, t_ms)
        before = _get(source, chain, pulse.pulse_index - 1)
        if before is None:
            return TimeAnswer(
                pulse,
                None,
                _wrong(first, pulse, said, kind, t_ms),
                f"pulse {chain}/{pulse.pulse_index - 1}, before the answer, is not on the site",
            )
        if not _links(before, pulse):
            raise FetchError(
                f"{source.describe()}: pulse {chain}/{pulse.pulse_index} does not link to "
                f"pulse {before.pulse_index} as its previous: the answer cannot be proved"
            )
        if not holds(before.time_ms, t_ms):
            return _answer(pulse, before, first, said, kind, t_ms)
        pulse = before
    raise FetchError(
        f"{source.describe()}: {said} is wrong by more than {MAX_WALK} pulses at {when}"
    )


def _prove_previous(source: Source, t_ms: int, pulse: Pulse, said: str) -> TimeAnswer:
    """The answer to ``previous`` is before t and its successor is not (or it is the head)."""
    chain, first = pulse.chain_index, pulse
    when = format_timestamp(t_ms)
    for _ in range(MAX_WALK):  # back while the candidate is not before t
        if pulse.time_ms < t_ms:
            break
        if pulse.pulse_index == 1:
            return TimeAnswer(None, index_error=_said(first, said, "previous", t_ms))
        before = _get(source, chain, pulse.pulse_index - 1)
        if before is None or not _links(before, pulse):
            raise FetchError(
                f"{source.describe()}: {said} answered pulse {chain}/{first.pulse_index}, "
                f"which is not before {when}, and the pulse before it cannot be followed"
            )
        pulse = before
    for _ in range(MAX_WALK):  # forward while its successor is before t too
        after = _get(source, chain, pulse.pulse_index + 1)
        if after is None:
            head = _at(source, layout.chain_last_key(chain))
            if head is not None and head.pulse_index == pulse.pulse_index:
                return _answer(pulse, NOT_FETCHED, first, said, "previous", t_ms)
            return TimeAnswer(
                pulse,
                index_error=_wrong(first, pulse, said, "previous", t_ms),
                unproved=f"pulse {chain}/{pulse.pulse_index + 1}, after the answer, "
                "is not on the site",
            )
        if not _links(pulse, after):
            raise FetchError(
                f"{source.describe()}: pulse {chain}/{after.pulse_index} does not link to "
                f"pulse {pulse.pulse_index} as its previous: the answer cannot be proved"
            )
        if after.time_ms >= t_ms:
            return _answer(pulse, NOT_FETCHED, first, said, "previous", t_ms)
        pulse = after
    raise FetchError(f"{source.describe()}: {said} is wrong by more than {MAX_WALK} pulses")


def _said(first: Pulse, said: str, kind: Kind, t_ms: int) -> str:
    relation = _RELATIONS[kind][0]
    return (
        f"{said} answered pulse {first.chain_index}/{first.pulse_index} at "
        f"{first.time_stamp}, which is not the pulse {relation} {format_timestamp(t_ms)}"
    )


def _wrong(first: Pulse, pulse: Pulse, said: str, kind: Kind, t_ms: int) -> str | None:
    """What the site said wrongly (None: nothing; walking from the head is no claim)."""
    return None if first is pulse or said == layout.LAST_KEY else _said(first, said, kind, t_ms)


def _answer(
    pulse: Pulse,
    predecessor: Pulse | NotFetched | None,
    first: Pulse,
    said: str,
    kind: Kind,
    t_ms: int,
) -> TimeAnswer:
    return TimeAnswer(pulse, predecessor, _wrong(first, pulse, said, kind, t_ms))
