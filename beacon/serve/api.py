"""NIST Randomness Beacon 2.0 REST answers computed from a static beacon site.

``Api.answer(key)`` maps a site-relative path to an ``Answer`` (status, body,
content type, cache lifetime), or None when the path is not one of the API's
dynamic paths (the caller then serves the object stored under that key, if any).

Semantics are NIST's (``docs/gateway.md``):

- ``pulse/last``, ``chain/last/pulse/last``, ``chain/{c}/pulse/last``: the
  latest pulse (of chain c);
- ``chain/{c}/pulse/first``: pulse 1 of chain c; ``chain/{c}/pulse/{p}``;
- ``pulse/time/{t}``: the first pulse at or after t (Unix ms);
  ``pulse/time/previous/{t}``: the last strictly before; ``pulse/time/next/{t}``:
  the first strictly after; answered from the site's hourly time index
  (``beacon_verifier.timeindex``) in at most two index reads, then the pulse;
- ``chain/last``, ``chain/{c}``: a description of the chain (first and last pulse);
- ``certificate/{id}``: the PEM, as ``text/plain`` as NIST serves it;
- ``chain/{c}/skiplist/{older}/{newer}``: the pulses of the skip-list path from
  ``newer`` back to ``older`` (``beacon_verifier.skiplist``'s choice of links).

The gateway vouches for nothing: clients check signatures themselves. It only
refuses to pass off a pulse that is not the one the index named.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from beacon_verifier import layout
from beacon_verifier.errors import FetchError, PulseFormatError
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, parse_pulse
from beacon_verifier.skiplist import choose_link, link_targets
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

from beacon.publish import IMMUTABLE_CACHE_CONTROL
from beacon.serve.upstream import Upstream, UpstreamError

__all__ = ["JSON", "Answer", "Api", "error_answer"]

JSON = "application/json"
TEXT = "text/plain"
#: Cache lifetime of a mutable answer when the period of the beacon is not known yet.
DEFAULT_MAX_AGE = 5
#: The longest skip-list path served (a year of 1-s pulses takes ~200 steps).
MAX_SKIP_STEPS = 1024
#: Hour objects kept parsed (each ~60 entries at a 60 s period): parsing one costs
#: more than the rest of a time lookup.
MAX_PARSED_HOURS = 4096

_N = r"([1-9][0-9]{0,18})"  # a chain or pulse index
_T = r"([0-9]{1,16})"  # Unix ms
_ROUTES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(f"{layout.ROOT}/{pattern}"), name)
    for pattern, name in (
        ("(?:pulse|chain/last/pulse)/last", "last"),
        (f"chain/{_N}/pulse/last", "chain_last"),
        (f"chain/{_N}/pulse/first", "chain_first"),
        (f"chain/{_N}/pulse/{_N}", "pulse"),
        (f"pulse/time/{_T}", "at_or_after"),
        (f"pulse/time/previous/{_T}", "previous"),
        (f"pulse/time/next/{_T}", "next"),
        ("chain/last", "chain_info"),
        (f"chain/{_N}", "chain_info"),
        ("certificate/([0-9a-fA-F]{1,256})", "certificate"),
        (f"chain/{_N}/skiplist/{_N}/{_N}", "skiplist"),
    )
)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send: ``max_age`` None means immutable (cached for a year)."""

    status: int
    body: bytes
    content_type: str = JSON
    max_age: int | None = 0

    @property
    def cache_control(self) -> str:
        if self.status >= 500:
            return "no-store"
        if self.max_age is None:
            return IMMUTABLE_CACHE_CONTROL
        return f"public, max-age={self.max_age}"


def error_answer(status: int, message: str, max_age: int = 0) -> Answer:
    """A JSON error body: ``{"status": 404, "error": "Not Found", "message": ...}``."""
    reasons = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    reason = reasons.get(status, "Bad Gateway" if status == 502 else "Error")
    body = {"status": status, "error": reason, "message": message}
    return Answer(status, json.dumps(body).encode() + b"\n", JSON, max_age)


