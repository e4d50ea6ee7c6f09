"""The one definition of a valid pulse: ``check_pulse(evidence, policy) -> Verdict``.

Every command checks pulses here, so the same evidence gives the same verdict
whichever command is asked (``ChainVerifier`` for ``chain``, and ``pulse``,
``time``, ``skiplist`` and ``draw check``). Evidence is whatever the caller
could get hold of for one pulse:

- the pulse itself (always);
- the certificate its certificateId names;
- its entropy record, and the raw batch that record cites;
- its ML-DSA-65 co-signature and a way to find the PQ keys;
- the external (drand) round mixed into it;
- its predecessor (pulse index - 1 of the same chain).

Each piece is a value, ``None`` (looked for: the site has none), or
``NOT_FETCHED`` (not looked for). What was not looked for, or cannot be checked
by this verifier, is named in ``Verdict.not_checked``, never silently skipped
and never reported valid. What is absent is a failure only when the ``Policy``
requires it (``require_entropy``, ``require_pq``, ``require_external``); a site
descriptor (``descriptor``) turns its promises into that policy, pulse by pulse.
A raw batch not (yet) on the site is ``missing`` and named in ``not_checked``: it
is published once used up, which only a chain replay can tell (``replay``).

Pure: no fetching, no clock. Relations that need more than one predecessor
(the hour/day/month/year skip links) are the chain replay's (``checks``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from beacon_verifier.batch import check_raw_batch, cited_batch
from beacon_verifier.checks import (
    TrustedCertificate,
    check_output_value,
    check_pair,
    single_pulse,
)
from beacon_verifier.entropyrecord import entropy_verdict
from beacon_verifier.errors import ChainError, CheckError, PulseFormatError, SignatureError
from beacon_verifier.external import QUICKNET, DrandChain, check_external, random_value
from beacon_verifier.fetch import TooLargeError
from beacon_verifier.format import ZERO_EXTERNAL, OutputVariant, Pulse
from beacon_verifier.pq import PqKey, check_cosignature

__all__ = [
    "ANY",
    "NOT_FETCHED",
    "Evidence",
    "NotFetched",
    "Policy",
    "Verdict",
    "check_pulse",
    "external_verdict",
    "pq_verdict",
]


class NotFetched:
    """The type of ``NOT_FETCHED``: a piece of evidence nobody looked for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_FETCHED"

    def __reduce__(self) -> str:
        return "NOT_FETCHED"  # unpickles as the one instance


NOT_FETCHED: Final = NotFetched()

#: Verdicts of one kind of evidence.
VALID, INVALID, MISSING, UNCHECKED, NONE = "valid", "invalid", "missing", "not checked", "none"


PqKeys = Callable[[bytes], PqKey | None]


@dataclass(frozen=True, slots=True)
class Policy:
    """Which absent evidence is a failure (present evidence is always checked).
    ``ANY`` (nothing required) is the default."""

    require_entropy: bool = False
    require_pq: bool = False
    require_external: bool = False
    #: The drand chain externals are checked against (None: League of Entropy quicknet).
    drand: DrandChain | None = None


#: The policy that requires nothing beyond the pulse.
ANY = Policy()


@dataclass(slots=True)
class Evidence:
    """What is at hand to check one pulse (see the module docstring)."""

    pulse: Pulse
    certificate: TrustedCertificate | NotFetched | None = NOT_FETCHED
    entropy: bytes | NotFetched | None = NOT_FETCHED
    #: Why what the site has as the entropy record could not be read (oversized, say).
    entropy_error: str | None = None
    cosignature: bytes | NotFetched | None = NOT_FETCHED
    #: Finds vouched-for PQ keys by keyId; None: co-signatures cannot be checked.
    pq_keys: PqKeys | None = None
    external: bytes | NotFetched | None = NOT_FETCHED
    predecessor: Pulse | NotFetched | None = NOT_FETCHED
    #: The predecessor's own outputValue was checked already (a chain replay checks each
    #: pulse once); otherwise it is checked here, binding its timeStamp.
    predecessor_verified: bool = False
    raw_batch: bytes | NotFetched | None = NOT_FETCHED


