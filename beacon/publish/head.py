"""Reading the published chain back: what an instance needs after a failover.

The store, not any instance's state, is the truth about a chain: pulses are
create-only, so the last pulse is the one after which no pulse exists. The
mutable ``last`` pointer is written after the pulse it names and may lag, so it
is only the starting point of a walk forward.

- ``read_store_head``: the head a standby continues from after a takeover;
- ``complete_day``: the pulses of a day that other instances published, so that
  a day archive written after a takeover holds the whole day.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date

from beacon_verifier import layout
from beacon_verifier.checks import SKIP_LINK_TYPES, unit_start
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.format import STATUS_CHAIN_END, Pulse, parse_pulse

from beacon.errors import PublishError
from beacon.publish import Publisher
from beacon.pulse.builder import Anchor, ChainHead, anchor_of, head_of
from beacon.state import OutboxItem

DAY_MS = 86_400_000

#: A store far behind its ``last`` pointer is not walked forever.
MAX_WALK = 100_000


def _pulse(publisher: Publisher, key: str) -> Pulse | None:
    data = publisher.get(key)
    if data is None:
        return None
    try:
        return parse_pulse(data)
    except PulseFormatError as exc:
        raise PublishError(f"the published {key} is not a valid pulse: {exc}") from None


def _linked_index(uri: str | None, what: str) -> int:
    tail = (uri or "").rstrip("/").rpartition("/")[2]
    if not tail.isdigit():
        raise PublishError(f"the published head's {what} link has no pulse index: {uri!r}")
    return int(tail)


def read_store_head(publisher: Publisher, chain: int) -> ChainHead | None:
    """The head of the latest chain in the store, or None when nothing is published.

    Starts from ``beacon/2.0/pulse/last`` (else pulse 1 of ``chain``) and walks
    forward while a next pulse exists, into the next chain after a final pulse.
    Raises ``PublishError`` when the store fails or holds something that is not
    a pulse.
    """
    head = _pulse(publisher, layout.LAST_KEY) or _pulse(publisher, layout.pulse_key(chain, 1))
    if head is None:
        return None
    for _ in range(MAX_WALK):
        if head.status_code & STATUS_CHAIN_END:
            following = _pulse(publisher, layout.pulse_key(head.chain_index + 1, 1))
        else:
            following = _pulse(publisher, layout.pulse_key(head.chain_index, head.pulse_index + 1))
        if following is None:
            break
        head = following
    else:
        raise PublishError(f"the store's last pointer is more than {MAX_WALK} pulses behind")
    return head_of(head, _anchors(publisher, head))


def _anchors(publisher: Publisher, head: Pulse) -> dict[str, Anchor]:
    """For each of hour/day/month/year, the first pulse of the unit that contains ``head``.

    ``head``'s own link of that type names the first pulse of the unit of the
    pulse before it: that is also ours when it lies in our unit; otherwise
    ``head`` opened a new unit.
    """
    me = anchor_of(head)
    if head.pulse_index == 1:
        return dict.fromkeys(SKIP_LINK_TYPES, me)
    links = {link.type: link for link in head.list_values}
    anchors: dict[str, Anchor] = {}
    for unit in SKIP_LINK_TYPES:
        index = _linked_index(links[unit].uri, unit)
        first = _pulse(publisher, layout.pulse_key(head.chain_index, index))
        if first is None or first.output_value != links[unit].value:
            raise PublishError(
                f"the published head's {unit} link does not match pulse {head.chain_index}/{index}"
            )
        same_unit = unit_start(first.time_ms, unit) == unit_start(head.time_ms, unit)
        anchors[unit] = anchor_of(first) if same_unit else me
    return anchors


def published_item(publisher: Publisher, chain: int, index: int) -> OutboxItem | None:
    """Pulse ``chain/index`` as published, with its entropy record and co-signature, or None.

    ``links`` is read back from the pulse's skip-list link URIs, so the pulse's
    page renders to the bytes its first publisher wrote.
    """
    pulse = _pulse(publisher, layout.pulse_key(chain, index))
    if pulse is None:
        return None
    links = {
        link.type: _linked_index(link.uri, link.type)
        for link in pulse.list_values
        if link.type in SKIP_LINK_TYPES and link.uri is not None
    }
    assert pulse.raw is not None  # parse_pulse keeps the bytes it parsed
    record = publisher.get(layout.entropy_record_key(chain, index)) or b""
    try:
        kind = str(json.loads(record).get("source", "unknown"))
    except (ValueError, AttributeError):
        kind = "unknown"
    return OutboxItem(
        seq=0,
        chain_index=chain,
        pulse_index=index,
        time_ms=pulse.time_ms,
        pulse=pulse.raw,
        record=record,
        kind=kind,
        links=links,
        cosignature=publisher.get(layout.pq_signature_key(chain, index)),
    )


def complete_day(publisher: Publisher, day: date, items: Sequence[OutboxItem]) -> list[OutboxItem]:
    """``items`` (this instance's pulses of ``day``) plus the day's pulses only the store has.

    For each chain in ``items``: the pulses before the first (back to the day's
    start), in the holes between them, and after the last (to the day's end).
    Without a takeover that costs two GETs: the pulse before the day and the one
    after it. Returns the day's pulses in time order.
    """
    start = layout.day_start_ms(day)
    found = {(i.chain_index, i.pulse_index): i for i in items}
    for chain in sorted({c for c, _ in found}):
        indexes = sorted(p for c, p in found if c == chain)
        index = indexes[0] - 1
        while index >= 1 and (item := published_item(publisher, chain, index)) is not None:
            if item.time_ms < start:
                break
            found[chain, index] = item
            index -= 1
        for index in range(indexes[0] + 1, indexes[-1]):
            if (chain, index) not in found:
                hole = published_item(publisher, chain, index)
                if hole is not None:
                    found[chain, index] = hole
        index = indexes[-1] + 1
        while (item := published_item(publisher, chain, index)) is not None:
            if item.time_ms >= start + DAY_MS:
                break
            found[chain, index] = item
            index += 1
    return sorted(found.values(), key=lambda i: (i.time_ms, i.chain_index, i.pulse_index))
