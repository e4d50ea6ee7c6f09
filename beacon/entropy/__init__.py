"""Entropy for localRandomValue: the ``EntropySource`` port and what it returns.

Every pulse's localRandomValue is SHA-512 of an *entropy record*: canonical JSON
(sorted keys, no whitespace, UTF-8) saying where the bits came from. The record
is committed one period ahead through the precommitment and published with its
pulse, so anyone can check it against the signed chain.

This package does not schedule anything: the service decides when to draw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from beacon.errors import EntropyError

#: Source kinds a record may name. The verifier reports pulses by these.
QUANTUM_HARDWARE = "quantum-hardware"
QUANTUM_SIMULATOR = "quantum-simulator"
OS_FALLBACK = "os-fallback"
SOURCE_KINDS = (QUANTUM_HARDWARE, QUANTUM_SIMULATOR, OS_FALLBACK)


def random_bytes(urandom: Callable[[int], bytes], n: int) -> bytes:
    """``n`` bytes from the OS CSPRNG (``urandom`` is injectable for tests).

    Raises ``EntropyError`` when the OS cannot supply them.
    """
    try:
        return urandom(n)
    except OSError as exc:
        raise EntropyError(f"os.urandom failed: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class EntropyDraw:
    """One pulse's entropy: the record bytes, and the kind of source they came from."""

    record: bytes
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown entropy source kind {self.kind!r}")

    @property
    def local_random_value(self) -> bytes:
        """SHA-512 of the record bytes: the pulse's localRandomValue."""
        return hashlib.sha512(self.record).digest()


class EntropySource(Protocol):
    """Delivers the entropy for one pulse.

    ``draw`` may block for seconds (a quantum job); the service calls it off the
    scheduling thread, one period ahead of the pulse. It raises
    ``beacon.errors.EntropyError`` when it cannot deliver healthy bits; the
    service then falls back to the OS source and discloses it.
    """

    name: str

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RawBatch:
    """A used-up batch ready to publish: its id and packed bits (shot-major, MSB first)."""

    batch_id: str
    data: bytes


@runtime_checkable
class ReleasesBatches(Protocol):
    """A source whose records cite shared raw batches, published once used up.

    The publisher asks, after each pulse it has published, which batches have
    no secret left, publishes them, then confirms each.
    """

    def released_batches(self, chain_index: int, pulse_index: int) -> list[RawBatch]: ...

    def batch_published(self, batch_id: str) -> None: ...


@runtime_checkable
class ReportsPool(Protocol):
    """A source that keeps a pool, and reports its level for ``status.json``."""

    def pool_status(self) -> dict[str, Any]: ...
