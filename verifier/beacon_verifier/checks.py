"""Checks on pulses: one pulse, a pair of consecutive pulses, and a chain replay.

Every check raises a ``CheckError`` subclass naming the pulse, the check, and
the expected and actual values; ``verify_pulse`` and ``ChainVerifier`` collect
those into reports. Inputs are already-parsed pulses and certificate bytes; this
module fetches nothing and reads no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from beacon_verifier.errors import ChainError, CheckError, PulseFormatError, SignatureError
from beacon_verifier.format import (
    CIPHER_SUITE_RSA_SHA512,
    LINK_TYPES,
    STATUS_CERTIFICATE_CHANGED,
    STATUS_CHAIN_END,
    STATUS_CHAIN_START_OR_NO_PRECOMMIT,
    STATUS_GAP,
    ZERO_HASH,
    OutputVariant,
    Pulse,
    certificate_der,
    output_value,
    signing_input,
)

SKIP_LINK_TYPES = LINK_TYPES[1:]  # hour, day, month, year


def _short(value: bytes) -> str:
    text = value.hex().upper()
    return text if len(text) <= 24 else f"{text[:16]}…{text[-8:]}"


# --- single pulse -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedCertificate:
    """A certificate with its certificateId and RSA public key, parsed once."""

    certificate_id: bytes
    public_key: rsa.RSAPublicKey
    der: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> TrustedCertificate:
        """Parse PEM (leniently) or DER. Raises ``PulseFormatError`` (field ``certificate``)."""
        der = certificate_der(data)
        key = x509.load_der_x509_certificate(der).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise PulseFormatError("certificate", "cipherSuite 0 needs an RSA key")
        return cls(certificate_id=hashlib.sha512(der).digest(), public_key=key, der=der)


def check_certificate_id(pulse: Pulse, certificate: TrustedCertificate) -> None:
    """The pulse names this certificate: certificateId == SHA-512(DER)."""
    if pulse.certificate_id != certificate.certificate_id:
        raise SignatureError(
            "certificateId",
            pulse_index=pulse.pulse_index,
            expected=_short(certificate.certificate_id),
            actual=_short(pulse.certificate_id),
        )


def check_signature(
    pulse: Pulse, certificate: TrustedCertificate, signed: bytes | None = None
) -> None:
    """signatureValue is an RSA PKCS#1 v1.5 / SHA-512 signature over S (cipherSuite 0)."""
    if pulse.cipher_suite != CIPHER_SUITE_RSA_SHA512:
        raise SignatureError(
            "cipherSuite",
            pulse_index=pulse.pulse_index,
            expected=str(CIPHER_SUITE_RSA_SHA512),
            actual=str(pulse.cipher_suite),
        )
    try:
        certificate.public_key.verify(
            pulse.signature_value,
            signed if signed is not None else signing_input(pulse),
            padding.PKCS1v15(),
            hashes.SHA512(),
        )
    except InvalidSignature:
        raise SignatureError(
            "signature",
            pulse_index=pulse.pulse_index,
            detail=f"not a valid signature by certificate {_short(certificate.certificate_id)}",
        ) from None


def check_output_value(pulse: Pulse, signed: bytes | None = None) -> OutputVariant:
    """outputValue == SHA-512(S ‖ signature); also recognises INMETRO's length-prefixed variant.

    Returns the variant that matched; raises ``SignatureError`` when neither does.
    """
    s = signed if signed is not None else signing_input(pulse)
    expected = output_value(s, pulse.signature_value)
    if expected == pulse.output_value:
        return OutputVariant.NIST
    if output_value(s, pulse.signature_value, OutputVariant.INMETRO) == pulse.output_value:
        return OutputVariant.INMETRO
    raise SignatureError(
        "outputValue",
        pulse_index=pulse.pulse_index,
        expected=_short(expected),
        actual=_short(pulse.output_value),
    )


def check_chain_start(pulse: Pulse) -> None:
    """Pulse 1 of a chain has statusCode bit 1 and all-zero links."""
    if pulse.pulse_index != 1:
        return
    if not pulse.status_code & STATUS_CHAIN_START_OR_NO_PRECOMMIT:
        raise ChainError(
            "statusCode",
            pulse_index=1,
            detail="pulse 1 of a chain must set bit 1",
            expected="bit 1 set",
            actual=str(pulse.status_code),
        )
    for lv in pulse.list_values:
        if lv.value != ZERO_HASH:
            raise ChainError(
                f"{lv.type} link",
                pulse_index=1,
                detail="pulse 1 of a chain links nothing",
                expected="zeros",
                actual=_short(lv.value),
            )


@dataclass(frozen=True, slots=True)
class PulseReport:
    """What ``verify_pulse`` found: which checks ran and which failed."""

    chain_index: int
    pulse_index: int
    time_stamp: str
    output_variant: OutputVariant | None
    signature: str  # "valid", "invalid" or "unverifiable"
    failures: tuple[CheckError, ...]

    @property
    def ok(self) -> bool:
        return not self.failures and self.signature == "valid"


