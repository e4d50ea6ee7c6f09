"""Publishing committed pulses: archives of complete days, written once, then forgotten."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest
from beacon_verifier import layout

from beacon.entropy import EntropyDraw
from beacon.publish.local import LocalDirPublisher
from beacon.publish.pipeline import archive_complete_days, publish_item
from beacon.publish.site import SiteInfo, day_page_key
from beacon.pulse.keys import Signer
from beacon.state import State
from tests.unit.test_builder import MINUTE, build_chain, ms

SITE_INFO = SiteInfo(name="test beacon", site_url="https://beacon.test", period_ms=60_000)


def draw(n: int) -> EntropyDraw:
    return EntropyDraw(record=b'{"n":%d}' % n, kind="os-fallback")


def publish_all(state: State, site: LocalDirPublisher) -> None:
    for item in state.outbox():
        publish_item(site, item, last_max_age=60, site=SITE_INFO, recent=())
        state.mark_published(item.seq, item.time_ms)
        archive_complete_days(site, state, item.time_ms, max_age=60)


def test_day_archive_written_when_the_next_day_begins(tmp_path: Path, signer: Signer) -> None:
    # Two pulses before midnight, two after; then two days later.
    times = [ms("2026-03-01T23:58:00") + n * MINUTE for n in range(4)]
    times.append(ms("2026-03-03T00:00:00"))
    chain = build_chain(times, signer)
    state = State(tmp_path / "state.sqlite")
    site = LocalDirPublisher(tmp_path / "site")
    for n, built in enumerate(chain[:4]):
        state.commit_pulse(head=built.head, pulse=built.data, draw=draw(n), next_draw=draw(n + 1))
    publish_all(state, site)

    first = site.get(layout.archive_key(date(2026, 3, 1)))
    assert first is not None
    lines = [json.loads(line) for line in gzip.decompress(first).splitlines()]
    assert [line["pulse"].encode() for line in lines] == [chain[0].data, chain[1].data]
    assert [line["entropy"] for line in lines] == ['{"n":0}', '{"n":1}']
    assert site.get(layout.archive_key(date(2026, 3, 2))) is None  # not complete yet
    assert [i.pulse_index for i in state.recent_published(10)] == [4, 3]

    state.commit_pulse(head=chain[4].head, pulse=chain[4].data, draw=draw(4), next_draw=draw(5))
    publish_all(state, site)
    second = site.get(layout.archive_key(date(2026, 3, 2)))
    assert second is not None
    pulses = [json.loads(line)["pulse"].encode() for line in gzip.decompress(second).splitlines()]
    assert pulses == [chain[2].data, chain[3].data]
    assert [i.pulse_index for i in state.recent_published(10)] == [5]


class DiesBeforeForgetting(State):
    def forget_published_before(self, time_ms: int) -> None:
        raise SystemExit("killed")


def test_archiving_again_after_a_crash_is_harmless(tmp_path: Path, signer: Signer) -> None:
    chain = build_chain([ms("2026-03-01T23:59:00"), ms("2026-03-02T00:00:00")], signer)
    path = tmp_path / "state.sqlite"
    state = State(path)
    site = LocalDirPublisher(tmp_path / "site")
    for n, built in enumerate(chain):
        state.commit_pulse(head=built.head, pulse=built.data, draw=draw(n), next_draw=draw(n + 1))
    items = state.outbox()
    for item in items:
        publish_item(site, item, last_max_age=60, site=SITE_INFO, recent=())
        state.mark_published(item.seq, item.time_ms)
    state.close()
    with pytest.raises(SystemExit):
        archive_complete_days(site, DiesBeforeForgetting(path), items[-1].time_ms, max_age=60)
    key = layout.archive_key(date(2026, 3, 1))
    written = site.get(key)
    assert written is not None

    again = State(path)
    assert len(again.published_before(ms("2026-03-02T00:00:00"))) == 1  # still kept
    archive_complete_days(site, again, items[-1].time_ms, max_age=60)  # the same bytes: accepted
    assert site.get(key) == written
    assert again.published_before(ms("2026-03-02T00:00:00")) == []
    assert [i.pulse_index for i in again.recent_published(10)] == [2]


def test_items_name_the_pulses_their_skip_links_point_to(tmp_path: Path, signer: Signer) -> None:
    times = [ms("2026-12-31T23:58:00") + n * MINUTE for n in range(4)]
    chain = build_chain(times, signer)
    state = State(tmp_path / "state.sqlite")
    for n, built in enumerate(chain):
        state.commit_pulse(head=built.head, pulse=built.data, draw=draw(n), next_draw=draw(n + 1))
    items = state.outbox()
    assert items[0].links == {}  # the first pulse of a chain links nowhere
    by_index = {b.pulse.pulse_index: b.pulse for b in chain}
    for item in items[1:]:
        pulse = by_index[item.pulse_index]
        assert set(item.links) == {"hour", "day", "month", "year"}
        for unit, target in item.links.items():
            assert pulse.link(unit) == by_index[target].output_value
    assert items[3].links == {"hour": 3, "day": 3, "month": 3, "year": 3}


class Recording(LocalDirPublisher):
    """A local store that remembers the order of immutable writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def put_immutable(self, key: str, data: bytes, *, content_type: str) -> None:
        self.written.append(key)
        super().put_immutable(key, data, content_type=content_type)


