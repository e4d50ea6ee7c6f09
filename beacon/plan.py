"""Pulse plans: every pulse is decided, and the decision stored, before it is signed.

The key must never sign two different pulses for one index. Instances of one
identity share the key, not their state, so an active that dies after signing
pulse N but before publishing it would leave a signed pulse N that only its own
data dir holds; the standby that takes over cannot see it, and would sign a
different pulse N.

So before signing, the active writes the pulse's *plan*: the unsigned pulse with
every field decided (timeStamp, localRandomValue, external, links,
precommitmentValue, statusCode), its entropy record, and its drand round record.
The plan goes first to the state (``State.save_plan``), then to the store, create
only, under ``chain/{c}/plan/{N}/{certificateId}``. The pulse is signed only once
the store holds the plan. PKCS#1 v1.5 signatures are deterministic, so whoever
signs a plan (this instance, its restart, or a standby that takes over) gets the
same bytes: an index has one pulse even when the instance that signed it died
before anyone saw it.

A plan in the store wins. A successor signs the plan it finds for the next
index rather than one of its own; an instance whose plan write meets a different
plan signs the stored one, since its own never reached the store and so was
never signed. A successor cannot know the next value the dead active committed
to, so its following pulse opens no precommitment: statusCode bit 1 says so.

The cost: no pulse is signed while the store cannot take its plan. That is also
what keeps an operator from signing pulses that nobody can see yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beacon_verifier import layout
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.external import RoundRecord
from beacon_verifier.format import Pulse, emit_pulse, parse_pulse

from beacon.drand import ExternalMixer
from beacon.entropy import SOURCE_KINDS, EntropyDraw
from beacon.errors import (
    AlreadyPublishedError,
    BeaconError,
    LeaseLostError,
    PublishError,
    TransientPublishError,
)
from beacon.lease import Lease
from beacon.publish import Publisher
from beacon.pulse.builder import UNSIGNED, PulseSlot

log = logging.getLogger("beacon")

PLAN_VERSION = 1
#: Plans carry an entropy record (kilobytes); anything this large is not a plan.
MAX_PLAN_BYTES = 4 * 1024 * 1024
JSON = "application/json"


class PlanError(BeaconError):
    """Bytes that are not a plan this beacon writes, or a plan for another pulse."""


@dataclass(frozen=True, slots=True)
class Plan:
    """An unsigned pulse with every field decided, and the records published with it."""

    pulse: Pulse
    record: bytes
    kind: str
    external: bytes | None = None

    @property
    def slot(self) -> PulseSlot:
        return PulseSlot(self.pulse.chain_index, self.pulse.pulse_index)

    @property
    def draw(self) -> EntropyDraw:
        return EntropyDraw(record=self.record, kind=self.kind)

    @property
    def key(self) -> str:
        return layout.plan_key(
            self.pulse.chain_index, self.pulse.pulse_index, self.pulse.certificate_id
        )

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
            "version": PLAN_VERSION,
            "pulse": json.loads(emit_pulse(self.pulse))["pulse"],
            "entropySource": self.kind,
            "entropyRecord": base64.b64encode(self.record).decode(),
            "externalRecord": (
                None if self.external is None else base64.b64encode(self.external).decode()
            ),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Plan:
        """The plan in ``data``; raises ``PlanError`` when it is not one."""
        if len(data) > MAX_PLAN_BYTES:
            raise PlanError(f"a plan of {len(data)} bytes is larger than {MAX_PLAN_BYTES}")
        try:
            document = json.loads(data)
            if document["version"] != PLAN_VERSION:
                raise PlanError(f"plan version {document['version']!r} is not {PLAN_VERSION}")
            pulse = parse_pulse(json.dumps({"pulse": document["pulse"]}).encode())
            record = base64.b64decode(document["entropyRecord"], validate=True)
            external_text = document["externalRecord"]
            external = (
                None if external_text is None else base64.b64decode(external_text, validate=True)
            )
            kind = document["entropySource"]
        except (ValueError, TypeError, KeyError, binascii.Error, PulseFormatError) as exc:
            raise PlanError(f"not a pulse plan: {exc}") from None
        if kind not in SOURCE_KINDS:
            raise PlanError(f"not a pulse plan: unknown entropy source {kind!r}")
        if pulse.signature_value != UNSIGNED:
            raise PlanError("not a pulse plan: its pulse is signed")
        if hashlib.sha512(record).digest() != pulse.local_random_value:
            raise PlanError("not a pulse plan: its entropy record does not hash to its value")
        if external is not None:
            try:
                RoundRecord.from_json(external)
            except ValueError as exc:
                raise PlanError(f"not a pulse plan: {exc}") from None
        return cls(pulse=pulse, record=record, kind=kind, external=external)


def load_plan(publisher: Publisher, slot: PulseSlot, certificate_id: bytes) -> Plan | None:
    """The plan the store holds for ``slot`` under this certificate, if any."""
    data = publisher.get(layout.plan_key(slot.chain_index, slot.pulse_index, certificate_id))
    if data is None:
        return None
    plan = Plan.from_bytes(data)
    if plan.slot != slot or plan.pulse.certificate_id != certificate_id:
        raise PlanError(
            f"the plan stored for pulse {slot.chain_index}/{slot.pulse_index} is for pulse "
            f"{plan.slot.chain_index}/{plan.slot.pulse_index}"
        )
    return plan


def store_plan(publisher: Publisher, plan: Plan) -> Plan:
    """Put ``plan`` in the store (create only); return the plan to sign.

    That is ``plan``, or the different plan the store already holds for its
    pulse. Raises ``PublishError`` when the store fails (sign nothing then).
    """
    try:
        publisher.put_immutable(plan.key, plan.to_bytes(), content_type=JSON)
        return plan
    except AlreadyPublishedError:
        stored = load_plan(publisher, plan.slot, plan.pulse.certificate_id)
        if stored is None:  # a store that says "exists" and then "absent": try again later
            raise TransientPublishError(f"{plan.key} vanished after a refused write") from None
    log.warning(
        "pulse %d/%d: the store holds another plan for it (a previous active's); signing that",
        plan.slot.chain_index,
        plan.slot.pulse_index,
    )
    return stored


class PlanStore:
    """What the tick calls: the lease checked, the plan stored, an outage said once.

    ``store`` returns the plan to sign, or None when nothing may be signed now:
    the lease is lost (``on_lost``), the store cannot take the plan (try again at
    the next tick), or the store refuses it for good (``on_fatal``).
    """

    def __init__(
        self,
        publisher: Publisher,
        lease: Lease,
        external: ExternalMixer | None,
        *,
        where: str,
        on_lost: Callable[[LeaseLostError], None],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self._publisher = publisher
        self._lease = lease
        self._external = external
        self._where = where
        self._on_lost = on_lost
        self._on_fatal = on_fatal
        self._failing = False  # the store did not take the last plan

    def store(self, plan: Plan) -> Plan | None:
        try:
            self._lease.ensure()
            stored = store_plan(self._publisher, plan)
            self._keep_external(stored)
        except LeaseLostError as exc:
            self._on_lost(exc)
            return None
        except TransientPublishError as exc:
            if not self._failing:
                log.warning(
                    "not signing pulse %d/%d while the store cannot take its plan: %s",
                    plan.slot.chain_index,
                    plan.slot.pulse_index,
                    exc,
                )
                self._failing = True
            return None
        except (PublishError, PlanError) as exc:
            self._on_fatal(PublishError(f"the store {self._where} fails: {exc}"))
            return None
        if self._failing:
            log.info("the store takes plans again: signing resumes")
            self._failing = False
        return stored

    def _keep_external(self, plan: Plan) -> None:
        """The drand round record of ``plan`` is published with its pulse, as planned
        (and none when the plan has none, whatever this instance fetched)."""
        chain, index = plan.slot.chain_index, plan.slot.pulse_index
        if plan.external is None:
            if self._external is not None:
                self._external.forget(chain, index)
        elif self._external is not None:
            self._external.remember(chain, index, plan.external)
        else:  # planned by an instance that mixes drand: publish its record now
            self._publisher.put_immutable(
                layout.external_key(chain, plan.pulse.time_ms), plan.external, content_type=JSON
            )
