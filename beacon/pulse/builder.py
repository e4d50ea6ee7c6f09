"""Building the next pulse of a chain: pure, from (head, entropy, time, signer).

``plan_pulse`` takes the chain head (what the last pulse left behind), this
pulse's local random value (committed one period ago), the next pulse's local
random value (to commit to now), the nominal boundary time and the certificate,
and returns the unsigned pulse: every field decided. ``sign_pulse`` signs a plan
and returns the pulse, its exact bytes, and the new head. They read no clock,
draw no randomness and do no I/O, so every rule here is unit-testable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Protocol

from beacon_verifier import layout
from beacon_verifier.checks import SKIP_LINK_TYPES, unit_start
from beacon_verifier.format import (
    CIPHER_SUITE_RSA_SHA512,
    LINK_TYPES,
    STATUS_CERTIFICATE_CHANGED,
    STATUS_CHAIN_END,
    STATUS_CHAIN_START_OR_NO_PRECOMMIT,
    STATUS_GAP,
    ZERO_EXTERNAL,
    ZERO_HASH,
    External,
    ListValue,
    Pulse,
    emit_pulse,
    format_timestamp,
    output_value,
    signing_input,
)

VERSION = "2.0"
#: The signatureValue of a planned, not yet signed pulse.
UNSIGNED = b"\0"


class CoSigner(Protocol):
    """Makes a pulse's post-quantum co-signature object from S and its RSA signature."""

    def cosign(self, serialization_s: bytes, rsa_signature: bytes) -> bytes: ...


class Signer(Protocol):
    """Signs S; knows its certificateId; may co-sign (``pq``, None when it does not)."""

    @property
    def certificate_id(self) -> bytes: ...

    @property
    def pq(self) -> CoSigner | None: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    """A pulse that a later pulse may link to: its index, time and outputValue."""

    pulse_index: int
    time_ms: int
    output_value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainHead:
    """What the last pulse of a chain leaves for the next one.

    ``anchors`` holds, for hour/day/month/year, the first pulse of the unit that
    contains the last pulse: exactly what the next pulse links to.
    """

    chain_index: int
    pulse_index: int
    time_ms: int
    output_value: bytes
    certificate_id: bytes
    precommitment_value: bytes
    ended: bool
    anchors: dict[str, Anchor] = field(default_factory=dict)

    def as_anchor(self) -> Anchor:
        return Anchor(
            pulse_index=self.pulse_index, time_ms=self.time_ms, output_value=self.output_value
        )


@dataclass(frozen=True, slots=True)
class BuiltPulse:
    """A signed pulse, the exact bytes to publish, and the head it leaves."""

    pulse: Pulse
    data: bytes
    head: ChainHead
    cosignature: bytes | None = None  # the ML-DSA-65 co-signature object, when co-signing


@dataclass(frozen=True, slots=True)
class PulseSlot:
    """The chain and index of a pulse."""

    chain_index: int
    pulse_index: int

    def following(self) -> PulseSlot:
        """The slot after this one in the same chain."""
        return PulseSlot(self.chain_index, self.pulse_index + 1)


def next_slot(head: ChainHead | None, new_chain_index: int = 1) -> PulseSlot:
    """The one rule for the (chain, index) of the pulse after ``head``.

    Pulse 1 of ``new_chain_index`` with no head; pulse 1 of the next chain after
    a head that ended its chain; otherwise the next index of the head's chain.
    """
    if head is None:
        return PulseSlot(new_chain_index, 1)
    if head.ended:
        return PulseSlot(head.chain_index + 1, 1)
    return PulseSlot(head.chain_index, head.pulse_index + 1)


class BuildError(ValueError):
    """The inputs do not allow a next pulse (e.g. a time at or before the last pulse)."""


def build_pulse(
    head: ChainHead | None,
    *,
    time_ms: int,
    period_ms: int,
    local_random_value: bytes,
    next_local_random_value: bytes,
    signer: Signer,
    base_url: str,
    new_chain_index: int = 1,
    final: bool = False,
    external: External | None = None,
) -> BuiltPulse:
    """Plan and sign the pulse that follows ``head``: ``sign_pulse(plan_pulse(...))``."""
    unsigned = plan_pulse(
        head,
        time_ms=time_ms,
        period_ms=period_ms,
        local_random_value=local_random_value,
        next_local_random_value=next_local_random_value,
        certificate_id=bytes(signer.certificate_id),
        base_url=base_url,
        new_chain_index=new_chain_index,
        final=final,
        external=external,
    )
    return sign_pulse(head, unsigned, signer)


