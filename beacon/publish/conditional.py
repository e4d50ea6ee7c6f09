"""Mutable writes that can never go back: each one is conditional on what it replaces.

S3 cannot make a write conditional on another object (the lease), so every
mutable write the publisher makes for a pulse is conditional on the version
of the object it was derived from (S3 ``If-Match`` / ``If-None-Match`` on the
ETag; on a local directory the same comparison under the ``flock`` of
``LocalDirPublisher.put_if``), and only ever moves forward:

- ``put_forward`` replaces an object only while what it holds is behind the
  new bytes (``last`` pointers by (chain, index), ``status.json`` by its
  ``lastPulse``), read and replaced on one version;
- ``VersionedReads`` remembers the version of every object a plan read, so
  the plan's writes (the time index) fail if anything changed them since.

An instance that was paused after planning and resumed after a takeover
therefore cannot overwrite what the new active wrote: its write finds a
newer version and is refused (``ConditionFailedError``), and it re-plans from
the store or stops on its lost lease.
"""

from __future__ import annotations

from collections.abc import Callable

from beacon.errors import ConditionFailedError, TransientPublishError
from beacon.publish import Publisher

#: A conditional write that keeps losing to other writers gives up (and is retried later).
ATTEMPTS = 3


def put_forward(
    publisher: Publisher,
    key: str,
    data: bytes,
    *,
    behind: Callable[[bytes], bool],
    content_type: str,
    max_age: int,
) -> bool:
    """Replace ``key`` with ``data`` if absent or ``behind(stored)``; True if written.

    Raises ``TransientPublishError`` when the object changed under each of
    ``ATTEMPTS`` tries, ``PublishError`` when the store fails.
    """
    for _ in range(ATTEMPTS):
        found = publisher.get_versioned(key)
        if found is not None and not behind(found[0]):
            return False
        try:
            publisher.put_if(
                key,
                data,
                version=None if found is None else found[1],
                content_type=content_type,
                max_age=max_age,
            )
        except ConditionFailedError:
            continue
        return True
    raise TransientPublishError(f"{key} kept changing while being written")


class VersionedReads:
    """A ``get`` that remembers each object's version, and writes conditional on them."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._versions: dict[str, str | None] = {}

    def get(self, key: str) -> bytes | None:
        found = self._publisher.get_versioned(key)
        self._versions[key] = None if found is None else found[1]
        return None if found is None else found[0]

    def put(self, key: str, data: bytes, *, content_type: str, max_age: int) -> None:
        """Write ``key`` only if it is still as read; raises ``ConditionFailedError`` if not."""
        self._versions[key] = self._publisher.put_if(
            key,
            data,
            version=self._versions.get(key),
            content_type=content_type,
            max_age=max_age,
        )
