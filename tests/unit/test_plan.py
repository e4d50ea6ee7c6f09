"""Pulse plans: the same plan signed twice is the same pulse; a stored plan wins."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.external import STATUS_UNREACHABLE, RoundRecord

from beacon.entropy.os_source import OsSource
from beacon.errors import TransientPublishError
from beacon.plan import Plan, PlanError, load_plan, store_plan
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.builder import BuildError, ChainHead, PulseSlot, plan_pulse, sign_pulse
from beacon.pulse.keys import Signer, init_identity
from tests.unit.test_builder import MINUTE, build_chain, ms

T = ms("2026-03-01T10:00:00")
ROUND = RoundRecord(chain_hash=b"\1" * 32, round=7, status_code=STATUS_UNREACHABLE, reason="test")


def _plan(signer: Signer, head: ChainHead | None, time_ms: int, n: int = 1) -> Plan:
    draw = OsSource("test").draw(1, n)
    unsigned = plan_pulse(
        head,
        time_ms=time_ms,
        period_ms=MINUTE,
        local_random_value=draw.local_random_value,
        next_local_random_value=hashlib.sha512(b"next %d" % n).digest(),
        certificate_id=bytes(signer.certificate_id),
        base_url="https://beacon.example",
    )
    return Plan(pulse=unsigned, record=draw.record, kind=draw.kind, external=ROUND.to_json())


def test_a_plan_signed_twice_is_one_pulse(signer: Signer) -> None:
    head = build_chain([T], signer)[-1].head
    plan = _plan(signer, head, T + MINUTE, 2)
    again = Plan.from_bytes(plan.to_bytes())
    assert again == plan
    first = sign_pulse(head, plan.pulse, signer)
    second = sign_pulse(head, again.pulse, signer)
    assert first.data == second.data  # deterministic: whoever signs the plan
    assert first.pulse.previous == head.output_value


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=2), "plan version"),
        (lambda d: d.update(entropySource="dice"), "unknown entropy source"),
        (lambda d: d.update(entropyRecord="e30="), "does not hash to its value"),
        (lambda d: d["pulse"].update(signatureValue="ab" * 8), "its pulse is signed"),
        (lambda d: d.pop("pulse"), "not a pulse plan"),
        (lambda d: d.update(externalRecord="not base64!"), "not a pulse plan"),
        (lambda d: d.update(externalRecord="e30="), "external record"),
    ],
)
def test_what_is_not_a_plan_is_refused(signer: Signer, change: object, message: str) -> None:
    document = json.loads(_plan(signer, None, T).to_bytes())
    change(document)  # type: ignore[operator]
    with pytest.raises(PlanError, match=message):
        Plan.from_bytes(json.dumps(document).encode())
    with pytest.raises(PlanError, match="not a pulse plan"):
        Plan.from_bytes(b"\xff not json")


def test_a_plan_is_signed_only_after_its_head(signer: Signer) -> None:
    chain = build_chain([T, T + MINUTE], signer)
    stale = _plan(signer, chain[0].head, T + MINUTE, 2)  # planned after pulse 1
    with pytest.raises(BuildError, match="does not follow pulse 1/2"):
        sign_pulse(chain[1].head, stale.pulse, signer)


def test_a_plan_names_its_certificate(signer: Signer, tmp_path: Path) -> None:
    other = init_identity(
        tmp_path / "other", name="other", now=datetime(2026, 1, 1, tzinfo=UTC), key_bits=2048
    )
    plan = _plan(other, None, T)
    with pytest.raises(BuildError, match="not this key's"):
        sign_pulse(None, plan.pulse, signer)


def test_the_stored_plan_wins(signer: Signer, tmp_path: Path) -> None:
    store = LocalDirPublisher(tmp_path / "site")
    first = _plan(signer, None, T)
    assert store_plan(store, first) == first
    assert store_plan(store, first) == first  # an idempotent retry
    second = _plan(signer, None, T + MINUTE)  # another instance's plan for pulse 1
    assert store_plan(store, second) == first  # first may have been signed: sign it
    key = layout.plan_key(1, 1, bytes(signer.certificate_id))
    assert (tmp_path / "site" / key).read_bytes() == first.to_bytes()
    assert load_plan(store, first.slot, bytes(signer.certificate_id)) == first


def test_a_plan_under_the_wrong_key_is_refused(signer: Signer, tmp_path: Path) -> None:
    store = LocalDirPublisher(tmp_path / "site")
    plan = _plan(signer, None, T)
    wrong = layout.plan_key(1, 7, bytes(signer.certificate_id))
    store.put_immutable(wrong, plan.to_bytes(), content_type="application/json")
    with pytest.raises(PlanError, match="is for pulse 1/1"):
        load_plan(store, PulseSlot(1, 7), bytes(signer.certificate_id))


def test_a_store_that_cannot_take_the_plan_signs_nothing(signer: Signer, tmp_path: Path) -> None:
    class Down(LocalDirPublisher):
        def put_immutable(self, key: str, data: bytes, *, content_type: str) -> None:
            raise TransientPublishError("connection refused")

    with pytest.raises(TransientPublishError):
        store_plan(Down(tmp_path / "site"), _plan(signer, None, T))
