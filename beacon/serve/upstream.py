"""Reading a beacon site for the gateway: bounded reads and a byte-bounded cache.

The gateway reads through the verifier's sources (``beacon_verifier.fetch``:
a local directory, ``s3://`` or ``http(s)://``), so the site is read by one
piece of code whoever reads it. On top of them ``Upstream`` adds what a server
needs:

- **bounds**: every read has a size cap (the caller's, per kind of object) and
  a deadline (``timeout``); remote reads run on a small thread pool, so at most
  ``workers`` reads are in flight upstream whatever the number of clients;
- **a cache with a byte bound**: immutable objects (pulses, certificates, final
  hour indexes) are kept, least recently used first out, until ``cache_bytes``;
  mutable ones (``last`` pointers, the current hour index, ``bounds.json``)
  only for ``mutable_ttl`` seconds, so a burst of ``pulse/last`` costs one read
  per interval and an answer is never older than that. Absent objects are not
  cached: a pulse may be published the next moment.

A local directory is read inline on the event loop (a small file from the page
cache takes microseconds, less than a hop through a thread); S3 and HTTP reads
go through the pool.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import LocalSource, Source, read_chunks

T = TypeVar("T")

__all__ = ["Upstream", "UpstreamError"]


class UpstreamError(Exception):
    """The site could not be read (unreachable, too slow, too large, unreadable)."""


class Upstream:
    """A site root read with bounds, and a cache of what it has read."""

    def __init__(
        self,
        source: Source,
        *,
        cache_bytes: int = 64 * 1024 * 1024,
        mutable_ttl: float = 1.0,
        timeout: float = 20.0,
        workers: int = 16,
    ) -> None:
        self.source = source
        self.cache_bytes = cache_bytes
        self.mutable_ttl = mutable_ttl
        self.timeout = timeout
        self._inline = isinstance(source, LocalSource)
        self._pool = None if self._inline else ThreadPoolExecutor(workers, "beacon-serve")
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (data, expiry)
        self._cached_bytes = 0

    def describe(self) -> str:
        return self.source.describe()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    async def get(self, key: str, *, max_bytes: int, immutable: bool) -> bytes | None:
        """The bytes under ``key`` (None: absent); cached as ``immutable`` says.

        Raises ``UpstreamError`` when the site fails, is too slow or the object
        is larger than ``max_bytes``.
        """
        hit = self._cache.get(key)
        if hit is not None:
            data, expiry = hit
            if expiry == 0.0 or time.monotonic() < expiry:
                self._cache.move_to_end(key)
                return data
            self._forget(key)
        found = await self._read(key, max_bytes)
        if found is not None:
            self.remember(key, found, immutable=immutable)
        return found

    def remember(self, key: str, data: bytes, *, immutable: bool) -> None:
        """Keep ``data`` under ``key``; evicts the least recently used beyond the bound."""
        if len(data) > self.cache_bytes // 8:
            return  # one object may not flush the cache
        self._forget(key)
        expiry = 0.0 if immutable else time.monotonic() + self.mutable_ttl
        if not immutable and self.mutable_ttl <= 0:
            return
        self._cache[key] = (data, expiry)
        self._cached_bytes += len(data)
        while self._cached_bytes > self.cache_bytes:
            _, (old, _) = self._cache.popitem(last=False)
            self._cached_bytes -= len(old)

    def _forget(self, key: str) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= len(old[0])

    async def _read(self, key: str, max_bytes: int) -> bytes | None:
        return await self._bounded(key, lambda: self.source.get(key, max_bytes=max_bytes))

    async def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        """A large immutable object (a daily archive) in pieces, never cached whole.

        Opening is bounded like ``get``; the pieces are read by the caller (on the
        pool for remote sites) and each is bounded by the source's own timeouts.
        """
        return await self._bounded(key, lambda: read_chunks(self.source, key, max_bytes=max_bytes))

    async def _bounded(self, key: str, call: Callable[[], T]) -> T:
        """``call()``: inline for a local site, else on the pool within ``timeout``;
        the site's failures become ``UpstreamError``."""
        try:
            if self._pool is None:
                return call()
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.run_in_executor(self._pool, call), self.timeout)
        except FetchError as exc:
            raise UpstreamError(str(exc)) from None
        except TimeoutError:
            raise UpstreamError(
                f"{key}: no answer from the site within {self.timeout:g} s"
            ) from None

    async def next_chunk(self, pieces: Iterator[bytes]) -> bytes | None:
        """The next piece of a ``stream`` (None at its end); a failure mid-way raises."""
        try:
            if self._pool is None:
                return next(pieces, None)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._pool, next, pieces, None)
            return await asyncio.wait_for(future, self.timeout)
        except FetchError as exc:
            raise UpstreamError(str(exc)) from None
        except TimeoutError:
            raise UpstreamError(f"no more of the object within {self.timeout:g} s") from None