def plan_pulse(
    head: ChainHead | None,
    *,
    time_ms: int,
    period_ms: int,
    local_random_value: bytes,
    next_local_random_value: bytes,
    certificate_id: bytes,
    base_url: str,
    new_chain_index: int = 1,
    final: bool = False,
    external: External | None = None,
) -> Pulse:
    """The unsigned pulse that follows ``head`` at boundary ``time_ms``.

    With no head, or a head whose chain ended (bit 8), pulse 1 of a new chain
    (``new_chain_index``, or the ended chain's index + 1) is planned: statusCode
    bit 1 and all-zero links. Otherwise statusCode bits say what happened:
    1 when ``local_random_value`` does not open the head's precommitment, 2 when
    more than one period passed, 4 when the certificate changed, and 8 when
    ``final`` ends the chain. ``external`` is the outside value mixed in (the drand
    round of ``time_ms``, ``beacon.drand``); None: zeros. Every field but
    signatureValue (a placeholder) and outputValue (zeros) is final.

    Raises ``BuildError`` when ``time_ms`` is not a boundary after the head.
    """
    if time_ms % period_ms:
        raise BuildError(f"{time_ms} is not on a {period_ms} ms boundary")
    status = STATUS_CHAIN_END if final else 0
    new_chain = head is None or head.ended
    slot = next_slot(head, new_chain_index)
    chain, index = slot.chain_index, slot.pulse_index
    if new_chain:
        status |= STATUS_CHAIN_START_OR_NO_PRECOMMIT
        links = tuple(ListValue(uri=None, type=t, value=ZERO_HASH) for t in LINK_TYPES)
    else:
        assert head is not None
        if time_ms <= head.time_ms:
            raise BuildError(
                f"time {format_timestamp(time_ms)} is not after the last pulse "
                f"{format_timestamp(head.time_ms)}"
            )
        if hashlib.sha512(local_random_value).digest() != head.precommitment_value:
            status |= STATUS_CHAIN_START_OR_NO_PRECOMMIT
        if time_ms - head.time_ms > period_ms:
            status |= STATUS_GAP
        if certificate_id != head.certificate_id:
            status |= STATUS_CERTIFICATE_CHANGED
        targets = {"previous": head.as_anchor(), **head.anchors}
        links = tuple(
            ListValue(
                uri=layout.pulse_uri(base_url, chain, targets[t].pulse_index),
                type=t,
                value=targets[t].output_value,
            )
            for t in LINK_TYPES
        )
    return Pulse(
        uri=layout.pulse_uri(base_url, chain, index),
        version=VERSION,
        cipher_suite=CIPHER_SUITE_RSA_SHA512,
        period=period_ms,
        certificate_id=certificate_id,
        chain_index=chain,
        pulse_index=index,
        time_stamp=format_timestamp(time_ms),
        local_random_value=local_random_value,
        external=ZERO_EXTERNAL if external is None else external,
        list_values=links,
        precommitment_value=hashlib.sha512(next_local_random_value).digest(),
        status_code=status,
        signature_value=UNSIGNED,  # placeholder: S does not cover the signature
        output_value=ZERO_HASH,
    )


def sign_pulse(head: ChainHead | None, unsigned: Pulse, signer: Signer) -> BuiltPulse:
    """Sign a planned pulse that follows ``head``.

    PKCS#1 v1.5 signatures are deterministic, so the same plan signed by the
    same key gives the same bytes, whoever signs it (``beacon.plan``).

    Raises ``BuildError`` when ``unsigned`` is not the pulse after ``head`` or
    names another certificate.
    """
    follows(head, unsigned)
    new_chain = head is None or head.ended
    if unsigned.certificate_id != bytes(signer.certificate_id):
        raise BuildError(
            f"the planned pulse {unsigned.chain_index}/{unsigned.pulse_index} names "
            f"certificateId {unsigned.certificate_id.hex()[:16]}, not this key's"
        )
    signed = signing_input(unsigned)
    signature = signer.sign(signed)
    pulse = replace(
        unsigned, signature_value=signature, output_value=output_value(signed, signature)
    )
    data = emit_pulse(pulse)
    pulse = replace(pulse, raw=data)
    cosignature = None if signer.pq is None else signer.pq.cosign(signed, signature)
    return BuiltPulse(
        pulse=pulse, data=data, head=_next_head(head, pulse, new_chain), cosignature=cosignature
    )


def follows(head: ChainHead | None, unsigned: Pulse) -> None:
    """Raise ``BuildError`` unless the planned ``unsigned`` is the pulse after ``head``."""
    if head is not None and not head.ended:
        if (
            PulseSlot(unsigned.chain_index, unsigned.pulse_index) != next_slot(head)
            or unsigned.previous != head.output_value
            or unsigned.time_ms <= head.time_ms
        ):
            raise BuildError(
                f"the planned pulse {unsigned.chain_index}/{unsigned.pulse_index} does not "
                f"follow pulse {head.chain_index}/{head.pulse_index}"
            )
    elif unsigned.pulse_index != 1:
        raise BuildError(
            f"the planned pulse {unsigned.chain_index}/{unsigned.pulse_index} does not "
            "start a chain"
        )


def anchor_of(pulse: Pulse) -> Anchor:
    """``pulse`` as a link target."""
    return Anchor(
        pulse_index=pulse.pulse_index, time_ms=pulse.time_ms, output_value=pulse.output_value
    )


def head_of(pulse: Pulse, anchors: dict[str, Anchor]) -> ChainHead:
    """The head that ``pulse`` leaves, given the first pulses of its hour/day/month/year."""
    return ChainHead(
        chain_index=pulse.chain_index,
        pulse_index=pulse.pulse_index,
        time_ms=pulse.time_ms,
        output_value=pulse.output_value,
        certificate_id=pulse.certificate_id,
        precommitment_value=pulse.precommitment_value,
        ended=bool(pulse.status_code & STATUS_CHAIN_END),
        anchors=anchors,
    )


def _next_head(head: ChainHead | None, pulse: Pulse, new_chain: bool) -> ChainHead:
    me = anchor_of(pulse)
    anchors: dict[str, Anchor] = {}
    for t in SKIP_LINK_TYPES:
        if new_chain or head is None:
            anchors[t] = me
        elif unit_start(pulse.time_ms, t) == unit_start(head.time_ms, t):
            anchors[t] = head.anchors[t]
        else:
            anchors[t] = me
    return head_of(pulse, anchors)
