"""The operating system's CSPRNG as an entropy source: the fallback, and a configured mode.

Its records say ``"source": "os-fallback"`` and why, so a pulse made from it is
never mistaken for a quantum one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from beacon.entropy import EntropyDraw, random_bytes
from beacon.entropy.record import OS_BITS_BYTES, fallback_record, seal


class OsSource:
    """``EntropySource`` over ``os.urandom``.

    ``reason`` goes into every record: ``"configured"`` when the operator
    chose this source, or the failure that made the service fall back.
    ``urandom`` is injectable for tests. Raises ``ValueError`` when ``reason``
    is empty.
    """

    name = "os"

    def __init__(
        self, reason: str = "configured", *, urandom: Callable[[int], bytes] = os.urandom
    ) -> None:
        if not reason:
            raise ValueError("an os-fallback source needs a reason")
        self.reason = reason
        self._urandom = urandom

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        """An os-fallback record with 512 fresh OS bits.

        Raises ``EntropyError`` when the OS cannot supply random bytes.
        """
        os_bits = random_bytes(self._urandom, OS_BITS_BYTES)
        return seal(
            fallback_record(
                chain_index=chain_index,
                pulse_index=pulse_index,
                reason=self.reason,
                os_bits=os_bits,
            )
        )
