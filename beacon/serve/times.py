"""NIST's three time queries, answered from the site's hourly time index.

``pulse/time/{t}`` (the first pulse at or after t), ``pulse/time/previous/{t}``
(the last strictly before) and ``pulse/time/next/{t}`` (the first strictly after),
with ``beacon_verifier.timeindex``'s rules: the hour object of t answers alone; only
outside the published hours does ``bounds.json`` answer. Hour objects are kept
parsed (parsing one costs more than the rest of a lookup), and an hour whose next
pulse is known never changes again, so it stays in the cache.

The pulse the index names must be that pulse (chain, index, timeStamp), or the
answer is a 502: the gateway never passes one pulse off as another.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.format import MAX_PULSE_BYTES
from beacon_verifier.timeindex import (
    BOUNDS_KEY,
    MAX_INDEX_BYTES,
    HourIndex,
    Kind,
    answer_in_hour,
    hour_index_key,
    hour_start,
    lookup,
    parse_hour_index,
)

from beacon.serve.answers import (
    DEFAULT_MAX_AGE,
    JSON,
    Answer,
    Latest,
    SiteInconsistent,
    error_answer,
    parse_checked,
)
from beacon.serve.upstream import Upstream

__all__ = ["MAX_PARSED_HOURS", "TimeQueries"]

#: Hour objects kept parsed (each ~60 entries at a 60 s period).
MAX_PARSED_HOURS = 4096
_RELATION: dict[str, str] = {"at_or_after": "at or after", "previous": "before", "next": "after"}


class TimeQueries:
    """Answers to the time queries over one site.

    ``refresh_latest`` re-reads the ``last`` pointer (into ``latest``): a
    ``previous`` answer is final only once a pulse at or after t exists.
    """

    def __init__(
        self, upstream: Upstream, latest: Latest, refresh_latest: Callable[[], Awaitable[Answer]]
    ) -> None:
        self.upstream = upstream
        self.latest = latest
        self.refresh_latest = refresh_latest
        self._hours: OrderedDict[str, tuple[bytes, HourIndex]] = OrderedDict()

    async def answer(self, kind: Kind, t_ms: int) -> Answer:
        try:
            hour_key: str | None = hour_index_key(t_ms)
        except ValueError:
            hour_key = None
        hour = None if hour_key is None else await self._index(hour_key)
        if hour_key is not None and hour is not None:
            # The hour object answers alone (timeindex.lookup's first step).
            entry = answer_in_hour(kind, t_ms, self._parsed_hour(hour_key, hour, t_ms))
        else:
            fetched = {BOUNDS_KEY: await self._index(BOUNDS_KEY)}
            if fetched[BOUNDS_KEY] is None:
                return await self._without_index(kind, t_ms)
            if hour_key is not None:
                fetched[hour_key] = None
            try:
                entry = lookup(kind, t_ms, fetched.get)
            except FetchError as exc:
                raise SiteInconsistent(str(exc)) from None
        if entry is None:
            return error_answer(404, f"no pulse {_RELATION[kind]} {t_ms}", self.latest.max_age())
        key = layout.pulse_key(entry.chain, entry.pulse)
        data = await self.upstream.get(key, max_bytes=MAX_PULSE_BYTES, immutable=True)
        if data is None:
            raise SiteInconsistent(f"the time index names {key}, which is missing")
        pulse = parse_checked(data, key)
        if (pulse.chain_index, pulse.pulse_index, pulse.time_ms) != (
            entry.chain,
            entry.pulse,
            entry.time_ms,
        ):
            raise SiteInconsistent(f"{key} is not the pulse at {entry.time_ms} the index names")
        return Answer(200, data, JSON, await self._max_age(kind, t_ms))

    async def _index(self, key: str) -> bytes | None:
        data = await self.upstream.get(key, max_bytes=MAX_INDEX_BYTES, immutable=False)
        if data is not None and key != BOUNDS_KEY and not data.rstrip().endswith(b'"next":null}'):
            # An hour whose next pulse is known never changes again.
            self.upstream.remember(key, data, immutable=True)
        return data

    def _parsed_hour(self, key: str, data: bytes, t_ms: int) -> HourIndex:
        """``data`` parsed, once per object read (the cache hands out the same bytes)."""
        kept = self._hours.get(key)
        if kept is not None and kept[0] is data:
            self._hours.move_to_end(key)
            return kept[1]
        try:
            index = parse_hour_index(data, key=key, hour_ms=hour_start(t_ms))
        except FetchError as exc:
            raise SiteInconsistent(str(exc)) from None
        self._hours[key] = (data, index)
        if len(self._hours) > MAX_PARSED_HOURS:
            self._hours.popitem(last=False)
        return index

    async def _max_age(self, kind: Kind, t_ms: int) -> int | None:
        """None (immutable) when no later pulse can change the answer."""
        if kind != "previous":
            return None  # a pulse at or after t exists; none can be inserted before it
        await self.refresh_latest()
        if self.latest.time_ms is not None and self.latest.time_ms >= t_ms:
            return None
        return self.latest.max_age()

    async def _without_index(self, kind: Kind, t_ms: int) -> Answer:
        """A site with no time index: only exact times, from ``pulse/time/{t}`` objects."""
        if kind == "at_or_after":
            data = await self.upstream.get(
                layout.time_key(t_ms), max_bytes=MAX_PULSE_BYTES, immutable=True
            )
            if data is not None:
                return Answer(200, data, JSON, None)
        return error_answer(
            404, f"no pulse {_RELATION[kind]} {t_ms} (the site has no time index)", DEFAULT_MAX_AGE
        )
