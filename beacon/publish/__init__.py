"""Publication: the ``Publisher`` port, its adapters, and the static site.

Keys are relative to the site root and identical for every adapter; the URL
grammar itself lives in ``beacon_verifier.layout`` so that the producer and the
verifier cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

JSON = "application/json"
PEM = "application/x-pem-file"
OCTETS = "application/octet-stream"

#: Cache lifetime of immutable objects (one year, never revalidated).
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


class Publisher(Protocol):
    """A store of objects under slash-separated keys.

    Immutability is enforced by the store itself, never by checking first.
    """

    def put_immutable(self, key: str, data: bytes, *, content_type: str) -> None:
        """Create ``key`` with ``data``; the store refuses if it exists.

        Returns normally when the stored bytes already equal ``data`` (an
        idempotent retry). Raises ``AlreadyPublishedError`` when different bytes
        are stored, ``PublishError`` when the store fails.
        """
        ...

    def put_mutable(self, key: str, data: bytes, *, content_type: str, max_age: int) -> None:
        """Create or replace ``key`` atomically (``last`` pointers, indexes, status)."""
        ...

    def get(self, key: str) -> bytes | None:
        """Return the bytes under ``key``, or None when there is none."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in lexicographic order."""
        ...

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes under ``key`` and a tag that changes with every write, or None."""
        ...

    def put_if(
        self,
        key: str,
        data: bytes,
        *,
        version: str | None,
        content_type: str = JSON,
        max_age: int | None = None,
    ) -> str:
        """Replace ``key`` only if its tag is still ``version`` (None: only if absent).

        Atomic in the store (S3 ``If-Match`` / ``If-None-Match``, a lock on a
        directory); readers see the old or the new bytes; never cached unless
        ``max_age`` is given (then like ``put_mutable``). Returns
        the new tag. Raises ``ConditionFailedError`` when the object was written
        by someone else meanwhile, ``PublishError`` when the store fails.
        """
        ...
