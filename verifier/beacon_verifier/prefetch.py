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

Daily archives, which are streamed rather than got, have a read-ahead of their
own (``stream_ahead``): the reader names the archives it will stream, in order,
and at most ``STREAMS_AHEAD`` of them are fetched whole in the background ahead
of it, each held only up to ``STREAM_HOLD_BYTES`` (a larger one is streamed
again when its turn comes), so the GET of the next day's archive overlaps the
checking of the current one, in bounded memory. An archive fetched ahead reads
back exactly as a stream of it would have: the same pieces, then the same error
at the same point, if its fetch failed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import MAX_OBJECT_BYTES, Source, read_chunks

__all__ = ["PipelinedSource", "pipelined"]

#: Keys of immutable objects a replay asks for again in every segment.
_KEPT_PREFIXES = (f"{layout.ROOT}/certificate/", f"{layout.ROOT}/pq-key/")
_KEPT_MAX = 64
#: Archives fetched (or being fetched) ahead of the reader, at most, per process.
STREAMS_AHEAD = 2
#: The most of one archive held in memory ahead of the reader; past it the archive
#: is dropped and streamed again when the reader gets to it.
STREAM_HOLD_BYTES = 64 * 1024 * 1024


class _Whole:
    """An object read whole ahead of the reader: ``pieces`` (None: absent), then the
    ``error`` its stream raised, if any (``opened`` False: raised before any piece,
    as ``read_chunks`` itself would), or ``dropped`` when it was too large to hold."""

    __slots__ = ("dropped", "error", "opened", "pieces")

    def __init__(
        self,
        pieces: list[bytes] | None,
        error: Exception | None = None,
        *,
        opened: bool = True,
        dropped: bool = False,
    ) -> None:
        self.pieces = pieces
        self.error = error
        self.opened = opened
        self.dropped = dropped

    def replay(self) -> Iterator[bytes] | None:
        if self.error is not None and not self.opened:
            raise self.error
        if self.pieces is None:
            return None
        return _replayed(self.pieces, self.error)


def _replayed(pieces: list[bytes], error: Exception | None) -> Iterator[bytes]:
    for i, piece in enumerate(pieces):
        pieces[i] = b""  # let go of each piece once read
        yield piece
    if error is not None:
        raise error


def _fetch_whole(source: Source, key: str, cap: int) -> _Whole:
    """``key`` read whole from ``source`` under ``cap`` (up to ``STREAM_HOLD_BYTES``)."""
    try:
        pieces = read_chunks(source, key, max_bytes=cap)
    except FetchError as exc:
        return _Whole(None, exc, opened=False)
    if pieces is None:
        return _Whole(None)
    got: list[bytes] = []
    held = 0
    try:
        for piece in pieces:
            held += len(piece)
            if held > STREAM_HOLD_BYTES:
                return _Whole(None, dropped=True)
            got.append(piece)
    except FetchError as exc:
        return _Whole(got, exc)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    return _Whole(got)