class _Malformed(Exception):
    """An object of the site is not what its key promises (a broken or hostile site)."""


class Api:
    """NIST's dynamic paths over one site."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._latest: tuple[int, int] | None = None  # (timeStamp ms, period ms) of the last pulse
        self._latest_raw: bytes | None = None
        self._hours: OrderedDict[str, tuple[bytes, HourIndex]] = OrderedDict()

    # --- freshness -------------------------------------------------------------

    def mutable_max_age(self) -> int:
        """Seconds until the next pulse is due (at least 1): how long ``last`` may be cached."""
        if self._latest is None:
            return DEFAULT_MAX_AGE
        time_ms, period_ms = self._latest
        left = time_ms + period_ms - time.time() * 1000
        return max(1, min(math.ceil(left / 1000), max(1, period_ms // 1000)))

    # --- entry point -----------------------------------------------------------

    async def answer(self, key: str) -> Answer | None:
        """The answer for ``key``, or None when ``key`` is no dynamic path of the API."""
        for pattern, name in _ROUTES:
            match = pattern.fullmatch(key)
            if match is not None:
                try:
                    return await getattr(self, f"_{name}")(*match.groups())  # type: ignore[no-any-return]
                except _Malformed as exc:
                    return error_answer(502, f"the site is inconsistent: {exc}")
                except UpstreamError as exc:
                    return error_answer(502, f"the site could not be read: {exc}")
        return None

    # --- pulses ----------------------------------------------------------------

    async def _pulse_bytes(self, chain: int, pulse: int) -> bytes | None:
        return await self.upstream.get(
            layout.pulse_key(chain, pulse), max_bytes=MAX_PULSE_BYTES, immutable=True
        )

    async def _pulse(self, chain: str, pulse: str) -> Answer:
        data = await self._pulse_bytes(int(chain), int(pulse))
        if data is None:
            return error_answer(404, f"no pulse {pulse} in chain {chain}", self.mutable_max_age())
        return Answer(200, data, JSON, None)

    async def _chain_first(self, chain: str) -> Answer:
        return await self._pulse(chain, "1")

    async def _mutable_pulse(self, key: str, what: str) -> Answer:
        data = await self.upstream.get(key, max_bytes=MAX_PULSE_BYTES, immutable=False)
        if data is None:
            return error_answer(404, f"{what}: nothing published yet", DEFAULT_MAX_AGE)
        self._note_last(data)
        return Answer(200, data, JSON, self.mutable_max_age())

    def _note_last(self, data: bytes) -> None:
        if data is self._latest_raw:  # the cached object again: already read
            return
        pulse = _parse(data, "the last pulse")
        self._latest_raw = data
        if self._latest is None or pulse.time_ms >= self._latest[0]:
            self._latest = (pulse.time_ms, pulse.period)

    async def _last(self) -> Answer:
        return await self._mutable_pulse(layout.LAST_KEY, "the last pulse")

    async def _chain_last(self, chain: str) -> Answer:
        return await self._mutable_pulse(
            layout.chain_last_key(int(chain)), f"the last pulse of chain {chain}"
        )

    async def _certificate(self, certificate_id: str) -> Answer:
        data = await self.upstream.get(
            layout.certificate_key(certificate_id), max_bytes=256 * 1024, immutable=True
        )
        if data is None:
            return error_answer(404, f"no certificate {certificate_id[:16]}…", DEFAULT_MAX_AGE)
        return Answer(200, data, TEXT, None)

    # --- time lookups ----------------------------------------------------------

    async def _at_or_after(self, t: str) -> Answer:
        return await self._by_time("at_or_after", int(t))

    async def _previous(self, t: str) -> Answer:
        return await self._by_time("previous", int(t))

    async def _next(self, t: str) -> Answer:
        return await self._by_time("next", int(t))

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
            raise _Malformed(str(exc)) from None
        self._hours[key] = (data, index)
        if len(self._hours) > MAX_PARSED_HOURS:
            self._hours.popitem(last=False)
        return index

    async def _by_time(self, kind: Kind, t_ms: int) -> Answer:
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
                raise _Malformed(str(exc)) from None
        if entry is None:
            return error_answer(404, f"no pulse {_RELATION[kind]} {t_ms}", self.mutable_max_age())
        data = await self._pulse_bytes(entry.chain, entry.pulse)
        key = layout.pulse_key(entry.chain, entry.pulse)
        if data is None:
            raise _Malformed(f"the time index names {key}, which is missing")
        pulse = _parse(data, key)
        if (pulse.chain_index, pulse.pulse_index, pulse.time_ms) != (
            entry.chain,
            entry.pulse,
            entry.time_ms,
        ):
            raise _Malformed(f"{key} is not the pulse at {entry.time_ms} the time index names")
        return Answer(200, data, JSON, await self._time_max_age(kind, t_ms))

    async def _time_max_age(self, kind: Kind, t_ms: int) -> int | None:
        """None (immutable) when no later pulse can change the answer."""
        if kind != "previous":
            return None  # a pulse at or after t exists; none can be inserted before it
        await self._last()  # refresh what the last pulse is
        if self._latest is not None and self._latest[0] >= t_ms:
            return None
        return self.mutable_max_age()

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

    # --- chains and skip lists -------------------------------------------------

    async def _chain_info(self, chain: str | None = None) -> Answer:
        if chain is None:
            last_answer = await self._last()
        else:
            last_answer = await self._chain_last(chain)
        if last_answer.status != 200:
            return last_answer
        last = _parse(last_answer.body, "the last pulse")
        first_data = await self._pulse_bytes(last.chain_index, 1)
        first = _parse(first_data, f"pulse 1 of chain {last.chain_index}") if first_data else None
        body = {
            "chain": {
                "chainIndex": last.chain_index,
                "version": last.version,
                "cipherSuite": last.cipher_suite,
                "period": last.period,
                "certificateId": last.certificate_id.hex(),
                "firstPulse": _summary(first) if first else None,
                "lastPulse": _summary(last),
            }
        }
        encoded = json.dumps(body, indent=2).encode() + b"\n"
        return Answer(200, encoded, JSON, self.mutable_max_age())

    async def _skiplist(self, chain: str, older: str, newer: str) -> Answer:
        c, low, high = int(chain), int(older), int(newer)
        if not low < high:
            return error_answer(400, f"need OLDER < NEWER, got {low} and {high}")
        path: list[Any] = []
        index = high
        while True:
            data = await self._pulse_bytes(c, index)
            if data is None:
                return error_answer(404, f"no pulse {index} in chain {c} (on the path)", 5)
            pulse = _parse(data, layout.pulse_key(c, index))
            if (pulse.chain_index, pulse.pulse_index) != (c, index):
                raise _Malformed(f"{layout.pulse_key(c, index)} holds another pulse")
            path.append(json.loads(data)["pulse"])
            if index == low:
                break
            if len(path) >= MAX_SKIP_STEPS:
                return error_answer(400, f"the path is longer than {MAX_SKIP_STEPS} pulses")
            _, index = choose_link(link_targets(pulse), low)
        body = json.dumps({"skipList": path}, indent=2).encode() + b"\n"
        return Answer(200, body, JSON, None)


_RELATION: dict[str, str] = {"at_or_after": "at or after", "previous": "before", "next": "after"}


def _parse(data: bytes, what: str) -> Pulse:
    try:
        return parse_pulse(data)
    except PulseFormatError as exc:
        raise _Malformed(f"{what} is not a well-formed pulse: {exc}") from None


def _summary(pulse: Pulse) -> dict[str, Any]:
    return {"pulseIndex": pulse.pulse_index, "timeStamp": pulse.time_stamp, "uri": pulse.uri}
