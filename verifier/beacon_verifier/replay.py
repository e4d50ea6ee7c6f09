"""Replaying a chain from a site: fetch pulses in order, check them, report.

The I/O (a ``Source``) is passed in; the checks are ``checks.ChainVerifier``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from beacon_verifier import layout
from beacon_verifier.checks import ChainReport, ChainVerifier, TrustedCertificate
from beacon_verifier.errors import ChainError, CheckError, FetchError, PulseFormatError
from beacon_verifier.fetch import Source
from beacon_verifier.format import Pulse, load_json, parse_pulse

Progress = Callable[[int, int], None]

MAX_RECORD_BYTES = 64 * 1024


def certificate_lookup(source: Source) -> Callable[[bytes], TrustedCertificate | None]:
    """Find certificates on ``source`` by certificateId; None when absent or unusable."""

    def lookup(certificate_id: bytes) -> TrustedCertificate | None:
        data = source.get(layout.certificate_key(certificate_id.hex()))
        if data is None:
            return None
        try:
            cert = TrustedCertificate.from_bytes(data)
        except PulseFormatError:
            return None
        # A certificate is identified by its DER hash; a mismatch is no certificate.
        return cert if cert.certificate_id == certificate_id else None

    return lookup


def latest_pulse(source: Source) -> Pulse:
    """The pulse under ``pulse/last``. Raises ``FetchError`` when there is none."""
    data = source.get(layout.LAST_KEY)
    if data is None:
        raise FetchError(f"{source.describe()}: no {layout.LAST_KEY} (is this a beacon site?)")
    return parse_pulse(data)


@dataclass(frozen=True, slots=True)
class EntropyCheck:
    """The entropy record of a pulse: its source kind, and whether it opens localRandomValue."""

    kind: str


def check_entropy_record(pulse: Pulse, record: bytes) -> EntropyCheck:
    """SHA-512(record) must equal localRandomValue; returns the record's source kind.

    Raises ``ChainError`` (check ``entropy record``) when it does not hold, and
    ``PulseFormatError`` when the record is not a JSON object naming its source.
    """
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
    return EntropyCheck(kind=kind)


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


def replay_chain(
    source: Source,
    *,
    chain: int | None = None,
    first: int = 1,
    last: int | None = None,
    progress: Progress | None = None,
) -> ChainReport:
    """Fetch and check pulses ``first``..``last`` of ``chain`` (default: the latest chain).

    Missing pulses are reported as missing; malformed ones as failures. Raises
    ``FetchError`` only when the site itself cannot be read.
    """
    head = latest_pulse(source)
    chain = head.chain_index if chain is None else chain
    if last is None:
        if chain == head.chain_index:
            last = head.pulse_index
        else:
            data = source.get(layout.chain_last_key(chain))
            if data is None:
                raise FetchError(f"{source.describe()}: chain {chain} has no last pulse")
            last = parse_pulse(data).pulse_index
    verifier = ChainVerifier(certificates=certificate_lookup(source))
    missing_from: int | None = None
    total = max(0, last - first + 1)
    for n, index in enumerate(range(first, last + 1), 1):
        data = source.get(layout.pulse_key(chain, index))
        if data is None:
            missing_from = index if missing_from is None else missing_from
        else:
            if missing_from is not None:
                verifier.missing(missing_from, index - 1)
                missing_from = None
            _add(verifier, source, chain, index, data)
        if progress is not None:
            progress(n, total)
    if missing_from is not None:
        verifier.missing(missing_from, last)
    return verifier.report


def _add(verifier: ChainVerifier, source: Source, chain: int, index: int, data: bytes) -> None:
    try:
        pulse = parse_pulse(data)
    except PulseFormatError as exc:
        verifier.report.failures.append(ChainError("format", pulse_index=index, detail=str(exc)))
        return
    if (pulse.chain_index, pulse.pulse_index) != (chain, index):
        verifier.report.failures.append(
            ChainError(
                "location",
                pulse_index=index,
                detail="pulse is stored under another chain/index",
                expected=f"{chain}/{index}",
                actual=f"{pulse.chain_index}/{pulse.pulse_index}",
            )
        )
        return
    verifier.add(pulse)
    record = source.get(layout.entropy_record_key(chain, index), max_bytes=MAX_RECORD_BYTES)
    if record is None:
        return
    try:
        verifier.count_source(check_entropy_record(pulse, record).kind)
    except ChainError as exc:
        verifier.report.failures.append(exc)
    except PulseFormatError as exc:
        verifier.report.failures.append(
            ChainError("entropy record", pulse_index=index, detail=str(exc))
        )


def report_as_json(report: ChainReport) -> str:
    """The report as JSON text (for ``--json``)."""
    return json.dumps(
        {
            "ok": report.ok,
            "pulsesChecked": report.pulses_checked,
            "firstIndex": report.first_index,
            "lastIndex": report.last_index,
            "gaps": report.gaps,
            "certificateChanges": report.certificate_changes,
            "signaturesUnverifiable": report.signatures_unverifiable,
            "missing": [list(r) for r in report.missing],
            "sourceKinds": report.source_kinds,
            "outputVariants": report.variants,
            "failures": [failure_as_dict(f) for f in report.failures],
        },
        indent=2,
    )


def failure_as_dict(f: CheckError) -> dict[str, object]:
    """One failed check as a JSON-able dict."""
    return {
        "pulseIndex": f.pulse_index,
        "check": f.check,
        "expected": f.expected,
        "actual": f.actual,
        "detail": f.detail,
    }
