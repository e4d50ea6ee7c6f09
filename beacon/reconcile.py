"""Start-up reconciliation: the state is the authority on what this key has signed.

Run once this instance holds the lease, before anything is signed. It compares
the store's head with the state's head:

- they agree: continue;
- the store is behind the state, on the state's own history (a new, emptied
  or older out dir): the state's signed pulses after the store's head go back
  into the outbox and are published again, in order, before anything new. If
  the state no longer holds them all, refuse (one line naming both heads);
- the store is ahead, or holds another pulse at our head, signed with this
  key: another instance of this identity published (failover). The state
  adopts the store's head, dropping pulses that never left this machine;
  unless this state saw a pulse at or after the store's head confirmed by a
  store: then the key already signed that index, and the run refuses;
- the store's chain is signed by a certificate this data dir does not have:
  refuse, naming both certificateIds, unless ``--take-over-chain``.

After adopting, the pulses the store holds whose derived objects may be
missing (after the last time-indexed pulse, and the head itself) are queued
for publication again, so the time alias, page, index entries and ``last``
are completed. A plan found in the store for the next slot (``beacon.plan``:
left by an active that died after storing it, perhaps after signing it) is
inherited: the next pulse is that plan, signed, so the index keeps one pulse
and nothing conflicts, even under Object Lock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.format import parse_pulse
from beacon_verifier.timeindex import BOUNDS_KEY, parse_bounds

from beacon.config import Settings
from beacon.entropy import SOURCE_KINDS, EntropyDraw
from beacon.errors import BeaconError
from beacon.lease import Lease
from beacon.plan import Plan, PlanError, load_plan
from beacon.publish import Publisher
from beacon.publish.head import published_item, read_store_head
from beacon.pulse.builder import BuildError, ChainHead, PulseSlot, follows, next_slot
from beacon.state import State

log = logging.getLogger("beacon")

#: At most this many published pulses are completed after a takeover.
MAX_COMPLETE = 1000


class StoreConflictError(BeaconError):
    """The store holds a chain this state must not continue, or cannot catch up."""


@dataclass(frozen=True, slots=True)
class Reconciled:
    """``adopted``: the state took the store's head; ``inherited``: the next pulse's plan."""

    adopted: bool
    inherited: bool = False


def describe_store(settings: Settings) -> str:
    """The store, as a user would name it in one line."""
    if settings.publisher == "s3":
        return f"s3://{settings.s3_bucket}/{settings.s3_prefix.strip('/')}".rstrip("/")
    return str(settings.out_dir)


def _pos(head: ChainHead) -> tuple[int, int]:
    return (head.chain_index, head.pulse_index)


def _name(pos: tuple[int, int] | None) -> str:
    return "none" if pos is None else f"{pos[0]}/{pos[1]}"


def reconcile(
    *,
    publisher: Publisher,
    state: State,
    lease: Lease,
    settings: Settings,
    certificate_id: bytes,
    take_over: bool = False,
) -> Reconciled:
    """Make the state and the store agree; see the module docstring.

    Raises ``StoreConflictError`` when they cannot, ``LeaseLostError`` when the
    lease is gone, ``PublishError`` when the store cannot be read (retry).
    """
    lease.ensure()
    store = read_store_head(publisher, settings.chain)
    local = state.head()
    where = describe_store(settings)
    adopted = _settle(publisher, state, store, local, certificate_id, take_over, where)
    if lease.taken_from is None:
        log.info("lease: active as %s", lease.holder)
    else:
        head = state.head()
        log.info(
            "lease: took over from %s, head is pulse %s",
            lease.taken_from,
            "none" if head is None else f"{head.chain_index}/{head.pulse_index}",
        )
    head = state.head()
    slot = next_slot(head, settings.chain)
    inherited = _inherit_plan(publisher, state, head, slot, certificate_id)
    if not inherited and state.plan() is None:
        _inherit_record(publisher, state, slot)
    return Reconciled(adopted=adopted, inherited=inherited)


def _settle(
    publisher: Publisher,
    state: State,
    store: ChainHead | None,
    local: ChainHead | None,
    certificate_id: bytes,
    take_over: bool,
    where: str,
) -> bool:
    """Apply the rules; True when the state adopted the store's head."""
    if store is None and local is None:
        return False
    if store is not None:
        ours = {certificate_id} | ({local.certificate_id} if local is not None else set())
        if store.certificate_id not in ours:
            if not take_over:
                raise StoreConflictError(
                    f"{where} holds chain {store.chain_index} up to pulse {store.pulse_index} "
                    f"signed by certificateId {store.certificate_id.hex()}, not by this key "
                    f"({certificate_id.hex()}); refusing to take over that chain "
                    "(run with --take-over-chain to do it on purpose)"
                )
            _refuse_if_signed(state, store, where)
            after = next_slot(store)
            if local is not None and _pos(local) >= (after.chain_index, after.pulse_index):
                raise StoreConflictError(
                    f"{where} is at pulse {_name(_pos(store))} of another key, but this key "
                    f"already signed pulses up to {_name(_pos(local))}; refusing to sign those "
                    "indexes again"
                )
            log.warning(
                "taking over chain %d of certificateId %s at pulse %d (--take-over-chain)",
                store.chain_index,
                store.certificate_id.hex()[:16],
                store.pulse_index,
            )
            _adopt(publisher, state, store)
            return True
        if local is None:
            _adopt(publisher, state, store)
            return True
    assert local is not None
    if store is not None and _pos(store) > _pos(local):
        _adopt(publisher, state, store)
        return True
    if store is not None and _pos(store) == _pos(local):
        if store.output_value == local.output_value:
            return False
    elif _on_our_history(state, store):
        _republish(state, store, local, where)
        return False
    assert store is not None  # a None store is on every history
    _refuse_if_signed(state, store, where)
    _adopt(publisher, state, store)
    return True


