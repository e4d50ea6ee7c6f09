"""What gets written for one committed pulse, and in which order.

For each pulse: immutable objects first (entropy record, pulse, its ML-DSA-65
co-signature when the identity co-signs, its time alias, its HTML page), then
the time indexes, then the mutable pointers (`last`) and the home page, so a
reader never follows a pointer to something missing. ``publish_item`` is
idempotent: after a crash it is simply run again from the outbox (the pulse
page renders to the same bytes).

Published pulses stay in the state until their UTC day is complete (a pulse of
a later day is published); ``archive_complete_days`` then writes the day's PQ
archive (its co-signatures, when it has any), its archive and its HTML page
(all immutable), updates the list of days, and only then forgets them, so a
crash in between simply writes the same again.

The site's other pages (style sheet, script, "verify it yourself", fair draws,
find by time, the list of days) are written by ``publish_site_pages`` once per run, right after
the first pulses it publishes (so that they do not delay those pulses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import groupby

from beacon_verifier import layout
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.format import parse_pulse
from beacon_verifier.timeindex import TimeEntry

from beacon.entropy import RawBatch
from beacon.faults import failpoint
from beacon.publish import JSON, OCTETS, PEM, Publisher
from beacon.publish.archives import (
    ARCHIVE_CONTENT_TYPE,
    ArchiveItem,
    build_day_archive,
    build_pq_archive,
)
from beacon.publish.conditional import put_forward
from beacon.publish.draw_page import render_draw_page
from beacon.publish.head import complete_day
from beacon.publish.indexes import update_indexes
from beacon.publish.site import (
    CSS,
    DAY_PAGE_PREFIX,
    HTML,
    JS,
    SiteInfo,
    days_from_keys,
    render_day_pages,
    render_days_page,
    render_find_page,
    render_home,
    render_pulse_page,
    render_script,
    render_style,
    render_verify_page,
)
from beacon.pulse.keys import Signer
from beacon.state import OutboxItem, State


def publish_identity(publisher: Publisher, signer: Signer) -> None:
    """Publish the signing certificate under its certificateId, and the PQ key document
    under its keyId when the identity co-signs (both immutable)."""
    publisher.put_immutable(
        layout.certificate_key(signer.certificate_id.hex()),
        signer.certificate_pem,
        content_type=PEM,
    )
    if signer.pq is not None:
        publisher.put_immutable(
            layout.pq_key_key(signer.pq.key_id.hex()), signer.pq.key_document, content_type=JSON
        )


def publish_site_pages(
    publisher: Publisher, site: SiteInfo, certificate_id: bytes, *, max_age: int
) -> None:
    """Write the site's pages that do not follow pulses (mutable), once per run.

    The style sheet, "verify it yourself", fair draws, and the list of days (so
    the home page's link to it resolves before any day is complete).
    """
    publisher.put_mutable(*render_style(), content_type=CSS, max_age=max_age)
    publisher.put_mutable(*render_script(), content_type=JS, max_age=max_age)
    for key, page in (
        render_verify_page(site, certificate_id),
        render_draw_page(site),
        render_find_page(site),
    ):
        publisher.put_mutable(key, page, content_type=HTML, max_age=max_age)
    publish_days_page(publisher, max_age=max_age)


def publish_days_page(publisher: Publisher, *, max_age: int) -> None:
    """Write the list of days from the day pages the store holds (mutable)."""
    key, page = render_days_page(days_from_keys(publisher.list(DAY_PAGE_PREFIX)))
    publisher.put_mutable(key, page, content_type=HTML, max_age=max_age)


def publish_item(
    publisher: Publisher,
    item: OutboxItem,
    *,
    last_max_age: int,
    site: SiteInfo,
    recent: Sequence[OutboxItem],
    on_pulse_stored: Callable[[], None] | None = None,
    before_write: Callable[[], None] | None = None,
) -> None:
    """Write every object of one pulse, immutable ones first, then the ``last`` pointers.

    ``recent`` are pulses published before it, newest first, for the home page,
    which is written last, with the ``last`` pointers' ``last_max_age``.
    ``on_pulse_stored`` is called once the store has confirmed the pulse object
    (the publish-latency metric's end point); ``before_write`` before each
    mutable write (the lease check). The mutable writes never go back: the
    ``last`` pointers only move forward (``put_forward``), index writes are
    conditional on the versions they were planned from, and the home page is
    written only while ``last`` names this pulse.
    """
    c, p = item.chain_index, item.pulse_index
    publisher.put_immutable(layout.entropy_record_key(c, p), item.record, content_type=JSON)
    failpoint("after-entropy-record")
    publisher.put_immutable(layout.pulse_key(c, p), item.pulse, content_type=JSON)
    if on_pulse_stored is not None:
        on_pulse_stored()
    if item.cosignature is not None:
        publisher.put_immutable(layout.pq_signature_key(c, p), item.cosignature, content_type=JSON)
    failpoint("mid-publish")
    publisher.put_immutable(layout.time_key(item.time_ms), item.pulse, content_type=JSON)
    publisher.put_immutable(*render_pulse_page(item), content_type=HTML)
    update_indexes(
        publisher, TimeEntry(time_ms=item.time_ms, chain=c, pulse=p), before_write=before_write
    )
    position = (c, p)
    for key in (layout.chain_last_key(c), layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY):
        if before_write is not None:
            before_write()
        put_forward(
            publisher,
            key,
            item.pulse,
            behind=lambda stored: stored_position(stored) < position,
            content_type=JSON,
            max_age=last_max_age,
        )
    # The home page follows ``last``: written only while ``last`` names this pulse.
    if stored_position(publisher.get(layout.LAST_KEY)) == position:
        if before_write is not None:
            before_write()
        home, page = render_home(site, item, recent, refresh_s=last_max_age)
        publisher.put_mutable(home, page, content_type=HTML, max_age=last_max_age)


def stored_position(pulse: bytes | None) -> tuple[int, int]:
    """(chain, index) of a stored pulse; (0, 0) for none or for bytes that are not a pulse."""
    if pulse is None:
        return (0, 0)
    try:
        parsed = parse_pulse(pulse)
    except PulseFormatError:
        return (0, 0)
    return (parsed.chain_index, parsed.pulse_index)


def publish_batch(publisher: Publisher, batch: RawBatch) -> None:
    """Publish a used-up raw batch (immutable); records drawn from it carry its SHA-512."""
    publisher.put_immutable(layout.batch_key(batch.batch_id), batch.data, content_type=OCTETS)


def archive_complete_days(
    publisher: Publisher, state: State, latest_time_ms: int, *, max_age: int
) -> None:
    """Archive every day before the one of ``latest_time_ms`` whose pulses are still kept.

    Each day gets its PQ archive (when a pulse of it is co-signed), then its
    archive, then its page: a reader that finds the day archive finds the PQ
    archive too, and the page links only what exists. Then the list of days is
    rewritten (with ``max_age``) and the day's pulses are forgotten.
    """
    today = layout.day_start_ms(layout.day_of(latest_time_ms))
    done = state.published_before(today)
    for day, group in groupby(done, key=lambda item: layout.day_of(item.time_ms)):
        # After a failover, other instances published part of the day; their
        # pulses come with their co-signatures (``published_item``).
        items = complete_day(publisher, day, list(group))
        archive_items = [
            ArchiveItem(
                time_ms=i.time_ms,
                chain=i.chain_index,
                pulse=i.pulse_index,
                pulse_bytes=i.pulse,
                entropy_bytes=i.record,
                cosignature_bytes=i.cosignature,
            )
            for i in items
        ]
        pq_archive = build_pq_archive(day, archive_items)
        if pq_archive is not None:
            publisher.put_immutable(
                layout.pq_archive_key(day), pq_archive, content_type=ARCHIVE_CONTENT_TYPE
            )
        archive = build_day_archive(day, archive_items)
        publisher.put_immutable(layout.archive_key(day), archive, content_type=ARCHIVE_CONTENT_TYPE)
        for page in render_day_pages(day, items, pq_archive=pq_archive is not None):
            publisher.put_immutable(*page, content_type=HTML)
    if done:
        publish_days_page(publisher, max_age=max_age)
        state.forget_published_before(today)