def verify_pulse(pulse: Pulse, certificate: TrustedCertificate | None) -> PulseReport:
    """Run every single-pulse check, collecting failures instead of stopping at the first.

    Without a certificate the signature is reported ``unverifiable`` and
    everything else is still checked.
    """
    signed = signing_input(pulse)
    failures: list[CheckError] = []
    signature = "unverifiable"
    if certificate is not None:
        signature = "valid"
        try:
            check_certificate_id(pulse, certificate)
            check_signature(pulse, certificate, signed)
        except CheckError as exc:
            failures.append(exc)
            signature = "invalid"
    variant: OutputVariant | None = None
    try:
        variant = check_output_value(pulse, signed)
    except CheckError as exc:
        failures.append(exc)
    try:
        check_chain_start(pulse)
    except CheckError as exc:
        failures.append(exc)
    return PulseReport(
        chain_index=pulse.chain_index,
        pulse_index=pulse.pulse_index,
        time_stamp=pulse.time_stamp,
        output_variant=variant,
        signature=signature,
        failures=tuple(failures),
    )


# --- pairs --------------------------------------------------------------------


def expected_status_bits(previous: Pulse, current: Pulse) -> int:
    """The statusCode bits 1, 2 and 4 that ``current`` must carry given ``previous``."""
    bits = 0
    if hashlib.sha512(current.local_random_value).digest() != previous.precommitment_value:
        bits |= STATUS_CHAIN_START_OR_NO_PRECOMMIT
    if current.time_ms - previous.time_ms > current.period:
        bits |= STATUS_GAP
    if current.certificate_id != previous.certificate_id:
        bits |= STATUS_CERTIFICATE_CHANGED
    return bits


def check_pair(previous: Pulse, current: Pulse) -> list[ChainError]:
    """Check two consecutive pulses of one chain; return every failed relation.

    Relations: same chain, consecutive indexes, increasing timeStamps, the
    previous link, the precommitment (or bit 1 declaring it unopened), the gap
    bit, the certificate-change bit, and that nothing follows a chain's end.
    """
    idx = current.pulse_index
    if current.chain_index != previous.chain_index:
        return [
            ChainError(
                "chainIndex",
                pulse_index=idx,
                expected=str(previous.chain_index),
                actual=str(current.chain_index),
            )
        ]
    if idx != previous.pulse_index + 1:
        return [
            ChainError(
                "pulseIndex",
                pulse_index=idx,
                expected=str(previous.pulse_index + 1),
                actual=str(idx),
            )
        ]
    failures: list[ChainError] = []
    if current.time_ms <= previous.time_ms:
        failures.append(
            ChainError(
                "timeStamp order",
                pulse_index=idx,
                expected=f"after {previous.time_stamp}",
                actual=current.time_stamp,
            )
        )
    if current.previous != previous.output_value:
        failures.append(
            ChainError(
                "previous link",
                pulse_index=idx,
                expected=_short(previous.output_value),
                actual=_short(current.previous),
            )
        )
    if previous.status_code & STATUS_CHAIN_END:
        failures.append(
            ChainError(
                "chain end",
                pulse_index=idx,
                detail=f"pulse {previous.pulse_index} ended the chain (statusCode bit 8)",
            )
        )
    expected = expected_status_bits(previous, current)
    checked = STATUS_CHAIN_START_OR_NO_PRECOMMIT | STATUS_GAP | STATUS_CERTIFICATE_CHANGED
    wrong = (current.status_code & checked) ^ expected
    if wrong & expected & STATUS_CHAIN_START_OR_NO_PRECOMMIT:
        failures.append(
            ChainError(
                "precommitment",
                pulse_index=idx,
                detail="localRandomValue does not open the previous precommitment",
                expected=_short(previous.precommitment_value),
                actual=_short(hashlib.sha512(current.local_random_value).digest()),
            )
        )
        wrong &= ~STATUS_CHAIN_START_OR_NO_PRECOMMIT
    if wrong:
        failures.append(
            ChainError(
                "statusCode",
                pulse_index=idx,
                detail="bits 1/2/4 disagree with what the pulses show",
                expected=str(expected | (current.status_code & ~checked)),
                actual=str(current.status_code),
            )
        )
    return failures


# --- skip links ---------------------------------------------------------------