def test_pq_archive_written_first_with_every_co_signature_of_the_day(
    tmp_path: Path, signer: Signer
) -> None:
    times = [ms("2026-03-01T23:57:00") + n * MINUTE for n in range(4)]
    chain = build_chain(times, signer)
    state = State(tmp_path / "state.sqlite")
    site = Recording(tmp_path / "site")
    for n, built in enumerate(chain):
        assert built.cosignature is not None
        state.commit_pulse(
            head=built.head,
            pulse=built.data,
            draw=draw(n),
            next_draw=draw(n + 1),
            cosignature=built.cosignature,
        )
    items = state.outbox()
    for item in items:
        publish_item(site, item, last_max_age=60, site=SITE_INFO, recent=())
    # Pulse 1 stays in the outbox, as if another instance had published it: the
    # archives take it, and its co-signature, from the store.
    for item in items[1:]:
        state.mark_published(item.seq, item.time_ms)
    site.written.clear()
    archive_complete_days(site, state, items[-1].time_ms, max_age=60)

    day = date(2026, 3, 1)
    pq_key, day_key = layout.pq_archive_key(day), layout.archive_key(day)
    hour_page = "html/day/2026-03-01/23.html"  # its pulses are of 23:5x
    assert site.written == [pq_key, day_key, hour_page, day_page_key(day)]
    pq = site.get(pq_key)
    assert pq is not None
    expected = b"".join(
        json.dumps(
            {"chainIndex": 1, "pqSignature": b.cosignature.decode(), "pulseIndex": i + 1},  # type: ignore[union-attr]
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for i, b in enumerate(chain[:3])
    )
    assert gzip.decompress(pq) == expected
    archive = site.get(day_key)
    assert archive is not None
    lines = [json.loads(line) for line in gzip.decompress(archive).splitlines()]
    assert [line["pulse"].encode() for line in lines] == [b.data for b in chain[:3]]
    assert all(set(line) == {"pulse", "entropy"} for line in lines)
    page = site.get(day_page_key(day))
    assert (
        page is not None and b'href="../../beacon/2.0/archive/day/2026-03-01.pq.jsonl.gz"' in page
    )


def test_a_day_without_co_signatures_has_no_pq_archive(tmp_path: Path, signer: Signer) -> None:
    chain = build_chain([ms("2026-03-01T23:59:00"), ms("2026-03-02T00:00:00")], signer)
    state = State(tmp_path / "state.sqlite")
    site = Recording(tmp_path / "site")
    for n, built in enumerate(chain):
        state.commit_pulse(head=built.head, pulse=built.data, draw=draw(n), next_draw=draw(n + 1))
    publish_all(state, site)
    day = date(2026, 3, 1)
    assert layout.archive_key(day) in site.written
    assert site.get(layout.pq_archive_key(day)) is None
    page = site.get(day_page_key(day))
    assert page is not None and b".pq.jsonl.gz" not in page
