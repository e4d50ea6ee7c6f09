"""Checks on pulses: one pulse on its own, a pair of consecutive pulses, skip links.

Every check raises a ``CheckError`` subclass naming the pulse, the check, and
the expected and actual values; ``single_pulse`` collects those for one pulse.
Inputs are already-parsed pulses and certificate bytes; this module fetches
nothing and reads no clock. ``core.check_pulse`` builds the one verdict of a
pulse on these; ``chain.ChainVerifier`` replays a chain with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

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
_SKIP_LINKS = tuple(enumerate(SKIP_LINK_TYPES, 1))  # (index in listValues, type)

_PKCS1V15 = padding.PKCS1v15()
_SHA512 = hashes.SHA512()
_PREHASHED = utils.Prehashed(_SHA512)


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
    pulse: Pulse,
    certificate: TrustedCertificate,
    signed: bytes | None = None,
    digest: bytes | None = None,
) -> None:
    """signatureValue is an RSA PKCS#1 v1.5 / SHA-512 signature over S (cipherSuite 0).

    ``digest``, SHA-512 of S, spares hashing S again when the caller has it.
    """
    if pulse.cipher_suite != CIPHER_SUITE_RSA_SHA512:
        raise SignatureError(
            "cipherSuite",
            pulse_index=pulse.pulse_index,
            expected=str(CIPHER_SUITE_RSA_SHA512),
            actual=str(pulse.cipher_suite),
        )
    try:
        if digest is not None:
            certificate.public_key.verify(pulse.signature_value, digest, _PKCS1V15, _PREHASHED)
        else:
            signed = signed if signed is not None else signing_input(pulse)
            certificate.public_key.verify(pulse.signature_value, signed, _PKCS1V15, _SHA512)
    except InvalidSignature:
        raise SignatureError(
            "signature",
            pulse_index=pulse.pulse_index,
            detail=f"not a valid signature by certificate {_short(certificate.certificate_id)}",
        ) from None


def check_output_value(
    pulse: Pulse, signed: bytes | None = None, hashed: hashlib._Hash | None = None
) -> OutputVariant:
    """outputValue == SHA-512(S ‖ signature); also recognises INMETRO's length-prefixed variant.

    ``hashed``, a SHA-512 object fed S and nothing else, spares hashing S again.
    Returns the variant that matched; raises ``SignatureError`` when neither does.
    """
    s = signed if signed is not None else signing_input(pulse)
    h = hashed.copy() if hashed is not None else hashlib.sha512(s)
    h.update(pulse.signature_value)
    expected = h.digest()
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


def single_pulse(
    pulse: Pulse, certificate: TrustedCertificate | None
) -> tuple[list[CheckError], str, OutputVariant | None]:
    """The checks of one pulse on its own, as (failures, signature, variant),
    collecting failures instead of stopping at the first. Without a certificate the
    signature is ``unverifiable`` and everything else is still checked. The layer
    below ``core.check_pulse``, which adds the predecessor, entropy record,
    co-signature and external."""
    signed = signing_input(pulse)
    hashed = hashlib.sha512(signed)  # S is hashed once, for the signature and outputValue
    failures: list[CheckError] = []
    signature = "unverifiable"
    if certificate is not None:
        signature = "valid"
        try:
            check_certificate_id(pulse, certificate)
            check_signature(pulse, certificate, signed, hashed.digest())
        except CheckError as exc:
            failures.append(exc)
            signature = "invalid"
    variant: OutputVariant | None = None
    try:
        variant = check_output_value(pulse, signed, hashed)
    except CheckError as exc:
        failures.append(exc)
    try:
        check_chain_start(pulse)
    except CheckError as exc:
        failures.append(exc)
    return failures, signature, variant


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

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
_MONTH_YEAR: dict[int, tuple[int, int]] = {}


def unit_starts(time_ms: int) -> tuple[int, int, int, int]:
    """Starts (Unix ms, UTC) of the hour, day, month and year that contain ``time_ms``."""
    day = time_ms - time_ms % _DAY_MS
    month_year = _MONTH_YEAR.get(day)
    if month_year is None:
        d = _EPOCH + timedelta(days=day // _DAY_MS)
        month_year = (
            (date(d.year, d.month, 1) - _EPOCH).days * _DAY_MS,
            (date(d.year, 1, 1) - _EPOCH).days * _DAY_MS,
        )
        if len(_MONTH_YEAR) > 4096:
            _MONTH_YEAR.clear()
        _MONTH_YEAR[day] = month_year
    return (time_ms - time_ms % _HOUR_MS, day, *month_year)


def unit_start(time_ms: int, link_type: str) -> int:
    """Start (Unix ms, UTC) of the hour/day/month/year that contains ``time_ms``."""
    if link_type not in SKIP_LINK_TYPES:
        raise ValueError(f"not a skip-link type: {link_type}")
    return unit_starts(time_ms)[SKIP_LINK_TYPES.index(link_type)]


def link_failure(pulse_index: int, link_type: str, first: Pulse, actual: bytes) -> ChainError:
    """The failure of a ``link_type`` link that should hold ``first``'s outputValue."""
    return ChainError(
        f"{link_type} link",
        pulse_index=pulse_index,
        detail=f"must be the outputValue of pulse {first.pulse_index}, "
        f"the first of the {link_type} containing the previous pulse",
        expected=_short(first.output_value),
        actual=_short(actual),
    )


