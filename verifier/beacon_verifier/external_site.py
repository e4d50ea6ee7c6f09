"""Checking the drand externals of pulses on a site (reads; the checks are ``external``).

The hooks the commands call today (``beacon-verify pulse/chain/time``):
``pulse_verdict`` for one pulse and ``chain_verdicts`` for a range. Each returns
the verdicts and the failures to add to the command's report: an invalid
external always fails; with ``require`` a pulse without a valid external (missing,
none, or not checked for want of the BLS extra) fails too.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from beacon_verifier import layout
from beacon_verifier.errors import ChainError, FetchError, PulseFormatError, VerifierError
from beacon_verifier.external import (
    INVALID,
    MAX_RECORD_BYTES,
    NO_RECORD,
    NOT_CHECKED,
    QUICKNET,
    VALID,
    DrandChain,
    ExternalVerdict,
    check_external,
    random_value,
)
from beacon_verifier.fetch import Source
from beacon_verifier.format import ZERO_HASH, Pulse, parse_pulse

#: chain_verdicts' count of pulses not looked at (no external at either end).
NOT_EXAMINED = "not examined"


def load_pinned(path: str | None) -> DrandChain:
    """The drand chain to check against: a drand ``/info`` JSON file, or quicknet."""
    if path is None:
        return QUICKNET
    try:
        doc = json.loads(Path(path).read_bytes()[: 64 * 1024])
        return DrandChain.from_info(doc)
    except OSError as exc:
        raise FetchError(f"--drand-info {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise VerifierError(f"--drand-info {path}: {exc}") from None


def pulse_verdict(
    source: Source | None, pulse: Pulse, drand: DrandChain, *, require: bool
) -> tuple[ExternalVerdict, list[ChainError]]:
    """The external verdict of ``pulse`` (its round record read from ``source``;
    with no site to read it from, a drand external is NOT_CHECKED)."""
    wants_record = pulse.external.source_id != ZERO_HASH and pulse.external.status_code == 0
    if source is None or not wants_record:  # no GET for a pulse without a drand round
        verdict = check_external(pulse, None, drand)
        if verdict.verdict == INVALID and verdict.detail == NO_RECORD:
            verdict = ExternalVerdict(NOT_CHECKED, "no site to read its round from: pass --source")
    else:
        record = source.get(
            layout.external_key(pulse.chain_index, pulse.pulse_index), max_bytes=MAX_RECORD_BYTES
        )
        verdict = check_external(pulse, record, drand)
    failures = []
    if verdict.verdict == INVALID or (require and verdict.verdict != VALID):
        failures.append(
            ChainError(
                "external",
                pulse_index=pulse.pulse_index,
                detail=f"{verdict.verdict}: {verdict.detail}".rstrip(": "),
            )
        )
    return verdict, failures


def chain_verdicts(
    source: Source, chain: int, first: int, last: int, drand: DrandChain, *, require: bool
) -> tuple[dict[str, int], list[ChainError]]:
    """Verdict counts and failures for pulses ``first``..``last`` of ``chain``.

    Pulses the site does not have are skipped (the replay reports them missing).
    Unless ``require``, a range whose first and last pulses carry no external at
    all (e.g. NIST's) is not examined further, so replaying such a chain costs two
    more GETs, not one per pulse: counted as NOT_EXAMINED.
    """
    counts: Counter[str] = Counter()
    failures: list[ChainError] = []
    if not require and not any(_has_external(source, chain, i) for i in {first, last}):
        return {NOT_EXAMINED: last - first + 1}, []
    for index in range(first, last + 1):
        data = source.get(layout.pulse_key(chain, index))
        if data is None:
            continue
        try:
            pulse = parse_pulse(data)
        except PulseFormatError:
            continue  # the replay reports it
        verdict, found = pulse_verdict(source, pulse, drand, require=require)
        counts[verdict.verdict] += 1
        failures.extend(found)
    return dict(counts), failures


def _has_external(source: Source, chain: int, index: int) -> bool:
    data = source.get(layout.pulse_key(chain, index))
    try:
        return data is not None and parse_pulse(data).external.source_id != ZERO_HASH
    except PulseFormatError:
        return True  # let the pass look at it (the replay reports it)


def value_to_use(pulse: Pulse, verdict: ExternalVerdict) -> dict[str, Any]:
    """JSON keys for a pulse's report: the external verdict and, when it is valid,
    randomValue = SHA-512(localRandomValue || external.value), "the value to use"."""
    doc: dict[str, Any] = {"external": verdict.verdict, "externalDetail": verdict.detail}
    if verdict.round is not None:
        doc["externalRound"] = verdict.round
    if verdict.usable:
        doc["randomValue"] = random_value(pulse.local_random_value, pulse.external.value).hex()
    return doc
