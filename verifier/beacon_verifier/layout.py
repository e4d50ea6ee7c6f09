"""The URL grammar of a beacon site, relative to its root.

It mirrors the NIST Randomness Beacon 2.0 REST paths, so a NIST client pointed at
a static host finds pulses where it expects them. The beacon writes these keys;
the verifier reads them. Written once, here.

    beacon/2.0/chain/{c}/pulse/{p}          a pulse (immutable)
    beacon/2.0/chain/{c}/pulse/last         the last pulse of chain c (mutable)
    beacon/2.0/pulse/last                   the latest pulse (mutable)
    beacon/2.0/chain/last/pulse/last        the same (mutable)
    beacon/2.0/site.json                    what the site promises to publish (mutable;
                                            ``descriptor``)
    beacon/2.0/pulse/time/{unix_ms}         the pulse with exactly that timeStamp (immutable)
    beacon/2.0/certificate/{certificateId}  the signing certificate, PEM (immutable)
    beacon/2.0/chain/{c}/entropy/{p}        the entropy record of a pulse (immutable)
    beacon/2.0/chain/{c}/pq-signature/{p}   the ML-DSA-65 co-signature of a pulse (immutable)
    beacon/2.0/chain/{c}/external/{ms}      the drand round mixed into the pulse at ms, or why none
                                            was (immutable; docs/external.md)
    beacon/2.0/pq-key/{keyId}               an ML-DSA-65 public key the RSA certificate vouches
                                            for (immutable)
    beacon/2.0/batch/{batchId}              a used-up raw batch of pooled quantum bits,
                                            packed shot-major, MSB first (immutable)
    beacon/2.0/archive/day/{YYYY-MM-DD}.jsonl.gz
                                            every pulse of a complete UTC day with its
                                            entropy record, gzip JSON Lines (immutable)
    beacon/2.0/archive/day/{YYYY-MM-DD}.pq.jsonl.gz
                                            the ML-DSA-65 co-signatures of that day's
                                            pulses, gzip JSON Lines (immutable; only for
                                            a day with a co-signed pulse)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

ROOT = "beacon/2.0"


def pulse_key(chain: int, pulse: int) -> str:
    return f"{ROOT}/chain/{chain}/pulse/{pulse}"


def chain_last_key(chain: int) -> str:
    return f"{ROOT}/chain/{chain}/pulse/last"


LAST_KEY = f"{ROOT}/pulse/last"
CHAIN_LAST_LAST_KEY = f"{ROOT}/chain/last/pulse/last"
SITE_KEY = f"{ROOT}/site.json"


def time_key(unix_ms: int) -> str:
    return f"{ROOT}/pulse/time/{unix_ms}"


def certificate_key(certificate_id_hex: str) -> str:
    return f"{ROOT}/certificate/{certificate_id_hex.lower()}"


def entropy_record_key(chain: int, pulse: int) -> str:
    return f"{ROOT}/chain/{chain}/entropy/{pulse}"


def pq_signature_key(chain: int, pulse: int) -> str:
    return f"{ROOT}/chain/{chain}/pq-signature/{pulse}"


def plan_key(chain: int, pulse: int, certificate_id: bytes) -> str:
    """The plan of a pulse (the beacon's unsigned pulse, stored before it signs it)."""
    return f"{ROOT}/chain/{chain}/plan/{pulse}/{certificate_id.hex()}"


def external_key(chain: int, time_ms: int) -> str:
    """The drand round record of the pulse of ``chain`` at ``time_ms`` (keyed by time,
    not index: a dead active's record for an index it never published cannot collide
    with the one its successor writes for that index at a later time)."""
    return f"{ROOT}/chain/{chain}/external/{time_ms}"


def pq_key_key(key_id_hex: str) -> str:
    return f"{ROOT}/pq-key/{key_id_hex.lower()}"


_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def batch_key(batch_id: str) -> str:
    """``beacon/2.0/batch/{batchId}``. Raises ``ValueError`` for an id unsafe in a key."""
    if not _BATCH_ID.fullmatch(batch_id):
        raise ValueError(f"batch id {batch_id[:40]!r} is not a safe object name")
    return f"{ROOT}/batch/{batch_id}"


ARCHIVE_ROOT = f"{ROOT}/archive/day"


def archive_key(day: date) -> str:
    """``beacon/2.0/archive/day/{YYYY-MM-DD}.jsonl.gz``."""
    return f"{ARCHIVE_ROOT}/{day.isoformat()}.jsonl.gz"


def pq_archive_key(day: date) -> str:
    """``beacon/2.0/archive/day/{YYYY-MM-DD}.pq.jsonl.gz``: the day's co-signatures, kept
    apart from the day archive so that a reader not checking them never inflates them."""
    return f"{ARCHIVE_ROOT}/{day.isoformat()}.pq.jsonl.gz"


def day_of(time_ms: int) -> date:
    """The UTC day that contains ``time_ms``."""
    return datetime.fromtimestamp(time_ms // 1000, tz=UTC).date()


def day_start_ms(day: date) -> int:
    """Unix ms of 00:00:00.000 UTC on ``day``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def pulse_uri(base_url: str, chain: int, pulse: int) -> str:
    """The ``uri`` field of a pulse published under ``base_url`` (no trailing slash)."""
    return f"{base_url.rstrip('/')}/{pulse_key(chain, pulse)}"
