"""The one report serializer: chain reports and pulse verdicts as JSON-able dicts
(what ``--json`` prints), and failures as dicts."""

from __future__ import annotations

import json
from typing import Any

from beacon_verifier.chain import ChainReport
from beacon_verifier.core import Verdict
from beacon_verifier.errors import CheckError

__all__ = ["failure_as_dict", "report_as_dict", "report_as_json", "verdict_as_dict"]


def report_as_dict(report: ChainReport) -> dict[str, Any]:
    """The report as a JSON-able dict (what ``--json`` prints)."""
    return {
        "ok": report.ok,
        "pulsesChecked": report.pulses_checked,
        "firstIndex": report.first_index,
        "lastIndex": report.last_index,
        "gaps": report.gaps,
        "certificateChanges": report.certificate_changes,
        "signaturesUnverifiable": report.signatures_unverifiable,
        "missingCount": report.missing_count,
        "missing": [list(r) for r in report.missing],
        "sourceKinds": report.source_kinds,
        "outputVariants": report.variants,
        "entropyRecords": report.entropy_records,
        "pqSignatures": report.pq_signatures,
        "externals": report.externals,
        "rawBatches": report.raw_batches,
        "notChecked": report.not_checked,
        "failureCount": report.failure_count,
        "failures": [failure_as_dict(f) for f in report.failures],
    }


def report_as_json(report: ChainReport) -> str:
    """The report as JSON text (for ``--json``)."""
    return json.dumps(report_as_dict(report), indent=2)


def failure_as_dict(f: CheckError) -> dict[str, object]:
    """One failed check as a JSON-able dict."""
    return {
        "pulseIndex": f.pulse_index,
        "check": f.check,
        "expected": f.expected,
        "actual": f.actual,
        "detail": f.detail,
    }


def verdict_as_dict(verdict: Verdict) -> dict[str, Any]:
    """One pulse's verdict as a JSON-able dict (``pulse``, ``time``, ``skiplist``, ``draw``)."""
    return {
        "ok": verdict.ok,
        "chainIndex": verdict.chain_index,
        "pulseIndex": verdict.pulse_index,
        "timeStamp": verdict.time_stamp,
        "signature": verdict.signature,
        "outputVariant": verdict.output_variant.value if verdict.output_variant else None,
        "predecessor": verdict.predecessor,
        "entropyRecord": verdict.entropy,
        "entropySource": verdict.entropy_source,
        "pqSignature": verdict.pq,
        "external": verdict.external,
        # The value to use: SHA-512(localRandomValue || external.value), only when the
        # external round is valid (nobody could predict or steer it).
        "randomValue": None if verdict.random_value is None else verdict.random_value.hex(),
        "rawBatch": verdict.raw_batch,
        "notChecked": list(verdict.not_checked),
        "failures": [failure_as_dict(f) for f in verdict.failures],
    }