def unit_start(time_ms: int, link_type: str) -> int:
    """Start (Unix ms, UTC) of the hour/day/month/year that contains ``time_ms``."""
    t = datetime.fromtimestamp(time_ms // 1000, tz=UTC)
    if link_type == "hour":
        t = t.replace(minute=0, second=0)
    elif link_type == "day":
        t = t.replace(hour=0, minute=0, second=0)
    elif link_type == "month":
        t = t.replace(day=1, hour=0, minute=0, second=0)
    elif link_type == "year":
        t = t.replace(month=1, day=1, hour=0, minute=0, second=0)
    else:
        raise ValueError(f"not a skip-link type: {link_type}")
    return int(t.timestamp()) * 1000


@dataclass(slots=True)
class SkipListTracker:
    """Follows a chain in order and knows the first pulse of each current hour/day/month/year.

    Feed it every pulse in index order with ``advance``. Where pulses are missing
    and the first pulse of a unit may be among them, that unit is unknown and its
    link is left unchecked rather than guessed.
    """

    last: Pulse | None = None
    firsts: dict[str, Pulse | None] = field(default_factory=dict)

    def check(self, pulse: Pulse) -> list[ChainError]:
        """Check the hour/day/month/year links of ``pulse`` (the next pulse after ``last``)."""
        if self.last is None or pulse.pulse_index != self.last.pulse_index + 1:
            return []
        failures = []
        for link_type in SKIP_LINK_TYPES:
            first = self.firsts.get(link_type)
            if first is None:
                continue
            actual = pulse.link(link_type)
            if actual != first.output_value:
                failures.append(
                    ChainError(
                        f"{link_type} link",
                        pulse_index=pulse.pulse_index,
                        detail=f"must be the outputValue of pulse {first.pulse_index}, "
                        f"the first of the {link_type} containing the previous pulse",
                        expected=_short(first.output_value),
                        actual=_short(actual),
                    )
                )
        return failures

    def advance(self, pulse: Pulse) -> None:
        """Record ``pulse`` as the newest pulse of the chain."""
        last = self.last
        consecutive = (
            last is not None
            and last.chain_index == pulse.chain_index
            and pulse.pulse_index == last.pulse_index + 1
        )
        for link_type in SKIP_LINK_TYPES:
            unit = unit_start(pulse.time_ms, link_type)
            same_unit = last is not None and unit_start(last.time_ms, link_type) == unit
            if pulse.pulse_index == 1 or (consecutive and not same_unit):
                self.firsts[link_type] = pulse
            elif not same_unit:
                # A unit change across missing pulses: its first may be among them.
                self.firsts[link_type] = None
        self.last = pulse


# --- chain replay -------------------------------------------------------------

CertificateLookup = Callable[[bytes], TrustedCertificate | None]


@dataclass(slots=True)
class ChainReport:
    """What a chain replay found."""

    pulses_checked: int = 0
    signatures_unverifiable: int = 0
    gaps: int = 0
    certificate_changes: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)  # (first, last) index ranges
    source_kinds: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    failures: list[CheckError] = field(default_factory=list)
    first_index: int | None = None
    last_index: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.missing and not self.signatures_unverifiable


@dataclass(slots=True)
class ChainVerifier:
    """Replays one chain pulse by pulse, in index order, and accumulates a ``ChainReport``.

    ``certificates`` maps a certificateId to its certificate (None when it
    cannot be found: that pulse's signature is unverifiable, the rest is checked).
    """

    certificates: CertificateLookup
    report: ChainReport = field(default_factory=ChainReport)
    skip: SkipListTracker = field(default_factory=SkipListTracker)
    _cert_cache: dict[bytes, TrustedCertificate | None] = field(default_factory=dict)

    def _certificate(self, certificate_id: bytes) -> TrustedCertificate | None:
        if certificate_id not in self._cert_cache:
            self._cert_cache[certificate_id] = self.certificates(certificate_id)
        return self._cert_cache[certificate_id]

    def missing(self, first: int, last: int) -> None:
        """Note that pulses ``first``..``last`` could not be had."""
        self.report.missing.append((first, last))

    def add(self, pulse: Pulse) -> None:
        """Check ``pulse`` alone and against the pulse added before it."""
        r = self.report
        single = verify_pulse(pulse, self._certificate(pulse.certificate_id))
        r.failures.extend(single.failures)
        if single.signature == "unverifiable":
            r.signatures_unverifiable += 1
        if single.output_variant is not None:
            key = single.output_variant.value
            r.variants[key] = r.variants.get(key, 0) + 1
        previous = self.skip.last
        if previous is not None and previous.chain_index == pulse.chain_index:
            if pulse.pulse_index == previous.pulse_index + 1:
                r.failures.extend(check_pair(previous, pulse))
                r.failures.extend(self.skip.check(pulse))
            elif pulse.pulse_index <= previous.pulse_index:
                r.failures.append(
                    ChainError(
                        "pulseIndex",
                        pulse_index=pulse.pulse_index,
                        expected=f"greater than {previous.pulse_index}",
                        actual=str(pulse.pulse_index),
                    )
                )
        if pulse.status_code & STATUS_GAP:
            r.gaps += 1
        if pulse.status_code & STATUS_CERTIFICATE_CHANGED:
            r.certificate_changes += 1
        self.skip.advance(pulse)
        r.pulses_checked += 1
        if r.first_index is None:
            r.first_index = pulse.pulse_index
        r.last_index = pulse.pulse_index

    def count_source(self, kind: str) -> None:
        """Count a pulse's entropy source kind (from its verified entropy record)."""
        self.report.source_kinds[kind] = self.report.source_kinds.get(kind, 0) + 1
