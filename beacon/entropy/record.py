"""Entropy records: the canonical JSON whose SHA-512 is a pulse's localRandomValue.

Two shapes, both JSON objects with ``"version": 1`` and ``"source"`` naming the
kind (``beacon.entropy.SOURCE_KINDS``):

- a **quantum record** (``quantum-hardware`` or ``quantum-simulator``) names the
  backend, job, batch, the bit range consumed, the qubits and shots, the
  health-test results and min-entropy estimate, the consumed raw bits, their
  conditioned value, and 512 bits from ``os.urandom``;
- an **os-fallback record** carries the 512 OS bits and the reason the quantum
  source was not used.

The OS bits are mixed in because localRandomValue hashes the whole record: the
value is then unpredictable if either the quantum bits or the OS bits are.

Every record says what it credits, in bits of *quantum* min-entropy carried
into ``quantumValue`` (``quantumMinEntropyBits``), and names the estimate and
its method (``minEntropy``, ``minEntropyMethod``, ``health.nonIid``):

- a simulator's bits come from a pseudo-random generator seeded from at most
  63 OS bits, and OS bits are not quantum: both are credited **0**, and the
  record says so in ``entropyClaim`` (``"simulated (pseudo-random)"``,
  ``"operating system CSPRNG"``);
- hardware bits are credited ``min(512, floor(H * consumed bits))``, with ``H``
  the smallest of the MCV figures and the SP 800-90B 6.3 non-IID estimate over
  the whole batch (``beacon_verifier.estimators``). That they came from the
  named IBM job is the operator's word (``entropyClaim`` says so).

Pure: callers pass in the OS bits, the time and the conditioned bits. This
module does not parse records; the verifier does (it may not import beacon).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from beacon_verifier.format import canonical_json

from beacon.entropy import (
    OS_FALLBACK,
    QUANTUM_HARDWARE,
    QUANTUM_SIMULATOR,
    EntropyDraw,
)
from beacon.entropy.extract import Conditioned
from beacon.entropy.health import HealthResult

RECORD_VERSION = 1
#: ``entropyClaim`` of each source kind: what the bits are, in plain words.
ENTROPY_CLAIMS = {
    QUANTUM_SIMULATOR: "simulated (pseudo-random)",
    QUANTUM_HARDWARE: "quantum hardware, as the operator states (job id and bits are its word)",
    OS_FALLBACK: "operating system CSPRNG (not quantum)",
}
#: ``minEntropyMethod`` of quantum records.
MIN_ENTROPY_METHOD = (
    "smallest of: SP 800-90B 6.3.1 MCV over the whole batch and per qubit, and the"
    " SP 800-90B 6.3 non-IID estimate over the whole batch in shot-major order (health.nonIid)"
)
#: Most quantum min-entropy a conditioned value (SHA-512) can carry.
MAX_CREDIT_BITS = 512
#: Bytes of ``os.urandom`` mixed into every record (512 bits).
OS_BITS_BYTES = 64
#: Longest reason string an os-fallback record keeps (longer ones are cut).
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where a batch of raw bits came from.

    ``qubits[c]`` is the physical qubit measured into classical bit ``c`` (the
    batch's column ``c``). ``harvested_at`` is the Unix time the job's result
    was received. Raises ``ValueError`` when ``shots`` is below 1, ``qubits`` is
    empty or a name is empty.
    """

    backend: str
    job_id: str
    batch_id: str
    qubits: tuple[int, ...]
    shots: int
    harvested_at: float

    def __post_init__(self) -> None:
        if not self.backend or not self.job_id or not self.batch_id:
            raise ValueError("backend, job id and batch id must be non-empty")
        if not self.qubits or self.shots < 1:
            raise ValueError("a batch needs at least one qubit and one shot")


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _timestamp(unix: float) -> str:
    """UTC time in the pulse timestamp style, to the millisecond: 2026-01-02T03:04:05.678Z."""
    dt = datetime.fromtimestamp(unix, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def credited_bits(kind: str, min_entropy_per_bit: float, bit_count: int) -> int:
    """Bits of quantum min-entropy a record of ``kind`` credits its ``quantumValue`` with.

    0 for simulated and OS bits; ``min(512, floor(H * bit_count))`` for hardware.
    """
    if kind != QUANTUM_HARDWARE:
        return 0
    return min(MAX_CREDIT_BITS, math.floor(min_entropy_per_bit * bit_count))


def _check_common(chain_index: int, pulse_index: int, os_bits: bytes) -> None:
    if chain_index < 1 or pulse_index < 1:
        raise ValueError(f"chain and pulse indices start at 1, got {chain_index}/{pulse_index}")
    if len(os_bits) != OS_BITS_BYTES:
        raise ValueError(f"need {OS_BITS_BYTES} OS bytes, got {len(os_bits)}")


def quantum_record(
    *,
    kind: str,
    chain_index: int,
    pulse_index: int,
    provenance: Provenance,
    health: HealthResult,
    conditioned: Conditioned,
    os_bits: bytes,
    batch_sha512: bytes | None = None,
    batch_bits: int | None = None,
) -> dict[str, Any]:
    """The record of a pulse whose entropy came from qubits.

    ``batch_sha512`` and ``batch_bits`` describe the whole packed batch when
    it will be published once used up (pooled hardware batches); the record
    then commits to it.

    Raises ``ValueError`` when ``kind`` is not a quantum kind, the indices are
    below 1, ``os_bits`` is not 64 bytes, the health result did not pass, or
    the health result and provenance disagree on the batch's shape.
    """
    if kind not in (QUANTUM_HARDWARE, QUANTUM_SIMULATOR):
        raise ValueError(f"{kind!r} is not a quantum source kind")
    _check_common(chain_index, pulse_index, os_bits)
    if not health.passed:
        raise ValueError(f"refusing to record a batch that failed {', '.join(health.failures)}")
    if (health.shots, health.qubits) != (provenance.shots, len(provenance.qubits)):
        raise ValueError("health result and provenance describe different batches")
    if (batch_sha512 is None) != (batch_bits is None):
        raise ValueError("batch_sha512 and batch_bits go together")
    batch: dict[str, Any] = {}
    if batch_sha512 is not None and batch_bits is not None:
        if len(batch_sha512) != 64 or batch_bits != provenance.shots * len(provenance.qubits):
            raise ValueError("batch digest or size does not fit the batch")
        batch = {"batchSha512": _hex(batch_sha512), "batchBits": batch_bits}
    return batch | {
        "version": RECORD_VERSION,
        "source": kind,
        "chainIndex": chain_index,
        "pulseIndex": pulse_index,
        "backend": provenance.backend,
        "jobId": provenance.job_id,
        "batchId": provenance.batch_id,
        "harvestedAt": _timestamp(provenance.harvested_at),
        "qubits": list(provenance.qubits),
        "shots": provenance.shots,
        "bitOrder": "shot-major",
        "bitOffsets": {"start": conditioned.start, "end": conditioned.end},
        "minEntropy": conditioned.min_entropy_per_bit,
        "minEntropyMethod": MIN_ENTROPY_METHOD,
        "quantumMinEntropyBits": credited_bits(
            kind, conditioned.min_entropy_per_bit, conditioned.bit_count
        ),
        "entropyClaim": ENTROPY_CLAIMS[kind],
        "health": health.to_dict(),
        "quantumBits": _hex(conditioned.raw),
        "quantumValue": _hex(conditioned.value),
        "osBits": _hex(os_bits),
    }


def fallback_record(
    *, chain_index: int, pulse_index: int, reason: str, os_bits: bytes
) -> dict[str, Any]:
    """The record of a pulse whose entropy came from ``os.urandom`` alone.

    ``reason`` says why (``"configured"``, or the quantum source's failure);
    it is cut to ``MAX_REASON_CHARS``. Raises ``ValueError`` as
    ``quantum_record`` does for the indices and ``os_bits``, and when
    ``reason`` is empty.
    """
    _check_common(chain_index, pulse_index, os_bits)
    if not reason:
        raise ValueError("an os-fallback record needs a reason")
    return {
        "version": RECORD_VERSION,
        "source": OS_FALLBACK,
        "chainIndex": chain_index,
        "pulseIndex": pulse_index,
        "reason": reason[:MAX_REASON_CHARS],
        "quantumMinEntropyBits": 0,
        "entropyClaim": ENTROPY_CLAIMS[OS_FALLBACK],
        "osBits": _hex(os_bits),
    }


def seal(record: dict[str, Any]) -> EntropyDraw:
    """The draw for a record: its canonical JSON bytes and its source kind.

    Raises ``ValueError`` when the record names no known source kind.
    """
    kind = record.get("source")
    if not isinstance(kind, str):
        raise ValueError("record has no source kind")
    return EntropyDraw(record=canonical_json(record), kind=kind)
