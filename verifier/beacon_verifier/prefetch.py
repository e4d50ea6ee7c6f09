"""Reading a site over the network with many requests in flight, in order.

``PipelinedSource`` wraps an http(s) or S3 source for a replay: the reader
(``replay.read_chain``) tells it which keys it will read next, in order
(``read_ahead``), and ``get`` then answers from fetches already under way, so
a chain read pulse by pulse costs about one round trip per ``concurrency``
pulses instead of one per object. Keys the reader asks for out of that order
are fetched at once, as without it; keys it skips are dropped. Immutable
objects named by their content's id (certificates, PQ key documents) are kept,
so each is fetched once per process. A ``PipelinedSource`` pickles: each
worker process of ``--jobs`` opens its own, with its share of the concurrency,
once for all the segments it checks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from beacon_verifier import layout
from beacon_verifier.fetch import MAX_OBJECT_BYTES, Source, read_chunks

__all__ = ["PipelinedSource", "pipelined"]

#: Keys of immutable objects a replay asks for again in every segment.
_KEPT_PREFIXES = (f"{layout.ROOT}/certificate/", f"{layout.ROOT}/pq-key/")
_KEPT_MAX = 64


class PipelinedSource:
    """``inner`` (an http(s) or S3 source) with reads ahead and kept immutable objects."""

    def __init__(self, inner: Source, concurrency: int) -> None:
        self.inner = inner
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="prefetch")
        self._ahead: OrderedDict[str, Future[bytes | None]] = OrderedDict()
        self._keys: Iterator[tuple[str, int]] = iter(())
        self._kept: dict[str, bytes | None] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.inner.describe()

    def __reduce__(self) -> tuple[Callable[..., PipelinedSource], tuple[Any, ...]]:
        return (_reopen, (self.inner, self.concurrency))

    def read_ahead(self, keys: Iterable[tuple[str, int]]) -> None:
        """The keys the reader will ``get`` next, in order, each with the size cap it
        will be read under (replaces any before)."""
        with self._lock:
            for future in self._ahead.values():
                future.cancel()
            self._ahead.clear()
            self._keys = iter(keys)
            self._fill()

    def _fill(self) -> None:
        while len(self._ahead) < self.concurrency:
            item = next(self._keys, None)
            if item is None:
                return
            key, cap = item
            if key not in self._ahead:
                self._ahead[key] = self._executor.submit(_get, self.inner, key, cap)

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        if key in self._kept:
            return self._kept[key]
        with self._lock:
            future = self._ahead.get(key)
            if future is not None:
                while True:  # drop the keys read ahead that the reader skipped
                    first, skipped = self._ahead.popitem(last=False)
                    if first == key:
                        break
                    skipped.cancel()
                self._fill()
        if future is None:
            data = self.inner.get(key, max_bytes=max_bytes)
        else:
            data = future.result()
            if data is not None and len(data) > max_bytes:
                data = self.inner.get(key, max_bytes=max_bytes)  # raises TooLargeError
        if key.startswith(_KEPT_PREFIXES) and len(self._kept) < _KEPT_MAX:
            self._kept[key] = data
        return data

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        """Large objects (daily archives) are streamed from ``inner``, not read ahead."""
        return read_chunks(self.inner, key, max_bytes=max_bytes)

    def close(self) -> None:
        self.read_ahead(())
        self._executor.shutdown(wait=False, cancel_futures=True)


def _get(source: Source, key: str, cap: int) -> bytes | None:
    return source.get(key, max_bytes=cap)


_OPEN: dict[tuple[str, int], PipelinedSource] = {}


def _reopen(inner: Source, concurrency: int) -> PipelinedSource:
    """The process's ``PipelinedSource`` for ``inner`` (made once per worker process)."""
    key = (inner.describe(), concurrency)
    found = _OPEN.get(key)
    if found is None:
        found = _OPEN[key] = PipelinedSource(inner, concurrency)
    return found


def pipelined(source: Source, concurrency: int, processes: int = 1) -> Source:
    """``source`` read with ``concurrency`` requests in flight in all, shared by
    ``processes`` worker processes, if it is a network source (http(s) or S3); a
    local directory is returned as it is."""
    from beacon_verifier.fetch import S3Source

    share = max(1, -(-concurrency // processes))
    if type(source).__name__ == "HttpSource":  # web imports urllib3: only when in use
        from beacon_verifier.web import HttpSource

        assert isinstance(source, HttpSource)
        return PipelinedSource(HttpSource(source.base_url, share), share)
    if isinstance(source, S3Source):
        inner = S3Source(source.bucket, source.prefix, source.endpoint_url, pool=share)
        return PipelinedSource(inner, share)
    return source