def _refuse_if_signed(state: State, store: ChainHead, where: str) -> None:
    """Refuse when a store confirmed a pulse of this state at or after ``store``'s next slot."""
    published = state.published_head()
    after = next_slot(store)
    if published is not None and published >= (after.chain_index, after.pulse_index):
        raise StoreConflictError(
            f"{where} is at pulse {_name(_pos(store))} but this key already signed and "
            f"published pulses up to {_name(published)} elsewhere; refusing to sign those "
            "indexes again (point the run at that chain's store)"
        )


def _on_our_history(state: State, store: ChainHead | None) -> bool:
    """True when the store's head is a pulse this state signed (or the store is empty)."""
    if store is None:
        return True
    held = state.pulse_at(store.chain_index, store.pulse_index)
    if held is not None:
        return parse_pulse(held).output_value == store.output_value
    after = next_slot(store)
    following = state.pulse_at(after.chain_index, after.pulse_index)
    if following is None:
        return False
    if store.ended:
        return True
    links = {link.type: link.value for link in parse_pulse(following).list_values}
    return links.get("previous") == store.output_value


def _republish(state: State, store: ChainHead | None, local: ChainHead, where: str) -> None:
    """Queue the state's pulses after the store's head again, or refuse if some are gone."""
    start = (0, 0) if store is None else _pos(store)
    held = state.held_after(*start)
    contiguous = bool(held) and held[-1] == _pos(local)
    previous: tuple[int, int] | None = None if store is None else start
    for pos in held:
        if previous is None:
            contiguous = contiguous and pos[1] == 1
        else:
            contiguous = contiguous and pos in (
                (previous[0], previous[1] + 1),
                (previous[0] + 1, 1),
            )
        previous = pos
    if not contiguous:
        raise StoreConflictError(
            f"{where} is at pulse {_name(None if store is None else _pos(store))} but this "
            f"state has signed up to {_name(_pos(local))}, and no longer holds every pulse "
            "in between to publish them again; refusing to go on (point the run at that "
            "chain's store)"
        )
    moved = state.requeue_published(*start)
    if moved:
        log.warning(
            "%s is behind this state (at pulse %s, state at %s): publishing %d signed pulses again",
            where,
            _name(None if store is None else _pos(store)),
            _name(_pos(local)),
            moved,
        )


