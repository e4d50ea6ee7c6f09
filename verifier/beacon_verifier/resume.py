"""``beacon-verify chain --resume FILE``: continue an interrupted audit.

After every segment joined, ``replay.replay_chain`` calls a checkpoint; this
module saves, atomically (a temporary file in the same directory, flushed to
disk, then renamed over FILE), what the audit needs to go on:

- the audit: source, chain, first and last pulse (a resumed run must name the same);
- ``verified``: the last pulse dealt with, in order;
- the report so far (``report_as_dict``), failures and missing ranges included;
- where the chain stands for the checks that look back: the index of the last
  pulse added and of the first pulse of its hour, day, month and year (the
  skip-list links of later pulses point at them).

Resuming fetches those few pulses again (their bytes are not kept in FILE),
rebuilds the verifier as it was, and replays from ``verified + 1``: the report
at the end is the one an uninterrupted run gives. FILE is the auditor's own
record, but it is still read as untrusted JSON: a malformed one is a one-line
error, never a traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beacon_verifier import layout
from beacon_verifier.chain import ChainReport, ChainVerifier
from beacon_verifier.checks import SKIP_LINK_TYPES, SkipListTracker
from beacon_verifier.errors import ChainError, PulseFormatError, VerifierError
from beacon_verifier.fetch import Source
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, parse_pulse
from beacon_verifier.report import report_as_dict
from beacon_verifier.siteread import chain_tip

__all__ = ["STATE_VERSION", "Audit", "ResumeError", "Resumed", "load", "prepare", "rebuild", "save"]

STATE_VERSION = 1
MAX_STATE_BYTES = 16 * 1024 * 1024


class ResumeError(VerifierError):
    """A resume file that cannot be used for this audit (a usage error)."""


@dataclass(frozen=True, slots=True)
class Audit:
    """What is being audited: pulses ``first``..``last`` of ``chain`` on ``source``."""

    source: str
    chain: int
    first: int
    last: int


def save(path: Path, audit: Audit, verified: int, verifier: ChainVerifier) -> None:
    """Write the state after pulse ``verified`` atomically to ``path``."""
    skip = verifier.skip
    firsts = {
        unit: (pulse.pulse_index if isinstance(pulse, Pulse) else None)
        for unit, pulse in skip.firsts.items()
    }
    doc = {
        "version": STATE_VERSION,
        "audit": {
            "source": audit.source,
            "chain": audit.chain,
            "first": audit.first,
            "last": audit.last,
        },
        "verified": verified,
        "lastAdded": None if skip.last is None else skip.last.pulse_index,
        "firsts": firsts,
        "report": report_as_dict(verifier.report),
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> tuple[Audit, int, dict[str, Any]] | None:
    """(the audit, the last pulse verified, the state) saved in ``path``; None if no file."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ResumeError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_STATE_BYTES:
        raise ResumeError(f"{path}: larger than {MAX_STATE_BYTES} bytes: not a resume file")
    try:
        doc = json.loads(data)
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
        a = doc["audit"]
        audit = Audit(str(a["source"]), _int(a["chain"]), _int(a["first"]), _int(a["last"]))
        verified = _int(doc["verified"])
        if not audit.first - 1 <= verified <= audit.last:
            raise ValueError(f"verified {verified} is outside {audit.first}..{audit.last}")
        _report(doc["report"])  # checked now, used by ``rebuild``
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ResumeError(f"{path}: not a usable resume file ({exc})") from None
    return audit, verified, doc


