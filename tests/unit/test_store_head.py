"""Reading the chain head back from the store, as a standby does after a takeover."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from beacon_verifier import layout

from beacon.errors import PublishError
from beacon.publish.head import complete_day, read_store_head
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.builder import BuiltPulse, ChainHead, build_pulse
from beacon.pulse.keys import Signer
from beacon.state import OutboxItem

MINUTE = 60_000
NEW_YEAR = 1_798_761_600_000  # 2027-01-01T00:00:00Z


def value(n: int) -> bytes:
    return hashlib.sha512(n.to_bytes(8, "big")).digest()


def chain(
    signer: Signer, times: list[int], *, final_at: int | None = None, period_ms: int = MINUTE
) -> list[BuiltPulse]:
    out: list[BuiltPulse] = []
    head: ChainHead | None = None
    for n, t in enumerate(times):
        built = build_pulse(
            head,
            time_ms=t,
            period_ms=period_ms,
            local_random_value=value(n),
            next_local_random_value=value(n + 1),
            signer=signer,
            base_url="https://beacon.example",
            final=n == final_at,
        )
        out.append(built)
        head = built.head
    return out


def publish(store: LocalDirPublisher, pulses: list[BuiltPulse], *, last: int | None) -> None:
    for built in pulses:
        key = layout.pulse_key(built.pulse.chain_index, built.pulse.pulse_index)
        store.put_immutable(key, built.data, content_type="application/json")
    if last is not None:
        store.put_mutable(layout.LAST_KEY, pulses[last].data, content_type="", max_age=0)


def test_nothing_published_means_no_head(tmp_path: Path) -> None:
    assert read_store_head(LocalDirPublisher(tmp_path), 1) is None


@pytest.mark.parametrize("last", [None, 0, 3, 6])
def test_the_head_and_its_anchors_equal_the_builders(
    tmp_path: Path, signer: Signer, last: int | None
) -> None:
    # Across an hour, day, month and year boundary, with the last pointer lagging.
    times = [NEW_YEAR + k * MINUTE for k in (-3, -2, -1, 0, 1, 2, 62)]
    pulses = chain(signer, times)
    store = LocalDirPublisher(tmp_path)
    publish(store, pulses, last=last)
    assert read_store_head(store, 1) == pulses[-1].head


@pytest.mark.parametrize("length", [1, 2, 4])
def test_every_prefix_of_a_chain_reads_back_as_its_head(
    tmp_path: Path, signer: Signer, length: int
) -> None:
    pulses = chain(signer, [NEW_YEAR + k * MINUTE for k in range(-2, 2)])[:length]
    store = LocalDirPublisher(tmp_path)
    publish(store, pulses, last=0)
    assert read_store_head(store, 1) == pulses[-1].head


def test_a_final_pulse_leads_into_the_next_chain(tmp_path: Path, signer: Signer) -> None:
    first = chain(signer, [NEW_YEAR, NEW_YEAR + MINUTE], final_at=1)
    assert first[-1].head.ended
    store = LocalDirPublisher(tmp_path)
    publish(store, first, last=1)
    assert read_store_head(store, 1) == first[-1].head
    second = build_pulse(
        first[-1].head,
        time_ms=NEW_YEAR + 2 * MINUTE,
        period_ms=MINUTE,
        local_random_value=value(7),
        next_local_random_value=value(8),
        signer=signer,
        base_url="https://beacon.example",
    )
    publish(store, [second], last=None)
    assert read_store_head(store, 1) == second.head


def test_a_broken_link_or_object_is_a_publish_error(tmp_path: Path, signer: Signer) -> None:
    pulses = chain(signer, [NEW_YEAR + k * MINUTE for k in range(3)])
    store = LocalDirPublisher(tmp_path)
    publish(store, pulses[1:], last=None)  # pulse 1, the hour anchor, is missing
    store.put_immutable(layout.pulse_key(1, 1), b"{}", content_type="")
    with pytest.raises(PublishError, match="pulse"):
        read_store_head(store, 1)


def test_a_day_taken_over_midway_is_completed_from_the_store(
    tmp_path: Path, signer: Signer
) -> None:
    quarter = 6 * 60 * MINUTE  # a 6-hour period: four pulses a day
    times = [NEW_YEAR + k * quarter for k in range(-1, 6)]  # 18:00 the day before .. 06:00 next
    pulses = chain(signer, times, period_ms=quarter)
    store = LocalDirPublisher(tmp_path)
    publish(store, pulses, last=None)
    for built in pulses:
        store.put_immutable(
            layout.entropy_record_key(1, built.pulse.pulse_index),
            b'{"source":"os-fallback"}',
            content_type="",
        )

    def mine(index: int) -> OutboxItem:
        built = pulses[index - 1]
        return OutboxItem(0, 1, index, built.pulse.time_ms, built.data, b"mine", "mine", {})

    day = layout.day_of(NEW_YEAR)
    # This instance published 12:00 only (it took over at noon and lost the lease again).
    completed = complete_day(store, day, [mine(4)])
    assert [i.pulse_index for i in completed] == [2, 3, 4, 5]
    assert [i.kind for i in completed] == ["os-fallback", "os-fallback", "mine", "os-fallback"]
    assert completed[0].pulse == pulses[1].data
    # With 00:00 and 18:00 its own, the hole at 06:00 and 12:00 is filled.
    assert [i.pulse_index for i in complete_day(store, day, [mine(2), mine(5)])] == [2, 3, 4, 5]