def _adopt(publisher: Publisher, state: State, store: ChainHead) -> None:
    """Continue from the store's head; queue its pulses whose derived objects may be missing."""
    dropped = state.adopt_head(store)
    if dropped:
        log.warning("lease: dropped %d unpublished pulses of this instance", dropped)
    first = store.pulse_index
    bounds_data = publisher.get(BOUNDS_KEY)
    if bounds_data is not None:
        try:
            last = parse_bounds(bounds_data).last
        except FetchError:
            last = None
        if last is not None and last.chain == store.chain_index:
            first = min(first, last.pulse + 1)
    elif store.pulse_index <= MAX_COMPLETE:
        first = 1
    first = max(first, store.pulse_index - MAX_COMPLETE + 1, 1)
    items = []
    for index in range(first, store.pulse_index + 1):
        item = published_item(publisher, store.chain_index, index)
        if item is not None and item.record:
            items.append(item)
    state.enqueue(items)
    if len(items) > 1:
        log.info(
            "completing the derived objects of %d published pulses from %d/%d",
            len(items),
            store.chain_index,
            first,
        )


def _inherit_plan(
    publisher: Publisher,
    state: State,
    head: ChainHead | None,
    slot: PulseSlot,
    certificate_id: bytes,
) -> bool:
    """Take up the plan the store holds for ``slot``, if another instance stored it.

    True when the state's plan for ``slot`` was replaced by the store's. A plan
    the state holds that the store lacks stays, to be stored at the next tick,
    unless it is for another index or another key (``beacon init --force``):
    then nobody this key can sign for stored it, and it is dropped. A stored plan
    that does not follow the head (this key planned it on another chain's pulse)
    is refused: this key may have signed it.
    """
    saved = state.plan()
    if saved is not None:
        planned = Plan.from_bytes(saved.data).pulse
        if saved.slot != slot:
            state.drop_plan()  # made for an index the chain has moved past
            saved = None
        elif planned.certificate_id != certificate_id:
            log.warning(
                "pulse %d/%d: dropping a plan of certificateId %s, not this key's",
                slot.chain_index,
                slot.pulse_index,
                planned.certificate_id.hex()[:16],
            )
            state.drop_plan()
            saved = None
    try:
        stored = load_plan(publisher, slot, certificate_id)
        if stored is not None:
            follows(head, stored.pulse)
    except (PlanError, BuildError) as exc:
        raise StoreConflictError(
            f"the store's plan for pulse {slot.chain_index}/{slot.pulse_index}: {exc}; "
            "this key may have signed it, so it signs no other pulse there"
        ) from None
    if stored is None or (saved is not None and saved.data == stored.to_bytes()):
        return False
    state.save_plan(slot.chain_index, slot.pulse_index, stored.to_bytes(), None)
    log.warning(
        "pulse %d/%d: inheriting the plan a previous active stored (it may have signed it)",
        slot.chain_index,
        slot.pulse_index,
    )
    return True


def _inherit_record(publisher: Publisher, state: State, slot: PulseSlot) -> None:
    """An entropy record stored for ``slot`` with no plan (left by a beacon of 0.1.0,
    which wrote records before pulses and stored no plans) becomes the value the
    next pulse commits to, so the pulse's own record does not conflict with it."""
    data = publisher.get(layout.entropy_record_key(slot.chain_index, slot.pulse_index))
    if data is None:
        return
    try:
        record = json.loads(data)
        kind = record["source"]
        named = (record["chainIndex"], record["pulseIndex"])
    except (ValueError, TypeError, KeyError):
        kind, named = None, None
    if kind not in SOURCE_KINDS or named != (slot.chain_index, slot.pulse_index):
        raise StoreConflictError(
            f"the entropy record of pulse {slot.chain_index}/{slot.pulse_index} in the store "
            "is not a record this beacon writes for it; refusing to sign that pulse"
        )
    log.warning(
        "pulse %d/%d: inheriting the entropy record a previous active published without "
        "its pulse or plan",
        slot.chain_index,
        slot.pulse_index,
    )
    state.commit_to(slot.chain_index, slot.pulse_index, EntropyDraw(record=data, kind=kind))
