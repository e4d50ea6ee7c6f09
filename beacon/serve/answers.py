"""What the gateway answers: ``Answer``, JSON errors, and the freshness of ``last``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from beacon_verifier.errors import PulseFormatError
from beacon_verifier.format import Pulse, parse_pulse

from beacon.publish import IMMUTABLE_CACHE_CONTROL

__all__ = [
    "DEFAULT_MAX_AGE",
    "JSON",
    "TEXT",
    "Answer",
    "Latest",
    "SiteInconsistent",
    "error_answer",
    "parse_checked",
]

JSON = "application/json"
TEXT = "text/plain"
#: Cache lifetime of a mutable answer when the period of the beacon is not known yet.
DEFAULT_MAX_AGE = 5


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


class SiteInconsistent(Exception):
    """An object of the site is not what its key promises (a broken or hostile site)."""


def parse_checked(data: bytes, what: str) -> Pulse:
    """``data`` parsed as a pulse; ``SiteInconsistent`` naming ``what`` if it is none."""
    try:
        return parse_pulse(data)
    except PulseFormatError as exc:
        raise SiteInconsistent(f"{what} is not a well-formed pulse: {exc}") from None


class Latest:
    """The latest pulse seen, for how long answers that a new pulse changes may be cached."""

    def __init__(self) -> None:
        self.time_ms: int | None = None
        self._period_ms = 0
        self._raw: bytes | None = None

    def note(self, data: bytes) -> None:
        """Remember the ``last`` pointer ``data`` (parsed once per object read)."""
        if data is self._raw:
            return
        pulse = parse_checked(data, "the last pulse")
        self._raw = data
        if self.time_ms is None or pulse.time_ms >= self.time_ms:
            self.time_ms, self._period_ms = pulse.time_ms, pulse.period

    def max_age(self) -> int:
        """Seconds until the next pulse is due (at least 1, at most a period)."""
        if self.time_ms is None:
            return DEFAULT_MAX_AGE
        left = self.time_ms + self._period_ms - time.time() * 1000
        return max(1, min(math.ceil(left / 1000), max(1, self._period_ms // 1000)))