class PipelinedSource:
    """``inner`` (an http(s) or S3 source) with reads ahead and kept immutable objects."""

    def __init__(self, inner: Source, concurrency: int) -> None:
        self.inner = inner
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="prefetch")
        self._ahead: OrderedDict[str, Future[bytes | None]] = OrderedDict()
        self._keys: Iterator[tuple[str, int]] = iter(())
        self._more: deque[tuple[str, int]] = deque()
        self._kept: dict[str, bytes | None] = {}
        self._keeping: dict[str, Future[bytes | None]] = {}
        self._lock = threading.Lock()
        self._streamer = ThreadPoolExecutor(STREAMS_AHEAD, thread_name_prefix="archive")
        self._streams: OrderedDict[str, tuple[int, Future[_Whole]]] = OrderedDict()
        self._stream_plan: list[tuple[str, int]] = []
        self._stream_next = 0  # the index in the plan of the next archive to fetch

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
            self._more.clear()
            self._fill()

    def read_ahead_more(self, keys: Iterable[tuple[str, int]]) -> None:
        """More keys the reader will ``get``, after those it has already named (for a
        reader that learns them as it goes, such as the round records of the pulses
        of an archive)."""
        with self._lock:
            self._more.extend(keys)
            self._fill()

    def _fill(self) -> None:
        while len(self._ahead) < self.concurrency:
            item = next(self._keys, None)
            if item is None:
                if not self._more:
                    return
                item = self._more.popleft()
            key, cap = item
            if key not in self._ahead:
                self._ahead[key] = self._executor.submit(_get, self.inner, key, cap)

    def keep_ahead(self, key: str) -> None:
        """Fetch ``key``, an immutable object kept once read (a certificate, a PQ key
        document), in the background now, unless it is kept already; no later
        ``read_ahead`` cancels it."""
        with self._lock:
            if (
                key.startswith(_KEPT_PREFIXES)
                and key not in self._kept
                and key not in self._keeping
            ):
                self._keeping[key] = self._executor.submit(_get, self.inner, key, MAX_OBJECT_BYTES)

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        if key in self._kept:
            return self._kept[key]
        keeping = self._keeping.pop(key, None)
        if keeping is not None and max_bytes == MAX_OBJECT_BYTES:
            data = keeping.result()
            if len(self._kept) < _KEPT_MAX:
                self._kept[key] = data
            return data
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

    def stream_ahead(self, keys: Iterable[tuple[str, int]]) -> None:
        """The large objects (daily archives) the reader will ``stream`` next, in order,
        each with its size cap (replaces any before). At most ``STREAMS_AHEAD`` are
        fetched ahead of the reader at a time."""
        with self._lock:
            self._drop_streams()
            self._stream_plan, self._stream_next = list(keys), 0
            self._fill_streams()

    def _drop_streams(self) -> None:
        for _cap, future in self._streams.values():
            future.cancel()
        self._streams.clear()

    def _fill_streams(self) -> None:
        plan = self._stream_plan
        while len(self._streams) < STREAMS_AHEAD and self._stream_next < len(plan):
            key, cap = plan[self._stream_next]
            self._stream_next += 1
            if key not in self._streams:
                future = self._streamer.submit(_fetch_whole, self.inner, key, cap)
                self._streams[key] = (cap, future)

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        """``key`` in pieces: from its fetch ahead (``stream_ahead``) if it has one,
        else streamed from ``inner`` now (and, if it comes later in the plan, the
        archives read ahead move on past it)."""
        with self._lock:
            ahead = self._streams.get(key)
            if ahead is not None:
                while True:  # drop the archives read ahead that the reader skipped
                    first, (_cap, skipped) = self._streams.popitem(last=False)
                    if first == key:
                        break
                    skipped.cancel()
            else:
                later = [k for k, _ in self._stream_plan[self._stream_next :]]
                if key in later:  # the reader jumped ahead of the plan (a gap of days)
                    self._drop_streams()
                    self._stream_next += later.index(key) + 1
            self._fill_streams()
        if ahead is not None and ahead[0] == max_bytes:
            whole = ahead[1].result()
            if not whole.dropped:
                return whole.replay()
        return read_chunks(self.inner, key, max_bytes=max_bytes)

    def rest(self) -> None:
        """Drop what is read ahead, let what is in flight finish, and stop this
        process's fetch threads (made again when next needed): a process that is
        about to fork its workers (``replay``) forks only when it runs no other
        thread, and a forked worker starts in a fraction of the time of a spawned one."""
        self.read_ahead(())
        self.stream_ahead(())
        with self._lock:
            self._executor.shutdown(wait=True)
            self._streamer.shutdown(wait=True)
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="prefetch")
            self._streamer = ThreadPoolExecutor(STREAMS_AHEAD, thread_name_prefix="archive")
        settle = getattr(self.inner, "settle", None)
        if settle is not None:
            settle()

    def close(self) -> None:
        self.read_ahead(())
        self.stream_ahead(())
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._streamer.shutdown(wait=False, cancel_futures=True)


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
