"""Start-up reconciliation: the state and the store agree before the first tick.

Run once this instance holds the lease, before anything is signed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from beacon_verifier.format import parse_pulse

from beacon.lease import Lease
from beacon.publish import Publisher
from beacon.publish.head import read_store_head
from beacon.pulse.builder import ChainHead, next_slot
from beacon.state import State

log = logging.getLogger("beacon")


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What start-up reconciliation changed: ``adopted`` when the state took the store's head."""

    adopted: bool


def reconcile(*, publisher: Publisher, state: State, lease: Lease, chain: int) -> Reconciled:
    """Make the state continue the chain as published.

    Raises ``LeaseLostError`` when the lease is gone, ``PublishError`` when the
    store cannot be read (the caller retries).
    """
    lease.ensure()
    published = read_store_head(publisher, chain)
    local = state.head()
    adopted = False
    if published is not None and not _state_continues(state, local, published):
        dropped = state.adopt_head(published)
        adopted = True
        if dropped:
            log.warning("lease: dropped %d unpublished pulses of this instance", dropped)
    if lease.taken_from is None:
        log.info("lease: active as %s", lease.holder)
    else:
        head = state.head()
        log.info(
            "lease: took over from %s, head is pulse %s",
            lease.taken_from,
            "none" if head is None else f"{head.chain_index}/{head.pulse_index}",
        )
    return Reconciled(adopted=adopted)


def _state_continues(state: State, local: ChainHead | None, published: ChainHead) -> bool:
    """True when this state's head is the published head or a pulse committed after it."""
    if local is None:
        return False
    if (local.chain_index, local.pulse_index) == (published.chain_index, published.pulse_index):
        return local.output_value == published.output_value
    after = next_slot(published)
    return any(
        (item.chain_index, item.pulse_index) == (after.chain_index, after.pulse_index)
        and (published.ended or _opens(item.pulse, published.output_value))
        for item in state.outbox()
    )


def _opens(pulse: bytes, previous_output: bytes) -> bool:
    links = {link.type: link.value for link in parse_pulse(pulse).list_values}
    return links.get("previous") == previous_output
