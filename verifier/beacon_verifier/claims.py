"""What an entropy record may claim about its randomness, checked without its raw data.

Every command that checks an entropy record (through ``replay``'s entropy
verdict) applies these rules; ``beacon-verify entropy`` goes further and
re-runs the estimators on the published raw batch (``beacon_verifier.audit``).

- Simulated and OS bits carry no quantum min-entropy: a ``quantum-simulator``
  or ``os-fallback`` record that credits any (``quantumMinEntropyBits``) fails.
- A ``quantum-hardware`` record must commit to its whole raw batch
  (``batchId``, ``batchSha512``, ``batchBits``), so that anyone can re-run the
  health tests and estimates; one that does not fails. Its consumed bits may
  not be constant, and it may not credit more than its own per-bit estimate
  times the bits it consumed, nor more than 512 bits.

What no check can settle: that the IBM job id names the job that ran, and
that the bits came from that job. That remains the operator's word.

Standard library only.
"""

from __future__ import annotations

import math
from typing import Any

from beacon_verifier.errors import ChainError

__all__ = ["KIND_WORDS", "check_claims", "kind_words"]

#: Each source kind in plain words, for reports: a simulator is never just "quantum".
KIND_WORDS = {
    "quantum-simulator": "simulated quantum circuit, pseudo-random, 0 quantum bits credited",
    "quantum-hardware": "quantum hardware, as the operator states",
    "os-fallback": "operating system CSPRNG, not quantum",
}


def kind_words(kind: str) -> str:
    """``kind`` with its plain words: ``quantum-simulator (simulated quantum circuit, ...)``."""
    words = KIND_WORDS.get(kind)
    return kind if words is None else f"{kind} ({words})"


_HARDWARE = "quantum-hardware"
_NOT_QUANTUM = ("quantum-simulator", "os-fallback")
_MAX_CREDIT = 512


def _fail(pulse_index: int, detail: str) -> ChainError:
    return ChainError("entropy record", pulse_index=pulse_index, detail=detail)


def check_claims(pulse_index: int, kind: str, doc: dict[str, Any]) -> None:
    """Raise ``ChainError`` (check ``entropy record``) when the record claims what it cannot.

    ``doc`` is the parsed record of source ``kind``; a quantum record's
    ``quantumBits`` and ``bitOffsets`` have been checked for shape already.
    """
    credited = doc.get("quantumMinEntropyBits")
    if credited is not None and (not isinstance(credited, int) or isinstance(credited, bool)):
        raise _fail(pulse_index, "quantumMinEntropyBits is not an integer")
    if kind in _NOT_QUANTUM:
        if credited:
            raise _fail(
                pulse_index,
                f"a {kind} record credits {credited} bits of quantum min-entropy; "
                "simulated and OS bits carry 0 bits",
            )
        return
    if kind != _HARDWARE:
        return
    if not all(key in doc for key in ("batchId", "batchSha512", "batchBits")):
        raise _fail(
            pulse_index,
            "a quantum-hardware record must commit to its whole raw batch "
            "(batchId, batchSha512, batchBits): without it nobody can re-run its estimates",
        )
    raw = bytes.fromhex(str(doc["quantumBits"]))
    offsets = doc["bitOffsets"]
    count = int(offsets["end"]) - int(offsets["start"])
    ones = sum(int(b).bit_count() for b in raw)
    if ones in (0, count):
        raise _fail(pulse_index, f"the {count} consumed bits are all {1 if ones else 0}")
    if credited is not None:
        per_bit = doc.get("minEntropy")
        if not isinstance(per_bit, int | float) or not 0 < per_bit <= 1:
            raise _fail(pulse_index, "minEntropy is missing or not in (0, 1]")
        allowed = min(_MAX_CREDIT, math.floor(per_bit * count))
        if credited > allowed:
            raise _fail(
                pulse_index,
                f"the record credits {credited} bits of quantum min-entropy; "
                f"{count} bits at {per_bit} per bit allow {allowed}",
            )
