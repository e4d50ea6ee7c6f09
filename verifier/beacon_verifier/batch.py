"""Re-derive a pulse's conditioned quantum value from a published raw batch.

Records drawn from a pooled batch name it (``batchId``), commit to the whole
batch (``batchSha512``, ``batchBits``) and state the bit range they consumed
(``bitOffsets``). Once the batch is used up the beacon publishes it at
``layout.batch_key(batchId)``: the batch's bits in shot-major order, packed
MSB first and zero-padded to a whole byte. ``check_raw_batch`` takes those
bytes and, without trusting the record's own copy, cuts the stated range out
of the batch, conditions it with SHA-512 and compares with ``quantumValue``.
Rerunning the health tests needs the same bits: ``batch_bits`` returns them.

Pure: bytes in, verdict out. Standard library only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from beacon_verifier.archive import MAX_RECORD_BYTES
from beacon_verifier.errors import ChainError, PulseFormatError
from beacon_verifier.format import load_json

__all__ = ["MAX_BATCH_BYTES", "BatchCheck", "batch_bits", "check_raw_batch", "cited_batch"]

#: The largest raw batch read (a job of 100,000 shots on 156 qubits is ~2 MB).
MAX_BATCH_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchCheck:
    """What a raw batch proved about one record."""

    batch_id: str
    start: int
    end: int
    quantum_value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class _Cited:
    batch_id: str
    sha512: bytes
    bits: int
    start: int
    end: int
    quantum_value: bytes


def _cited(doc: Any) -> _Cited | None:
    if not isinstance(doc, dict) or "batchSha512" not in doc:
        return None
    try:
        offsets = doc["bitOffsets"]
        cited = _Cited(
            batch_id=str(doc["batchId"]),
            sha512=bytes.fromhex(doc["batchSha512"]),
            bits=int(doc["batchBits"]),
            start=int(offsets["start"]),
            end=int(offsets["end"]),
            quantum_value=bytes.fromhex(doc["quantumValue"]),
        )
    except (KeyError, TypeError, ValueError):
        raise PulseFormatError(
            "entropy record",
            "batchId, batchSha512, batchBits, bitOffsets or quantumValue malformed",
        ) from None
    if len(cited.sha512) != 64 or not 0 <= cited.start < cited.end <= cited.bits:
        raise PulseFormatError("entropy record", "batch digest or bit range out of bounds")
    return cited


def cited_batch(record: bytes) -> str | None:
    """The ``batchId`` a record commits to, or None when it cites no published batch."""
    cited = _cited(load_json(record, what="entropy record", max_bytes=MAX_RECORD_BYTES))
    return None if cited is None else cited.batch_id


def batch_bits(batch: bytes, start: int, end: int) -> bytes:
    """Bits ``[start, end)`` of a packed batch, packed MSB first and zero-padded."""
    count = end - start
    value = int.from_bytes(batch, "big") >> (len(batch) * 8 - end)
    value &= (1 << count) - 1
    pad = -count % 8
    return (value << pad).to_bytes((count + pad) // 8, "big")


def check_raw_batch(record: bytes, batch: bytes, *, pulse_index: int | None = None) -> BatchCheck:
    """Check ``batch`` against the record that cites it and re-derive the conditioned value.

    Raises ``PulseFormatError`` when the record is malformed or cites no batch,
    ``ChainError`` (check ``raw batch``) when the batch is not the one the
    record committed to, or the stated bits do not condition to ``quantumValue``.
    """
    cited = _cited(load_json(record, what="entropy record", max_bytes=MAX_RECORD_BYTES))
    if cited is None:
        raise PulseFormatError("entropy record", "cites no published batch (no batchSha512)")

    def fail(detail: str, expected: str = "", actual: str = "") -> ChainError:
        return ChainError(
            "raw batch",
            pulse_index=pulse_index,
            detail=f"batch {cited.batch_id}: {detail}",
            expected=expected,
            actual=actual,
        )

    if len(batch) != (cited.bits + 7) // 8:
        raise fail("wrong size", f"{(cited.bits + 7) // 8} bytes", f"{len(batch)} bytes")
    digest = hashlib.sha512(batch).digest()
    if digest != cited.sha512:
        raise fail(
            "SHA-512 is not the record's batchSha512",
            cited.sha512.hex().upper()[:16] + "…",
            digest.hex().upper()[:16] + "…",
        )
    value = hashlib.sha512(batch_bits(batch, cited.start, cited.end)).digest()
    if value != cited.quantum_value:
        raise fail(
            f"bits {cited.start}..{cited.end} do not condition to quantumValue",
            cited.quantum_value.hex().upper()[:16] + "…",
            value.hex().upper()[:16] + "…",
        )
    return BatchCheck(
        batch_id=cited.batch_id, start=cited.start, end=cited.end, quantum_value=value
    )
