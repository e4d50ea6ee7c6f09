"""Re-run a beacon's entropy accounting on its published raw data.

For each pulse of a range, ``audit_pulse``:

1. checks the pulse's signature (its certificate from the site) and that its
   entropy record opens localRandomValue and claims nothing it cannot
   (the one core, ``core.check_pulse``, which applies ``claims.check_claims``);
2. fetches the raw batch the record commits to (``batchSha512``), checks it
   against the record and re-derives ``quantumValue`` from the stated bit
   range (``batch.check_raw_batch``);
3. re-runs the health tests and the SP 800-90B 6.3 estimators on the whole
   batch (``beacon_verifier.health``: the code the beacon credited it with),
   compares the figures with the record's, and re-computes the credit:
   0 bits for simulated and OS bits, ``min(512, floor(H * consumed bits))``
   for hardware;
4. reports the claimed and the re-estimated min-entropy side by side.

What this cannot establish, and says so: that an IBM job id is the job that
ran, and that the bits came from that job. That is the operator's word.

Needs numpy (the ``entropy`` extra); bounded reads only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beacon_verifier import layout
from beacon_verifier.archive import MAX_RECORD_BYTES
from beacon_verifier.batch import check_raw_batch
from beacon_verifier.core import Policy, check_pulse
from beacon_verifier.errors import ChainError, FetchError, PulseFormatError
from beacon_verifier.fetch import Source, TooLargeError
from beacon_verifier.format import MAX_PULSE_BYTES, load_json, parse_pulse
from beacon_verifier.health import HealthConfig, run_health_tests
from beacon_verifier.siteread import gather_evidence, read_descriptor

__all__ = ["OPERATORS_WORD", "EntropyAudit", "PulseEntropy", "audit_range", "summary"]

#: Largest raw batch re-run: 1 MiB holds 8.4 Mbit, three times IBM's default job
#: (127 x 20,000); the estimators need about 30 bytes of memory per bit.
MAX_BATCH_BYTES = 1 << 20
#: Most quantum min-entropy a conditioned value (SHA-512) can carry.
MAX_CREDIT_BITS = 512
#: Said in every report.
OPERATORS_WORD = (
    "not checkable by anyone but the operator: that an IBM job id is the job that ran, "
    "and that the bits came from that job"
)
_HARDWARE = "quantum-hardware"
_QUANTUM = ("quantum-simulator", _HARDWARE)
#: The audit is of entropy records: a pulse without one fails.
_ENTROPY_REQUIRED = Policy(require_entropy=True)


@dataclass(slots=True)
class PulseEntropy:
    """One pulse's entropy claim next to what re-running the estimates gives."""

    chain: int
    pulse: int
    kind: str | None = None
    claimed_bits: int | None = None  # quantumMinEntropyBits as the record states it
    estimated_bits: int | None = None  # the same, recomputed from the raw batch
    claimed_per_bit: float | None = None  # the record's minEntropy
    estimated_per_bit: float | None = None  # re-run: smallest of MCV and non-IID figures
    weakest: str | None = None  # the estimator that gave the smallest non-IID figure
    batch_id: str | None = None
    raw: str = "none"  # "re-run", "not published yet", "none cited", "missing"
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No failure: signature, record, raw batch and accounting all hold."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON form (camelCase keys)."""
        return {
            "chainIndex": self.chain,
            "pulseIndex": self.pulse,
            "ok": self.ok,
            "source": self.kind,
            "claimedBits": self.claimed_bits,
            "estimatedBits": self.estimated_bits,
            "claimedPerBit": self.claimed_per_bit,
            "estimatedPerBit": self.estimated_per_bit,
            "weakestEstimator": self.weakest,
            "batchId": self.batch_id,
            "rawData": self.raw,
            "failures": list(self.failures),
        }


