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
  (``beacon_verifier.timeindex``) in at most two index reads, then the pulse
  (``times``);
- ``chain/last``, ``chain/{c}``: a description of the chain (first and last pulse);
- ``certificate/{id}``: the PEM, as ``text/plain`` as NIST serves it;
- ``chain/{c}/skiplist/{older}/{newer}``: the pulses of the skip-list path from
  ``newer`` back to ``older`` (``beacon_verifier.skiplist``'s choice of links).

The gateway vouches for nothing: clients check signatures themselves. It only
refuses to pass off a pulse that is not the one the index named.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

from beacon_verifier import layout
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse
from beacon_verifier.skiplist import choose_link, link_targets
from beacon_verifier.timeindex import Kind

from beacon.serve.answers import (
    DEFAULT_MAX_AGE,
    JSON,
    TEXT,
    Answer,
    Latest,
    SiteInconsistent,
    error_answer,
    parse_checked,
)
from beacon.serve.times import TimeQueries
from beacon.serve.upstream import Upstream, UpstreamError

__all__ = ["Api"]

#: The longest skip-list path served (a year of 1-s pulses takes ~200 steps).
MAX_SKIP_STEPS = 1024

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
_TIME_KINDS: frozenset[str] = frozenset({"at_or_after", "previous", "next"})


class Api:
    """NIST's dynamic paths over one site."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.latest = Latest()
        self.times = TimeQueries(upstream, self.latest, self._last)

    async def answer(self, key: str) -> Answer | None:
        """The answer for ``key``, or None when ``key`` is no dynamic path of the API."""
        for pattern, name in _ROUTES:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            try:
                if name in _TIME_KINDS:
                    return await self.times.answer(cast(Kind, name), int(match[1]))
                return await getattr(self, f"_{name}")(*match.groups())  # type: ignore[no-any-return]
            except SiteInconsistent as exc:
                return error_answer(502, f"the site is inconsistent: {exc}")
            except UpstreamError as exc:
                return error_answer(502, f"the site could not be read: {exc}")
        return None

    # --- pulses and certificates ---------------------------------------------------

    async def _pulse_bytes(self, chain: int, pulse: int) -> bytes | None:
        return await self.upstream.get(
            layout.pulse_key(chain, pulse), max_bytes=MAX_PULSE_BYTES, immutable=True
        )

    async def _pulse(self, chain: str, pulse: str) -> Answer:
        data = await self._pulse_bytes(int(chain), int(pulse))
        if data is None:
            return error_answer(404, f"no pulse {pulse} in chain {chain}", self.latest.max_age())
        return Answer(200, data, JSON, None)

    async def _chain_first(self, chain: str) -> Answer:
        return await self._pulse(chain, "1")

    async def _mutable_pulse(self, key: str, what: str) -> Answer:
        data = await self.upstream.get(key, max_bytes=MAX_PULSE_BYTES, immutable=False)
        if data is None:
            return error_answer(404, f"{what}: nothing published yet", DEFAULT_MAX_AGE)
        self.latest.note(data)
        return Answer(200, data, JSON, self.latest.max_age())

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

    # --- chains and skip lists -------------------------------------------------

    async def _chain_info(self, chain: str | None = None) -> Answer:
        if chain is None:
            last_answer = await self._last()
        else:
            last_answer = await self._chain_last(chain)
        if last_answer.status != 200:
            return last_answer
        last = parse_checked(last_answer.body, "the last pulse")
        first_data = await self._pulse_bytes(last.chain_index, 1)
        first = (
            parse_checked(first_data, f"pulse 1 of chain {last.chain_index}")
            if first_data
            else None
        )
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
        return Answer(200, encoded, JSON, self.latest.max_age())

    async def _skiplist(self, chain: str, older: str, newer: str) -> Answer:
        c, low, high = int(chain), int(older), int(newer)
        if not low < high:
            return error_answer(400, f"need OLDER < NEWER, got {low} and {high}")
        path: list[Any] = []
        index = high
        while True:
            data = await self._pulse_bytes(c, index)
            if data is None:
                return error_answer(
                    404, f"no pulse {index} in chain {c} (on the path)", DEFAULT_MAX_AGE
                )
            pulse = parse_checked(data, layout.pulse_key(c, index))
            if (pulse.chain_index, pulse.pulse_index) != (c, index):
                raise SiteInconsistent(f"{layout.pulse_key(c, index)} holds another pulse")
            path.append(json.loads(data)["pulse"])
            if index == low:
                break
            if len(path) >= MAX_SKIP_STEPS:
                return error_answer(400, f"the path is longer than {MAX_SKIP_STEPS} pulses")
            _, index = choose_link(link_targets(pulse), low)
        body = json.dumps({"skipList": path}, indent=2).encode() + b"\n"
        return Answer(200, body, JSON, None)


def _summary(pulse: Pulse) -> dict[str, Any]:
    return {"pulseIndex": pulse.pulse_index, "timeStamp": pulse.time_stamp, "uri": pulse.uri}
