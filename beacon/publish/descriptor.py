"""The site descriptor the beacon publishes: ``beacon/2.0/site.json``.

It says what this site publishes, from which pulse on, so that the verifier can
hold the site to it (``beacon_verifier.descriptor`` defines the format and reads
it): entropy records (always, for this beacon), raw batches (when the entropy
source publishes them), ML-DSA-65 co-signatures (when the identity co-signs), an
external source (``external_source``, e.g. "drand", once the beacon mixes one),
daily archives (always).

Written once per run, before the run's first pulse is published, and only when
it changes (mutable). A promise already on the site keeps its ``from`` pulse; a
promise newly made starts at the first pulse this run publishes; a feature
switched off withdraws its promise (the verifier then holds no pulse to it).
"""

from __future__ import annotations

import logging

from beacon_verifier import layout
from beacon_verifier.descriptor import (
    Promise,
    SiteDescriptor,
    encode_descriptor,
    parse_descriptor,
)
from beacon_verifier.errors import PulseFormatError

from beacon.publish import JSON, Publisher

__all__ = ["describe_site", "publish_descriptor"]

log = logging.getLogger("beacon")


def describe_site(
    existing: SiteDescriptor | None,
    *,
    chain: int,
    pulse: int,
    cosigned: bool,
    raw_data: bool,
    external_source: str | None = None,
) -> SiteDescriptor:
    """The descriptor for a run whose first published pulse is ``chain``/``pulse``."""
    start = Promise(chain, pulse)

    def keep(promise: Promise | None, on: bool) -> Promise | None:
        if not on:
            return None
        return promise if promise is not None and promise <= start else start

    old = existing or SiteDescriptor()
    return SiteDescriptor(
        entropy_records=keep(old.entropy_records, True),
        raw_data=keep(old.raw_data, raw_data),
        cosignatures=keep(old.cosignatures, cosigned),
        external=keep(old.external, external_source is not None),
        external_source=external_source,
        daily_archives=True,
    )


def publish_descriptor(
    publisher: Publisher,
    *,
    chain: int,
    pulse: int,
    cosigned: bool,
    raw_data: bool,
    max_age: int,
    external_source: str | None = None,
) -> None:
    """Write ``site.json`` for a run that publishes from ``chain``/``pulse`` on, if it changed."""
    data = publisher.get(layout.SITE_KEY)
    existing = None
    if data is not None:
        try:
            existing = parse_descriptor(data)
        except PulseFormatError as exc:
            log.warning("replacing a malformed %s: %s", layout.SITE_KEY, exc)
    described = describe_site(
        existing,
        chain=chain,
        pulse=pulse,
        cosigned=cosigned,
        raw_data=raw_data,
        external_source=external_source,
    )
    new = encode_descriptor(described)
    if new != data:
        publisher.put_mutable(layout.SITE_KEY, new, content_type=JSON, max_age=max_age)
