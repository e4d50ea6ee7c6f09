"""What gets written for one committed pulse, and in which order.

For each pulse: immutable objects first (entropy record, pulse, its time
alias), then the time indexes, then the mutable pointers (`last`), so a
reader never follows a pointer to something missing. ``publish_item`` is
idempotent: after a crash it is simply run again from the outbox.

Published pulses stay in the state until their UTC day is complete (a pulse of
a later day is published); ``archive_complete_days`` then writes the day's
archive (immutable) and only then forgets them, so a crash in between simply
writes the same archive again.
"""

from __future__ import annotations

from itertools import groupby

from beacon_verifier import layout
from beacon_verifier.timeindex import TimeEntry

from beacon.entropy import RawBatch
from beacon.faults import failpoint
from beacon.publish import JSON, OCTETS, PEM, Publisher
from beacon.publish.archives import ARCHIVE_CONTENT_TYPE, ArchiveItem, build_day_archive
from beacon.publish.indexes import update_indexes
from beacon.state import OutboxItem, State


def publish_certificate(
    publisher: Publisher, certificate_pem: bytes, certificate_id: bytes
) -> None:
    """Publish the signing certificate under its certificateId (immutable)."""
    publisher.put_immutable(
        layout.certificate_key(certificate_id.hex()), certificate_pem, content_type=PEM
    )


def publish_item(publisher: Publisher, item: OutboxItem, *, last_max_age: int) -> None:
    """Write every object of one pulse, immutable ones first, then the ``last`` pointers."""
    c, p = item.chain_index, item.pulse_index
    publisher.put_immutable(layout.entropy_record_key(c, p), item.record, content_type=JSON)
    publisher.put_immutable(layout.pulse_key(c, p), item.pulse, content_type=JSON)
    failpoint("mid-publish")
    publisher.put_immutable(layout.time_key(item.time_ms), item.pulse, content_type=JSON)
    update_indexes(publisher, TimeEntry(time_ms=item.time_ms, chain=c, pulse=p))
    for key in (layout.chain_last_key(c), layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY):
        publisher.put_mutable(key, item.pulse, content_type=JSON, max_age=last_max_age)


def publish_batch(publisher: Publisher, batch: RawBatch) -> None:
    """Publish a used-up raw batch (immutable); records drawn from it carry its SHA-512."""
    publisher.put_immutable(layout.batch_key(batch.batch_id), batch.data, content_type=OCTETS)


def archive_complete_days(publisher: Publisher, state: State, latest_time_ms: int) -> None:
    """Archive every day before the one of ``latest_time_ms`` whose pulses are still kept."""
    today = layout.day_start_ms(layout.day_of(latest_time_ms))
    done = state.published_before(today)
    for day, items in groupby(done, key=lambda item: layout.day_of(item.time_ms)):
        archive = build_day_archive(
            day,
            (
                ArchiveItem(
                    time_ms=i.time_ms,
                    chain=i.chain_index,
                    pulse=i.pulse_index,
                    pulse_bytes=i.pulse,
                    entropy_bytes=i.record,
                )
                for i in items
            ),
        )
        publisher.put_immutable(layout.archive_key(day), archive, content_type=ARCHIVE_CONTENT_TYPE)
    if done:
        state.forget_published_before(today)