class _Inherited:
    """Marks a link target left by the pulses before a segment (see ``SkipListTracker``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INHERITED"

    def __reduce__(self) -> str:
        return "INHERITED"  # unpickles as the one instance


INHERITED = _Inherited()

#: A run of consecutive pulses ``first..last`` whose link held the same value.
DeferredRun = tuple[int, int, bytes]


@dataclass(slots=True)
class SkipListTracker:
    """Follows a chain in order and knows the first pulse of each current hour/day/month/year.

    Feed it every pulse in index order with ``advance``. Where pulses are missing
    and the first pulse of a unit may be among them, that unit is unknown and its
    link is left unchecked rather than guessed.

    With ``segment=True`` the tracker starts in the middle of a chain: until a
    unit changes, its first pulse lies before the segment (``INHERITED``), and
    the links that should point there are recorded in ``deferred`` for whoever
    knows the pulses before (``resolve``).
    """

    last: Pulse | None = None
    firsts: dict[str, Pulse | _Inherited | None] = field(default_factory=dict)
    segment: bool = False
    deferred: dict[str, list[DeferredRun]] = field(default_factory=dict)
    _units: tuple[Pulse | None, tuple[int, ...]] = (None, ())  # unit_starts of ``last``

    def check(self, pulse: Pulse) -> list[ChainError]:
        """Check the hour/day/month/year links of ``pulse`` (the next pulse after ``last``)."""
        last = self.last
        if last is None or pulse.pulse_index != last.pulse_index + 1:
            return []
        failures = []
        links = pulse.list_values
        firsts = self.firsts
        for i, link_type in _SKIP_LINKS:
            first = firsts.get(link_type)
            if first is None:
                continue
            actual = links[i].value
            if isinstance(first, _Inherited):
                self._defer(link_type, pulse.pulse_index, actual)
            elif actual != first.output_value:
                failures.append(link_failure(pulse.pulse_index, link_type, first, actual))
        return failures

    def _defer(self, link_type: str, index: int, actual: bytes) -> None:
        runs = self.deferred.setdefault(link_type, [])
        if runs and runs[-1][1] == index - 1 and runs[-1][2] == actual:
            runs[-1] = (runs[-1][0], index, actual)
        else:
            runs.append((index, index, actual))

    def advance(self, pulse: Pulse) -> None:
        """Record ``pulse`` as the newest pulse of the chain."""
        last = self.last
        units = unit_starts(pulse.time_ms)
        last_units = None
        if last is not None:
            known, last_units = self._units
            if known is not last:
                last_units = unit_starts(last.time_ms)
        consecutive = (
            last is not None
            and last.chain_index == pulse.chain_index
            and pulse.pulse_index == last.pulse_index + 1
        )
        firsts = self.firsts
        for i, link_type in enumerate(SKIP_LINK_TYPES):
            same_unit = last_units is not None and last_units[i] == units[i]
            if pulse.pulse_index == 1 or (consecutive and not same_unit):
                firsts[link_type] = pulse
            elif last is None and self.segment:
                firsts[link_type] = INHERITED
            elif not same_unit:
                # A unit change across missing pulses: its first may be among them.
                firsts[link_type] = None
        self.last = pulse
        self._units = (pulse, units)

    def resolve(self, segment: SkipListTracker) -> list[ChainError]:
        """Continue with ``segment``, tracked from the pulse just ``advance``d here.

        Checks the links ``segment`` deferred against the targets known here,
        then takes on its state. Returns the failed links, pulse by pulse.
        """
        failures: list[ChainError] = []
        for link_type in SKIP_LINK_TYPES:
            first = self.firsts.get(link_type)
            if isinstance(first, Pulse):
                for lo, hi, actual in segment.deferred.get(link_type, ()):
                    if actual != first.output_value:
                        failures.extend(
                            link_failure(index, link_type, first, actual)
                            for index in range(lo, hi + 1)
                        )
            if link_type in segment.firsts:
                end = segment.firsts[link_type]
                if not isinstance(end, _Inherited):
                    self.firsts[link_type] = end
        failures.sort(key=failure_order)
        self.last = segment.last
        return failures


def failure_order(failure: CheckError) -> int:
    return -1 if failure.pulse_index is None else failure.pulse_index
