"""Reading a beacon site, object by object: its head, certificates, PQ keys, site
descriptor, raw batches, and one pulse's evidence.

**One pulse** (``gather_evidence``): what ``pulse``, ``time``, ``skiplist`` and
``draw`` hand the core (``core.check_pulse``) for a pulse they fetched. A chain is
read in order by ``chainread``.

Every read goes through a ``fetch.Source`` (bounded in size and time); nothing
here checks anything beyond where an object sits and whether a head is possible.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from beacon_verifier import layout
from beacon_verifier.archive import (
    MAX_RECORD_BYTES,
)
from beacon_verifier.batch import MAX_BATCH_BYTES, cited_batch
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.core import NOT_FETCHED, Evidence, NotFetched
from beacon_verifier.descriptor import (
    MAX_DESCRIPTOR_BYTES,
    NIST_SITE,
    SiteDescriptor,
    parse_descriptor,
)
from beacon_verifier.errors import FetchError, PulseFormatError, SignatureError, VerifierError
from beacon_verifier.external import MAX_RECORD_BYTES as MAX_EXTERNAL_RECORD_BYTES
from beacon_verifier.fetch import Source, TooLargeError
from beacon_verifier.format import MAX_PULSE_BYTES, ZERO_HASH, Pulse, parse_pulse
from beacon_verifier.pq import (
    MAX_COSIGNATURE_BYTES,
    MAX_KEY_DOCUMENT_BYTES,
    PqKey,
    parse_key_document,
)

__all__ = [
    "BadHeadError",
    "certificate_lookup",
    "chain_tip",
    "check_head",
    "cosignature_object",
    "external_evidence",
    "fetch_pulse",
    "gather_evidence",
    "latest_pulse",
    "pq_key_lookup",
    "read_batch",
    "read_descriptor",
]

#: How far past this machine's clock a head may be dated. Generous: clocks of readers
#: (and test sites) differ; the bound that counts is the one from the chain's own
#: timestamps (``check_head``).
HEAD_CLOCK_SLACK_MS = 366 * 86_400_000


class BadHeadError(VerifierError):
    """The site's head claims a pulse its own timestamps (or the clock) rule out."""


def certificate_lookup(
    source: Source | None, given: TrustedCertificate | None = None
) -> Callable[[bytes], TrustedCertificate | None]:
    """Find certificates by certificateId: ``given`` (``--cert``) when it is the one,
    else on ``source``; None when absent or unusable. The one certificate lookup."""

    def lookup(certificate_id: bytes) -> TrustedCertificate | None:
        if given is not None and given.certificate_id == certificate_id:
            return given
        if source is None:
            return None
        data = source.get(layout.certificate_key(certificate_id.hex()))
        if data is None:
            return None
        try:
            cert = TrustedCertificate.from_bytes(data)
        except PulseFormatError:
            return None
        # A certificate is identified by its DER hash; a mismatch is no certificate.
        return cert if cert.certificate_id == certificate_id else None

    return lookup


def latest_pulse(source: Source) -> Pulse:
    """The pulse under ``pulse/last``.

    Raises ``FetchError`` when there is none, ``PulseFormatError`` when it is malformed.
    """
    data = source.get(layout.LAST_KEY, max_bytes=MAX_PULSE_BYTES)
    if data is None:
        raise FetchError(f"{source.describe()}: no {layout.LAST_KEY} (is this a beacon site?)")
    return parse_pulse(data)


def chain_tip(source: Source, chain: int | None) -> Pulse:
    """The last pulse of ``chain`` (default: the latest pulse, of the latest chain).

    Raises ``FetchError`` when the site has none, ``PulseFormatError`` when it is malformed.
    """
    head = latest_pulse(source)
    if chain is None or chain == head.chain_index:
        return head
    data = source.get(layout.chain_last_key(chain), max_bytes=MAX_PULSE_BYTES)
    if data is None:
        raise FetchError(f"{source.describe()}: chain {chain} has no last pulse")
    tip = parse_pulse(data)
    if tip.chain_index != chain:
        raise FetchError(
            f"{source.describe()}: {layout.chain_last_key(chain)} is a pulse of chain "
            f"{tip.chain_index}, not {chain}"
        )
    return tip


