"""Conditioning: SHA-512 over enough raw bits to carry 1024 bits of min-entropy.

The raw bits of a batch form one stream in **shot-major** order: shot 0's
classical bits 0..n-1, then shot 1's, and so on (``bits.reshape(-1)`` of the
``(shots, qubits)`` array). A conditioned value takes the half-open bit range
``[start, end)`` of that stream, with ``end - start = ceil(1024 / H)`` for the
batch's credited min-entropy ``H`` per bit, packs it with ``numpy.packbits``
(big-endian within a byte: the first bit is the most significant bit of the
first byte; the last byte is padded with zero bits) and hashes the packed bytes
with SHA-512. Anyone holding the bits, ``start`` and ``H`` re-derives the value.

Twice the output size in min-entropy (1024 bits in, 512 bits out) is the
margin SP 800-90B section 3.1.5.1.2 asks of a vetted conditioning function
before crediting full entropy to its output.

Pure: no I/O, no randomness of its own.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from beacon.errors import EntropyError

#: Min-entropy (bits) the raw input of one conditioned value must carry.
REQUIRED_MIN_ENTROPY_BITS = 1024
#: Size of one conditioned value in bytes (SHA-512).
OUTPUT_BYTES = 64


def bits_needed(min_entropy_per_bit: float, required: int = REQUIRED_MIN_ENTROPY_BITS) -> int:
    """Raw bits to consume for ``required`` bits of min-entropy: ``ceil(required / H)``.

    Raises ``EntropyError`` when ``min_entropy_per_bit`` is not in (0, 1].
    """
    if not 0.0 < min_entropy_per_bit <= 1.0:
        raise EntropyError(f"min-entropy estimate {min_entropy_per_bit!r} per bit is unusable")
    return math.ceil(required / min_entropy_per_bit)


def shot_major(bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The batch as one flat stream in shot-major order (a view when possible)."""
    flat: NDArray[np.uint8] = np.ascontiguousarray(bits).reshape(-1)
    return flat


def pack_bits(stream: NDArray[np.uint8]) -> bytes:
    """Pack a flat 0/1 stream with ``numpy.packbits`` (big-endian bit order, zero-padded)."""
    return np.packbits(stream, bitorder="big").tobytes()


def unpack_bits(data: bytes, count: int) -> NDArray[np.uint8]:
    """Inverse of ``pack_bits``: the first ``count`` bits of ``data`` as a 0/1 array.

    Raises ``ValueError`` when ``data`` holds fewer than ``count`` bits.
    """
    if count > 8 * len(data):
        raise ValueError(f"{len(data)} bytes cannot hold {count} bits")
    buf = np.frombuffer(data, dtype=np.uint8)
    unpacked: NDArray[np.uint8] = np.unpackbits(buf, count=count, bitorder="big")
    return unpacked


@dataclass(frozen=True, slots=True, kw_only=True)
class Conditioned:
    """One conditioned value and exactly which raw bits it came from."""

    value: bytes  # SHA-512 of ``raw``
    start: int  # first bit consumed, in the batch's shot-major stream
    end: int  # one past the last bit consumed
    raw: bytes  # the consumed bits, packed as ``pack_bits`` does
    min_entropy_per_bit: float  # the estimate that sized the range

    @property
    def bit_count(self) -> int:
        """Number of raw bits consumed."""
        return self.end - self.start


def condition_stream(
    stream: NDArray[np.uint8], start: int, min_entropy_per_bit: float
) -> Conditioned:
    """Condition ``bits_needed(H)`` bits of a flat shot-major stream starting at ``start``.

    Raises ``EntropyError`` when the estimate is unusable or fewer than the
    needed bits remain after ``start``; ``ValueError`` when ``start`` is negative.
    """
    if start < 0:
        raise ValueError(f"start offset must be >= 0, got {start}")
    need = bits_needed(min_entropy_per_bit)
    end = start + need
    if end > stream.size:
        raise EntropyError(
            f"not enough raw bits: need {need} at {min_entropy_per_bit} bits of min-entropy "
            f"per bit, {max(stream.size - start, 0)} left after offset {start}"
        )
    raw = pack_bits(stream[start:end])
    return Conditioned(
        value=hashlib.sha512(raw).digest(),
        start=start,
        end=end,
        raw=raw,
        min_entropy_per_bit=min_entropy_per_bit,
    )


def condition_packed(
    packed: bytes, bit_count: int, start: int, min_entropy_per_bit: float
) -> Conditioned:
    """As ``condition_stream`` for a stream stored packed (``pack_bits``) of ``bit_count`` bits.

    Unpacks only the bytes the range touches. Raises as ``condition_stream`` does,
    and ``ValueError`` when ``packed`` holds fewer than ``bit_count`` bits.
    """
    if bit_count > 8 * len(packed):
        raise ValueError(f"{len(packed)} bytes cannot hold {bit_count} bits")
    if start < 0:
        raise ValueError(f"start offset must be >= 0, got {start}")
    need = bits_needed(min_entropy_per_bit)
    if start + need > bit_count:
        raise EntropyError(
            f"not enough raw bits: need {need} at {min_entropy_per_bit} bits of min-entropy "
            f"per bit, {max(bit_count - start, 0)} left after offset {start}"
        )
    first, skip = divmod(start, 8)
    window = unpack_bits(packed[first : (start + need + 7) // 8], skip + need)[skip:]
    raw = pack_bits(window)
    return Conditioned(
        value=hashlib.sha512(raw).digest(),
        start=start,
        end=start + need,
        raw=raw,
        min_entropy_per_bit=min_entropy_per_bit,
    )


def condition(bits: NDArray[np.uint8], start: int, min_entropy_per_bit: float) -> Conditioned:
    """Condition a ``(shots, qubits)`` batch from bit ``start`` of its shot-major stream.

    Raises as ``condition_stream`` does.
    """
    return condition_stream(shot_major(bits), start, min_entropy_per_bit)


def rederive(raw: bytes, bit_count: int) -> bytes:
    """A third party's check: SHA-512 of the packed raw bits of a record.

    Raises ``ValueError`` when ``raw`` is not exactly ``bit_count`` bits packed
    with zero padding.
    """
    if len(raw) != (bit_count + 7) // 8:
        raise ValueError(f"{len(raw)} bytes do not pack exactly {bit_count} bits")
    if bit_count % 8 and raw[-1] & ((1 << (8 - bit_count % 8)) - 1):
        raise ValueError("padding bits of the last byte are not zero")
    return hashlib.sha512(raw).digest()