class EntropyAudit:
    """Audits pulses of one site, fetching each raw batch once (pooled batches serve many)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        # Co-signatures are `chain`'s and `pulse`'s business: not fetched here, so not
        # required either (the core names them "not checked").
        self._descriptor = dataclasses.replace(read_descriptor(source), cosignatures=None)
        self._batches: dict[str, bytes | None] = {}
        self._reruns: dict[str, Any] = {}

    def _batch(self, batch_id: str, size: int) -> bytes | None:
        if batch_id not in self._batches:
            self._batches = {}  # keep one batch in memory: ranges read them in order
            self._reruns = {}
            self._batches[batch_id] = self.source.get(layout.batch_key(batch_id), max_bytes=size)
        return self._batches[batch_id]

    def audit_pulse(self, chain: int, index: int) -> PulseEntropy:
        """Audit pulse ``chain``/``index``; failures are reported, fetch errors raised."""
        out = PulseEntropy(chain=chain, pulse=index)
        data = self.source.get(layout.pulse_key(chain, index), max_bytes=MAX_PULSE_BYTES)
        if data is None:
            out.failures.append("pulse not published")
            return out
        try:
            pulse = parse_pulse(data)
        except PulseFormatError as exc:
            out.failures.append(f"pulse malformed: {exc}")
            return out
        # The pulse, its record and its raw batch, checked by the one core under what
        # the site promises; the re-run of the accounting below comes on top.
        evidence = gather_evidence(self.source, pulse, cosignatures=False, predecessor=False)
        policy = self._descriptor.policy_for(chain, index, _ENTROPY_REQUIRED)
        verdict = check_pulse(evidence, policy)
        out.failures += [f.describe() for f in verdict.failures]
        if verdict.signature != "valid" and not verdict.failures:
            out.failures.append(f"signature {verdict.signature} (no certificate on the site)")
        record = evidence.entropy
        if verdict.entropy != "valid" or not isinstance(record, bytes):
            return out
        out.kind = verdict.entropy_source
        doc = load_json(record, what="entropy record", max_bytes=MAX_RECORD_BYTES)
        assert isinstance(doc, dict)  # the core parsed it as an object
        self._account(out, doc, record)
        return out

    def _account(self, out: PulseEntropy, doc: dict[str, Any], record: bytes) -> None:
        claimed = doc.get("quantumMinEntropyBits")
        out.claimed_bits = claimed if isinstance(claimed, int) else None
        per_bit = doc.get("minEntropy")
        out.claimed_per_bit = float(per_bit) if isinstance(per_bit, int | float) else None
        if out.kind not in _QUANTUM:
            out.estimated_bits = 0
            return
        if "batchSha512" not in doc:
            out.raw = "none cited"
            if out.kind == _HARDWARE:
                out.failures.append("no raw batch cited: the estimates cannot be re-run")
            else:
                out.estimated_bits = 0
            return
        batch_id = str(doc["batchId"])
        out.batch_id = batch_id
        size = (int(doc["batchBits"]) + 7) // 8
        if size > MAX_BATCH_BYTES:
            out.raw = "too large"
            out.failures.append(
                f"raw batch of {size} bytes: this verifier re-runs at most {MAX_BATCH_BYTES}"
            )
            return
        try:
            batch = self._batch(batch_id, size)
        except TooLargeError:
            out.raw = "missing"
            out.failures.append(
                f"raw batch {batch_id} is larger than batchBits says ({size} bytes)"
            )
            return
        if batch is None:
            out.raw = "not published yet"  # published once its last pulse is out
            return
        try:
            check_raw_batch(record, batch, pulse_index=out.pulse)
        except (ChainError, PulseFormatError) as exc:
            out.raw = "missing"
            out.failures.append(str(exc))
            return
        out.raw = "re-run"
        health = self._rerun(batch_id, batch, doc)
        if health is None:
            out.failures.append("the record's shots, qubits or health settings are malformed")
            return
        h = float(health.min_entropy)
        out.estimated_per_bit = h
        if health.non_iid is not None and health.non_iid_min_entropy <= h:
            out.weakest = str(health.non_iid["weakest"])
        else:  # a per-qubit or whole-batch most-common-value figure is lower
            out.weakest = "mostCommonValue (4.4 check)"
        offsets = doc["bitOffsets"]
        count = int(offsets["end"]) - int(offsets["start"])
        out.estimated_bits = (
            min(MAX_CREDIT_BITS, math.floor(h * count)) if out.kind == _HARDWARE else 0
        )
        if health.to_dict() != doc.get("health"):
            out.failures.append("the record's health figures are not what its raw batch gives")
        if not health.passed:
            out.failures.append(
                "the raw batch fails its health tests: " + ", ".join(health.failures)
            )
        if out.claimed_per_bit is not None and out.claimed_per_bit > h:
            out.failures.append(f"minEntropy {out.claimed_per_bit} per bit; re-run gives {h}")
        if out.claimed_bits is not None and out.claimed_bits > out.estimated_bits:
            out.failures.append(
                f"credits {out.claimed_bits} bits; re-run allows {out.estimated_bits}"
            )

    def _rerun(self, batch_id: str, batch: bytes, doc: dict[str, Any]) -> Any:
        if batch_id in self._reruns:
            return self._reruns[batch_id]
        try:
            shots, qubits = int(doc["shots"]), len(doc["qubits"])
            settings = doc["health"]
            config = HealthConfig(
                claimed_min_entropy=float(settings["claimedMinEntropy"]),
                alpha_exponent=int(settings["alphaExponent"]),
                apt_window=int(settings["adaptiveProportion"]["window"]),
            )
            if shots * qubits != int(doc["batchBits"]):
                raise ValueError("shots x qubits is not batchBits")
            packed = np.frombuffer(batch, dtype=np.uint8)
            bits = np.unpackbits(packed, count=shots * qubits, bitorder="big")
            result = run_health_tests(np.ascontiguousarray(bits.reshape(shots, qubits)), config)
        except (KeyError, TypeError, ValueError):
            result = None
        self._reruns[batch_id] = result
        return result


def audit_range(source: Source, chain: int, first: int, last: int) -> list[PulseEntropy]:
    """``audit_pulse`` for pulses ``first..last`` of ``chain``, in order."""
    if last < first:
        raise FetchError(f"empty range {first}..{last}")
    audit = EntropyAudit(source)
    return [audit.audit_pulse(chain, i) for i in range(first, last + 1)]


def summary(results: list[PulseEntropy]) -> dict[str, Any]:
    """The report's JSON form."""
    return {
        "ok": all(r.ok for r in results),
        "pulses": [r.to_dict() for r in results],
        "rerun": sum(r.raw == "re-run" for r in results),
        "operatorsWord": OPERATORS_WORD,
    }