@dataclass(slots=True)
class Verdict:
    """What ``check_pulse`` found. ``ok``: no failure and a verified signature."""

    chain_index: int
    pulse_index: int
    time_stamp: str
    signature: str  # valid / invalid / unverifiable
    output_variant: OutputVariant | None
    predecessor: str  # valid / invalid / not checked / none (pulse 1)
    entropy: str  # valid / invalid / missing / not checked
    entropy_source: str | None
    pq: str  # valid / invalid / missing / not checked
    external: str  # valid / invalid / missing / not checked / none
    raw_batch: str  # valid / invalid / missing / not checked / none
    raw_batch_id: str | None
    failures: list[CheckError]
    not_checked: list[str]  # "predecessor: not fetched", ...
    #: SHA-512(localRandomValue || external.value) when the external is valid: the
    #: value to use (nobody could predict or steer it); None otherwise.
    random_value: bytes | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and self.signature == VALID


def pq_verdict(
    pulse: Pulse, cosignature: bytes | None, keys: PqKeys, *, require: bool
) -> tuple[str, list[CheckError]]:
    """``("valid" | "missing" | "invalid", failures)`` for a pulse's co-signature.

    A missing co-signature is a failure only with ``require``.
    """
    if cosignature is None:
        if not require:
            return MISSING, []
        detail = "no co-signature"
        return MISSING, [
            SignatureError("pq signature", pulse_index=pulse.pulse_index, detail=detail)
        ]
    try:
        check_cosignature(pulse, cosignature, keys)
    except SignatureError as exc:
        return INVALID, [exc]
    except (PulseFormatError, TooLargeError) as exc:
        return INVALID, [
            SignatureError("pq signature", pulse_index=pulse.pulse_index, detail=str(exc))
        ]
    return VALID, []


def external_verdict(
    pulse: Pulse, evidence: bytes | NotFetched | None, policy: Policy
) -> tuple[str, list[CheckError], str | None]:
    """(verdict, failures, why not checked) for the external value mixed into ``pulse``,
    checked against ``policy.drand`` (quicknet by default) by ``external.check_external``.

    A pulse with no external source (all zeros) is ``none``; a declared missing round
    (non-zero statusCode) is ``missing``: either fails only under ``require_external``.
    A pulse claiming a valid round whose record the site does not have is ``invalid``.
    Without the BLS binding, an external is ``not checked``, never valid.
    """
    index = pulse.pulse_index
    if pulse.external == ZERO_EXTERNAL:
        verdict, detail, why = NONE, "no external source", None
    elif pulse.external.status_code == 0 and isinstance(evidence, NotFetched):
        verdict, detail, why = UNCHECKED, "round not fetched", "external: round not fetched"
    else:
        record = None if isinstance(evidence, NotFetched) else evidence
        found = check_external(pulse, record, policy.drand or QUICKNET)
        verdict, detail = found.verdict, found.detail
        why = f"external: {detail}" if verdict == UNCHECKED else None
    if verdict == INVALID:
        return INVALID, [ChainError("external", pulse_index=index, detail=detail)], None
    if verdict != VALID and policy.require_external:
        failure = ChainError("external", pulse_index=index, detail=f"required, but {detail}")
        return verdict, [failure], why
    return verdict, [], why


