"""The entropy record of a pulse: does it open the pulse's localRandomValue, and
does its quantum value condition from the bits it names?

Pure: bytes in, verdict out. ``core.check_pulse`` calls ``entropy_verdict``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from beacon_verifier.archive import MAX_RECORD_BYTES
from beacon_verifier.claims import check_claims
from beacon_verifier.errors import ChainError, PulseFormatError
from beacon_verifier.format import Pulse, load_json

__all__ = ["MAX_RECORD_BYTES", "EntropyCheck", "check_entropy_record", "entropy_verdict"]


@dataclass(frozen=True, slots=True)
class EntropyCheck:
    """The entropy record of a pulse: its source kind, and whether it opens localRandomValue."""

    kind: str


def check_entropy_record(pulse: Pulse, record: bytes) -> EntropyCheck:
    """SHA-512(record) must equal localRandomValue; returns the record's source kind.

    Raises ``ChainError`` (check ``entropy record``) when it does not hold, and
    ``PulseFormatError`` when the record is not a JSON object naming its source.
    """
    return EntropyCheck(kind=_entropy_kind(pulse, record))


def _entropy_kind(pulse: Pulse, record: bytes) -> str:
    """``check_entropy_record``'s source kind, without the object around it."""
    digest = hashlib.sha512(record).digest()
    if digest != pulse.local_random_value:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="SHA-512 of the record is not localRandomValue",
            expected=pulse.local_random_value.hex().upper()[:16] + "…",
            actual=digest.hex().upper()[:16] + "…",
        )
    doc = load_json(record, what="entropy record", max_bytes=MAX_RECORD_BYTES)
    kind = doc.get("source") if isinstance(doc, dict) else None
    if not isinstance(kind, str):
        raise PulseFormatError("entropy record.source", "missing or not a string")
    if doc.get("chainIndex") != pulse.chain_index or doc.get("pulseIndex") != pulse.pulse_index:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="the record is for another pulse",
            expected=f"{pulse.chain_index}/{pulse.pulse_index}",
            actual=f"{doc.get('chainIndex')}/{doc.get('pulseIndex')}",
        )
    if kind in ("quantum-simulator", "quantum-hardware"):
        _check_quantum_bits(pulse, doc)
    check_claims(pulse.pulse_index, kind, doc)
    return kind


def entropy_verdict(pulse: Pulse, record: bytes) -> tuple[str | None, list[ChainError]]:
    """``check_entropy_record`` as (the source kind if it holds, the failures if not)."""
    try:
        return _entropy_kind(pulse, record), []
    except ChainError as exc:
        return None, [exc]
    except PulseFormatError as exc:
        return None, [ChainError("entropy record", pulse_index=pulse.pulse_index, detail=str(exc))]


def _check_quantum_bits(pulse: Pulse, doc: dict[str, object]) -> None:
    """The conditioned value is SHA-512 of the raw bits the record says it consumed."""
    try:
        raw = bytes.fromhex(str(doc["quantumBits"]))
        value = bytes.fromhex(str(doc["quantumValue"]))
        offsets = doc["bitOffsets"]
        assert isinstance(offsets, dict)
        count = int(offsets["end"]) - int(offsets["start"])
    except (KeyError, ValueError, TypeError, AssertionError):
        raise PulseFormatError(
            "entropy record", "quantumBits, quantumValue or bitOffsets malformed"
        ) from None
    if len(raw) != (count + 7) // 8 or count <= 0:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="quantumBits does not hold the bit range in bitOffsets",
            expected=f"{(count + 7) // 8} bytes",
            actual=f"{len(raw)} bytes",
        )
    if hashlib.sha512(raw).digest() != value:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="quantumValue is not SHA-512 of quantumBits",
        )
