"""Conditioning: how many raw bits, in which order, and re-deriving the value."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from beacon.entropy.extract import (
    bits_needed,
    condition,
    condition_packed,
    pack_bits,
    rederive,
    shot_major,
    unpack_bits,
)
from beacon.errors import EntropyError


def batch(shots: int = 2048, qubits: int = 127, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(shots, qubits), dtype=np.uint8)


@pytest.mark.parametrize(
    ("h", "expected"), [(1.0, 1024), (0.5, 2048), (0.842397, math.ceil(1024 / 0.842397))]
)
def test_bits_needed_carry_1024_bits_of_min_entropy(h: float, expected: int) -> None:
    assert bits_needed(h) == expected
    assert bits_needed(h) * h >= 1024


@pytest.mark.parametrize("h", [0.0, -0.1, 1.01, float("nan")])
def test_unusable_estimate_is_an_entropy_error(h: float) -> None:
    with pytest.raises(EntropyError):
        bits_needed(h)


def test_condition_consumes_exactly_the_needed_bits() -> None:
    bits = batch()
    out = condition(bits, 300, 0.8)
    assert (out.start, out.end) == (300, 300 + math.ceil(1024 / 0.8))
    assert out.bit_count == 1280
    assert len(out.raw) == 1280 // 8
    assert len(out.value) == 64


def test_value_is_reproducible_from_raw_bits_and_offsets() -> None:
    bits = batch()
    out = condition(bits, 1001, 0.84)
    # A third party with the batch and the offsets:
    stream = [int(b) for row in bits for b in row]  # shot 0 qubit 0..n-1, shot 1, ...
    chosen = stream[out.start : out.end]
    packed = int("".join(map(str, chosen)), 2) << (-len(chosen) % 8)
    raw = packed.to_bytes((len(chosen) + 7) // 8, "big")
    assert raw == out.raw
    assert hashlib.sha512(raw).digest() == out.value
    # A third party with only the record's raw bits:
    assert rederive(out.raw, out.bit_count) == out.value
    assert unpack_bits(out.raw, out.bit_count).tolist() == chosen


def test_packing_order_is_shot_major_and_msb_first() -> None:
    bits = np.zeros((4, 3), dtype=np.uint8)
    bits[0, 0] = 1  # stream bit 0
    bits[0, 2] = 1  # stream bit 2
    bits[2, 1] = 1  # stream bit 7
    assert shot_major(bits).tolist()[:8] == [1, 0, 1, 0, 0, 0, 0, 1]
    assert pack_bits(shot_major(bits)) == bytes([0b10100001, 0b00000000])


def test_consecutive_draws_do_not_overlap() -> None:
    bits = batch()
    first = condition(bits, 0, 0.9)
    second = condition(bits, first.end, 0.9)
    assert second.start == first.end
    assert first.value != second.value


def test_not_enough_bits_is_an_entropy_error() -> None:
    bits = batch(shots=8, qubits=127)  # 1016 bits
    with pytest.raises(EntropyError, match="not enough raw bits"):
        condition(bits, 0, 1.0)
    big = batch()
    with pytest.raises(EntropyError):
        condition(big, big.size - 1000, 1.0)


def test_rederive_refuses_bad_padding_and_length() -> None:
    out = condition(batch(), 0, 0.7)  # 1463 bits: 7 bits in the last byte
    assert out.bit_count % 8 == 7
    assert rederive(out.raw, out.bit_count) == out.value
    with pytest.raises(ValueError):
        rederive(out.raw[:-1] + bytes([out.raw[-1] | 1]), out.bit_count)
    with pytest.raises(ValueError):
        rederive(out.raw + b"\x00", out.bit_count)


@pytest.mark.parametrize("start", [0, 1, 7, 8, 1001, 2048 * 127 - 1024])
def test_condition_packed_equals_condition_on_the_stream(start: int) -> None:
    bits = batch()
    packed = pack_bits(shot_major(bits))
    assert condition_packed(packed, bits.size, start, 1.0) == condition(bits, start, 1.0)
    with pytest.raises(EntropyError):
        condition_packed(packed, bits.size, bits.size - 1023, 1.0)