def check_pulse(evidence: Evidence, policy: Policy = ANY) -> Verdict:
    """Check one pulse with the evidence at hand under ``policy``: one structured verdict."""
    pulse = evidence.pulse
    index = pulse.pulse_index
    not_checked: list[str] = []
    certificate = evidence.certificate
    if isinstance(certificate, NotFetched):
        not_checked.append("signature: certificate not fetched")
        certificate = None
    failures, signature, variant = single_pulse(pulse, certificate)

    # The predecessor: every relation of two consecutive pulses.
    predecessor = evidence.predecessor
    if index == 1:
        relation = NONE  # chain start, checked by single_pulse
    elif isinstance(predecessor, NotFetched):
        relation = UNCHECKED
        not_checked.append("predecessor: not fetched")
    elif predecessor is None:
        relation = UNCHECKED
        not_checked.append(f"predecessor: pulse {index - 1} is not on the site")
    else:
        pair: list[CheckError] = list(check_pair(predecessor, pulse))
        if not evidence.predecessor_verified:
            try:
                check_output_value(predecessor)
            except CheckError as exc:
                pair.append(ChainError("predecessor", pulse_index=index, detail=exc.describe()))
        failures.extend(pair)
        relation = INVALID if pair else VALID

    # The entropy record, and the raw batch it cites.
    entropy, kind = UNCHECKED, None
    raw, batch_id = NONE, None
    record = evidence.entropy
    if evidence.entropy_error is not None:
        entropy = INVALID
        failures.append(
            ChainError("entropy record", pulse_index=index, detail=evidence.entropy_error)
        )
    elif isinstance(record, NotFetched):
        not_checked.append("entropy record: not fetched")
    elif record is None:
        entropy = MISSING
        if policy.require_entropy:
            failures.append(
                ChainError("entropy record", pulse_index=index, detail="missing, but required")
            )
    else:
        kind, found = entropy_verdict(pulse, record)
        entropy = INVALID if found else VALID
        failures.extend(found)
        if kind is not None:
            raw, batch_id = _raw_verdict(pulse, record, evidence.raw_batch, failures)
            if raw == UNCHECKED:
                not_checked.append(f"raw batch {batch_id}: not fetched")
            elif raw == MISSING:
                not_checked.append(
                    f"raw batch {batch_id}: not on the site (published once used up)"
                )

    # The co-signature.
    cosignature = evidence.cosignature
    if isinstance(cosignature, NotFetched) or evidence.pq_keys is None:
        pq = UNCHECKED
        not_checked.append("co-signature: not fetched")
        if policy.require_pq:
            failures.append(
                SignatureError("pq signature", pulse_index=index, detail="required, not checked")
            )
    else:
        pq, signed = pq_verdict(pulse, cosignature, evidence.pq_keys, require=policy.require_pq)
        failures.extend(signed)

    # The external round.
    external, outside, why = external_verdict(pulse, evidence.external, policy)
    failures.extend(outside)
    if why is not None:
        not_checked.append(why)

    return Verdict(
        chain_index=pulse.chain_index,
        pulse_index=index,
        time_stamp=pulse.time_stamp,
        signature=signature,
        output_variant=variant,
        predecessor=relation,
        entropy=entropy,
        entropy_source=kind,
        pq=pq,
        external=external,
        raw_batch=raw,
        raw_batch_id=batch_id,
        failures=failures,
        not_checked=not_checked,
        random_value=(
            random_value(pulse.local_random_value, pulse.external.value)
            if external == VALID
            else None
        ),
    )


def _raw_verdict(
    pulse: Pulse,
    record: bytes,
    batch: bytes | NotFetched | None,
    failures: list[CheckError],
) -> tuple[str, str | None]:
    """(verdict, batch id) of the raw batch a valid record cites (``none``: it cites none)."""
    if b'"batchSha512"' not in record:
        return NONE, None  # cites no batch (spares parsing the record again)
    try:
        batch_id = cited_batch(record)
    except PulseFormatError as exc:
        failures.append(ChainError("raw batch", pulse_index=pulse.pulse_index, detail=str(exc)))
        return INVALID, None
    if batch_id is None:
        return NONE, None
    if isinstance(batch, NotFetched):
        return UNCHECKED, batch_id
    if batch is None:
        return MISSING, batch_id
    try:
        check_raw_batch(record, batch, pulse_index=pulse.pulse_index)
    except ChainError as exc:
        failures.append(exc)
        return INVALID, batch_id
    except PulseFormatError as exc:
        failures.append(ChainError("raw batch", pulse_index=pulse.pulse_index, detail=str(exc)))
        return INVALID, batch_id
    return VALID, batch_id