def rebuild(source: Source, chain: int, doc: dict[str, Any]) -> ChainVerifier:
    """The joined verifier as it was when ``doc`` was saved: the report, and the
    pulses the checks of later pulses look back at, fetched again."""
    verifier = ChainVerifier(certificates=lambda _cid: None)  # joins check relations only
    verifier.report = _report(doc["report"])
    last = doc.get("lastAdded")
    if last is None:
        return verifier
    fetched: dict[int, Pulse] = {}

    def pulse(index: object) -> Pulse:
        i = _int(index)
        if i not in fetched:
            data = source.get(layout.pulse_key(chain, i), max_bytes=MAX_PULSE_BYTES)
            if data is None:
                raise ResumeError(f"{source.describe()}: pulse {chain}/{i} is gone since")
            try:
                fetched[i] = parse_pulse(data)
            except PulseFormatError as exc:
                raise ResumeError(f"{source.describe()}: pulse {chain}/{i}: {exc}") from None
        return fetched[i]

    skip = SkipListTracker()
    skip.last = pulse(last)
    firsts = doc.get("firsts") or {}
    for unit in SKIP_LINK_TYPES:
        index = firsts.get(unit)
        skip.firsts[unit] = None if index is None else pulse(index)
    verifier.skip = skip
    verifier.first = skip.last
    return verifier


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _counts(doc: dict[str, Any], key: str) -> dict[str, int]:
    """A verdict-count dict of the saved report (a file saved before it existed: empty)."""
    return {str(k): _int(v) for k, v in (doc.get(key) or {}).items()}


def _report(doc: dict[str, Any]) -> ChainReport:
    """``report_as_dict``'s inverse (failures come back as ``ChainError``s)."""
    report = ChainReport(
        pulses_checked=_int(doc["pulsesChecked"]),
        signatures_unverifiable=_int(doc["signaturesUnverifiable"]),
        gaps=_int(doc["gaps"]),
        certificate_changes=_int(doc["certificateChanges"]),
        missing=[(_int(lo), _int(hi)) for lo, hi in doc["missing"]],
        source_kinds={str(k): _int(v) for k, v in doc["sourceKinds"].items()},
        variants={str(k): _int(v) for k, v in doc["outputVariants"].items()},
        pq_signatures={str(k): _int(v) for k, v in doc["pqSignatures"].items()},
        entropy_records=_counts(doc, "entropyRecords"),
        externals=_counts(doc, "externals"),
        raw_batches=_counts(doc, "rawBatches"),
        not_checked=_counts(doc, "notChecked"),
        failures=[
            ChainError(
                str(f["check"]),
                pulse_index=None if f["pulseIndex"] is None else _int(f["pulseIndex"]),
                expected=str(f["expected"]),
                actual=str(f["actual"]),
                detail=str(f["detail"]),
            )
            for f in doc["failures"]
        ],
        first_index=None if doc["firstIndex"] is None else _int(doc["firstIndex"]),
        last_index=None if doc["lastIndex"] is None else _int(doc["lastIndex"]),
        failure_count=_int(doc["failureCount"]),
        missing_count=_int(doc["missingCount"]),
    )
    return report


@dataclass(slots=True)
class Resumed:
    """The range left to replay, from where a resume file left it."""

    chain: int
    first: int
    last: int
    start: ChainVerifier | None
    audit: Audit

    def checkpoint(self, path: Path) -> Callable[[ChainVerifier, int], None]:
        """``replay_chain``'s checkpoint: save the state to ``path`` after each segment."""
        audit = self.audit

        def saved(verifier: ChainVerifier, done: int) -> None:
            save(path, audit, done, verifier)

        return saved


def prepare(
    path: Path, spec: str, source: Source, chain: int | None, first: int, last: int | None
) -> Resumed:
    """The audit to run with ``--resume path``: continued from ``path`` if it holds one
    (it must be of the same source, and of the same range where one is given), else
    started, its range fixed now (the chain's tip may move on meanwhile)."""
    found = load(path)
    if found is None:
        tip = chain_tip(source, chain)
        end = tip.pulse_index if last is None else last
        audit = Audit(spec, tip.chain_index, first, end)
        return Resumed(audit.chain, first, end, None, audit)
    audit, verified, doc = found
    given = (spec, chain, last)
    if (
        given[0] != audit.source
        or given[1] not in (None, audit.chain)
        or (given[2] not in (None, audit.last))
    ):
        raise ResumeError(
            f"{path} is the audit of {audit.source} chain {audit.chain} pulses "
            f"{audit.first}..{audit.last}: give the same source and range, or another file"
        )
    start = rebuild(source, audit.chain, doc)
    return Resumed(audit.chain, verified + 1, audit.last, start, audit)
