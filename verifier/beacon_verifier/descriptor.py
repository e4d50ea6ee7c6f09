"""The site descriptor, ``beacon/2.0/site.json``: what a site promises to publish.

A beacon of this project writes it (``beacon.publish.descriptor``); the verifier
holds the site to it. Canonical JSON (``format.canonical_json``)::

    {"archives":{"daily":true},
     "coSignatures":{"algorithm":"ML-DSA-65","from":[1,1]},
     "entropyRecords":{"from":[1,1]},
     "external":null,
     "rawData":{"from":[1,1]},
     "version":1}

Each promise names the first pulse it holds for, as ``[chainIndex, pulseIndex]``:
it holds for that pulse and every later one (a later pulse of that chain, or
any pulse of a later chain). ``null`` (or an absent field) promises nothing.

- ``entropyRecords``: every such pulse has its entropy record
  (``chain/{c}/entropy/{p}``); a missing one is a failure.
- ``rawData``: every raw batch a record cites is published (``batch/{id}``) once
  used up; a missing one, or one whose bits do not re-derive the record's value,
  is a failure.
- ``coSignatures``: every such pulse has its ML-DSA-65 co-signature.
- ``external``: every such pulse mixes a valid external round (``source``: who).
- ``archives``: ``daily`` true when complete days are archived (a reading hint;
  an absent archive is never a failure, the pulses are read one by one).

Fields this verifier does not know are ignored (later versions add them). A site
without a descriptor (NIST's own, a mirror) is checked as NIST: nothing beyond
the pulses is required. A malformed descriptor is a ``PulseFormatError``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from beacon_verifier.core import ANY, Policy
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.external import DrandChain
from beacon_verifier.format import canonical_json, load_json

__all__ = [
    "DESCRIPTOR_VERSION",
    "MAX_DESCRIPTOR_BYTES",
    "NIST_SITE",
    "Promise",
    "SiteDescriptor",
    "encode_descriptor",
    "parse_descriptor",
]

DESCRIPTOR_VERSION = 1
MAX_DESCRIPTOR_BYTES = 64 * 1024
_MAX_INDEX = 2**64 - 1


@dataclass(frozen=True, slots=True, order=True)
class Promise:
    """A promise that holds from pulse ``chain``/``pulse`` on."""

    chain: int
    pulse: int

    def covers(self, chain: int, pulse: int) -> bool:
        return chain > self.chain or (chain == self.chain and pulse >= self.pulse)

    def to_json(self) -> dict[str, Any]:
        return {"from": [self.chain, self.pulse]}


@dataclass(frozen=True, slots=True)
class SiteDescriptor:
    """What a site promises (``None``: no promise of that kind)."""

    entropy_records: Promise | None = None
    raw_data: Promise | None = None
    cosignatures: Promise | None = None
    external: Promise | None = None
    external_source: str | None = None
    daily_archives: bool = False
    present: bool = True  # False: the site has no descriptor (checked as NIST)

    def policy_for(self, chain: int, pulse: int, base: Policy = ANY) -> Policy:
        """``base``, plus what this site promises for pulse ``chain``/``pulse``.

        An external promise does not require every pulse to carry a valid round: a
        withheld round is declared in the pulse (non-zero external.statusCode) and
        legitimate. What it does hold the site to, a published round record for every
        pulse that claims a valid round, the core checks for every pulse anyway."""
        records, cosignatures = self.entropy_records, self.cosignatures
        entropy = base.require_entropy or (records is not None and records.covers(chain, pulse))
        pq = base.require_pq or (cosignatures is not None and cosignatures.covers(chain, pulse))
        if entropy is base.require_entropy and pq is base.require_pq:
            return base
        return _policy(entropy, pq, base.require_external, base.drand)

    def fetches(self, policy: Policy, check_pq: bool = True) -> tuple[bool, bool]:
        """Whether entropy records and co-signatures are worth fetching: where the site
        has a descriptor (records) or promises them (co-signatures), or the policy
        requires them. A site is never probed for what it does not promise, so a NIST
        site costs one GET a pulse; what is not fetched is named "not checked"."""
        records = self.present or policy.require_entropy
        cosignatures = check_pq and (policy.require_pq or self.cosignatures is not None)
        return records, cosignatures

    def promises_raw(self, chain: int, pulse: int) -> bool:
        return self.raw_data is not None and self.raw_data.covers(chain, pulse)

    def describe(self) -> str:
        """One line: what the site promises."""
        if not self.present:
            return "no site descriptor: checked as a NIST site (pulses only)"
        parts = []
        for name, promise in (
            ("entropy records", self.entropy_records),
            ("raw data", self.raw_data),
            ("co-signatures", self.cosignatures),
            ("external", self.external),
        ):
            if promise is not None:
                parts.append(f"{name} from {promise.chain}/{promise.pulse}")
        return "site promises " + (", ".join(parts) if parts else "nothing beyond pulses")


@functools.cache
def _policy(entropy: bool, pq: bool, external: bool, drand: DrandChain | None) -> Policy:
    """One ``Policy`` object per combination (a replay asks for one per pulse)."""
    return Policy(require_entropy=entropy, require_pq=pq, require_external=external, drand=drand)


#: What a site without a descriptor is held to.
NIST_SITE = SiteDescriptor(present=False)


def encode_descriptor(descriptor: SiteDescriptor) -> bytes:
    """The canonical bytes of ``site.json``."""

    def promise(p: Promise | None, **extra: Any) -> dict[str, Any] | None:
        return None if p is None else {**p.to_json(), **extra}

    external = promise(descriptor.external, source=descriptor.external_source or "")
    doc = {
        "version": DESCRIPTOR_VERSION,
        "entropyRecords": promise(descriptor.entropy_records),
        "rawData": promise(descriptor.raw_data),
        "coSignatures": promise(descriptor.cosignatures, algorithm="ML-DSA-65"),
        "external": external,
        "archives": {"daily": descriptor.daily_archives},
    }
    return canonical_json(doc)


def _promise(doc: dict[str, Any], name: str) -> Promise | None:
    value = doc.get(name)
    if value is None:
        return None
    first = value.get("from") if isinstance(value, dict) else None
    if (
        not isinstance(first, list)
        or len(first) != 2
        or not all(type(v) is int and 1 <= v <= _MAX_INDEX for v in first)
    ):
        raise PulseFormatError(f"site.json {name}", 'must be null or {"from": [chain, pulse]}')
    return Promise(first[0], first[1])


def parse_descriptor(data: bytes) -> SiteDescriptor:
    """Parse ``site.json``. Raises ``PulseFormatError`` naming the field when malformed."""
    doc = load_json(data, what="site.json", max_bytes=MAX_DESCRIPTOR_BYTES)
    if not isinstance(doc, dict):
        raise PulseFormatError("site.json", "not a JSON object")
    version = doc.get("version")
    if type(version) is not int or version < 1:
        raise PulseFormatError("site.json version", f"unsupported version {version!r}")
    external = doc.get("external")
    source = external.get("source") if isinstance(external, dict) else None
    archives = doc.get("archives")
    return SiteDescriptor(
        entropy_records=_promise(doc, "entropyRecords"),
        raw_data=_promise(doc, "rawData"),
        cosignatures=_promise(doc, "coSignatures"),
        external=_promise(doc, "external"),
        external_source=source if isinstance(source, str) else None,
        daily_archives=isinstance(archives, dict) and archives.get("daily") is True,
    )