def check_head(source: Source, tip: Pulse, *, now_ms: int | None = None) -> Pulse | None:
    """Refuse a head that the chain's timestamps rule out, in one GET, before any walk.

    A chain cannot have more pulses than periods since its first pulse (pulse 1,
    or, if the site lacks it, the Unix epoch), and no pulse from the future.
    Raises ``BadHeadError`` in one line. Returns pulse 1 as ``fetch_pulse`` gives it
    (None: the site has no usable one), so that it need not be fetched again.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    what = f"{source.describe()}: bad head: pulse {tip.chain_index}/{tip.pulse_index}"
    if tip.time_ms > now + HEAD_CLOCK_SLACK_MS:
        raise BadHeadError(
            f"{what} is dated {tip.time_stamp}, more than a year after this machine's clock"
        )
    first_index, first_ms, since = 1, 0, "the Unix epoch"
    first = fetch_pulse(source, tip.chain_index, 1)
    if first is not None and first.time_ms <= tip.time_ms:
        first_ms, since = first.time_ms, f"pulse 1 at {first.time_stamp}"
    allowed = first_index + (tip.time_ms - first_ms) // max(tip.period, 1)
    if tip.pulse_index > allowed:
        raise BadHeadError(
            f"{what} at {tip.time_stamp}: at most {allowed} pulses fit since {since} "
            f"at one per {tip.period} ms"
        )
    return first


def fetch_pulse(source: Source, chain: int, index: int) -> Pulse | None:
    """Pulse ``index`` of ``chain`` if the site has it well-formed and in its place."""
    try:
        data = source.get(layout.pulse_key(chain, index), max_bytes=MAX_PULSE_BYTES)
        pulse = None if data is None else parse_pulse(data)
    except (TooLargeError, PulseFormatError):
        return None
    if pulse is None or (pulse.chain_index, pulse.pulse_index) != (chain, index):
        return None
    return pulse


def read_descriptor(source: Source) -> SiteDescriptor:
    """The site's descriptor (``site.json``), or ``NIST_SITE`` when it has none.

    Raises ``PulseFormatError`` when it is malformed, ``FetchError`` as ``get``.
    """
    try:
        data = source.get(layout.SITE_KEY, max_bytes=MAX_DESCRIPTOR_BYTES)
    except TooLargeError as exc:
        raise PulseFormatError("site.json", str(exc)) from None
    return NIST_SITE if data is None else parse_descriptor(data)


def read_batch(source: Source, batch_id: str) -> bytes | None:
    """The raw batch ``batch_id`` (None: not on the site). An oversized one reads as
    b"" (which no record's size matches: reported as a wrong batch)."""
    try:
        key = layout.batch_key(batch_id)
    except ValueError:
        return b""
    try:
        return source.get(key, max_bytes=MAX_BATCH_BYTES)
    except TooLargeError:
        return b""


def external_evidence(source: Source, pulse: Pulse) -> bytes | NotFetched | None:
    """The round record of the drand round ``pulse`` says it mixed in (one GET, only for
    a pulse whose external claims a valid round; NOT_FETCHED otherwise: nothing to read)."""
    external = pulse.external
    if external.source_id == ZERO_HASH or external.status_code != 0:
        return NOT_FETCHED
    key = layout.external_key(pulse.chain_index, pulse.time_ms)
    try:
        return source.get(key, max_bytes=MAX_EXTERNAL_RECORD_BYTES)
    except TooLargeError:
        return b""  # no round record is that large: reported invalid


def gather_evidence(
    source: Source | None,
    pulse: Pulse,
    *,
    certificate: TrustedCertificate | None = None,
    cosignatures: bool = True,
    predecessor: bool = True,
    records: bool = True,
) -> Evidence:
    """Everything ``source`` has to check ``pulse`` with (``certificate``: one given by
    the user, preferred when the pulse names it). Without a site, only the pulse and
    ``certificate``. Costs: the certificate, entropy record, co-signature (and its PQ
    key), predecessor and raw batch: up to six GETs."""
    lookup = certificate_lookup(source, certificate)
    evidence = Evidence(pulse, certificate=lookup(pulse.certificate_id))
    if source is None:
        return evidence
    chain, index = pulse.chain_index, pulse.pulse_index
    try:
        if records:
            evidence.entropy = source.get(
                layout.entropy_record_key(chain, index), max_bytes=MAX_RECORD_BYTES
            )
    except TooLargeError as exc:
        evidence.entropy_error = str(exc)
    if isinstance(evidence.entropy, bytes) and b'"batchSha512"' in evidence.entropy:
        batch_id = _cited_batch_id(evidence.entropy)
        if batch_id is not None:
            evidence.raw_batch = read_batch(source, batch_id)
    if cosignatures:
        evidence.cosignature = cosignature_object(source, chain, index)
        evidence.pq_keys = pq_key_lookup(source, lookup)
    if predecessor and index > 1:
        evidence.predecessor = fetch_pulse(source, chain, index - 1)
    evidence.external = external_evidence(source, pulse)
    return evidence


def _cited_batch_id(record: bytes) -> str | None:
    try:
        return cited_batch(record)
    except PulseFormatError:
        return None  # the core reports it


def pq_key_lookup(
    source: Source, certificates: Callable[[bytes], TrustedCertificate | None]
) -> Callable[[bytes], PqKey | None]:
    """Find PQ key documents on ``source`` by keyId, checked against their certificate.

    None when the site has no such document; a document that is malformed or
    not vouched for raises (``PulseFormatError`` / ``SignatureError``), every time.
    """
    cache: dict[bytes, PqKey | Exception | None] = {}

    def lookup(kid: bytes) -> PqKey | None:
        if kid not in cache:
            try:
                data = source.get(layout.pq_key_key(kid.hex()), max_bytes=MAX_KEY_DOCUMENT_BYTES)
                cache[kid] = None if data is None else parse_key_document(data, certificates)
            except (PulseFormatError, SignatureError, TooLargeError) as exc:
                cache[kid] = exc
        found = cache[kid]
        if isinstance(found, Exception):
            raise found
        return found

    return lookup


def cosignature_object(source: Source, chain: int, index: int) -> bytes | None:
    """Pulse ``index``'s co-signature object (b"\\0", reported as a malformed
    co-signature, when oversized)."""
    try:
        return source.get(layout.pq_signature_key(chain, index), max_bytes=MAX_COSIGNATURE_BYTES)
    except TooLargeError:
        return b"\0"
