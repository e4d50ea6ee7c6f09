"""PipelinedSource: reads ahead in order, drops what the reader skips, keeps certificates."""

from __future__ import annotations

import pickle
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import LocalSource, S3Source
from beacon_verifier.prefetch import STREAM_HOLD_BYTES, STREAMS_AHEAD, PipelinedSource, pipelined


class SlowSource:
    """A fake network source: every get takes ``delay`` s; counts gets and overlap."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.gets: Counter[str] = Counter()
        self.caps: dict[str, int] = {}
        self.inside = 0
        self.peak = 0
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "slow://"

    def get(self, key: str, *, max_bytes: int = 1 << 20) -> bytes | None:
        with self._lock:
            self.gets[key] += 1
            self.caps[key] = max_bytes
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        time.sleep(self.delay)
        with self._lock:
            self.inside -= 1
        return None if key.endswith("/404") else key.encode()


def test_reads_ahead_in_order_with_many_in_flight() -> None:
    inner = SlowSource()
    source = PipelinedSource(inner, 8)
    keys = [f"k/{i}" for i in range(64)]
    source.read_ahead((k, 100) for k in keys)
    got = [source.get(k) for k in keys]
    assert got == [k.encode() for k in keys]
    assert set(inner.gets.values()) == {1}  # each fetched once
    assert set(inner.caps.values()) == {100}  # under the cap the reader gave
    assert 2 <= inner.peak <= 8  # overlapped, never past the concurrency
    source.close()


def test_skipped_keys_are_dropped_and_unexpected_ones_fetched_at_once() -> None:
    inner = SlowSource(0.001)
    source = PipelinedSource(inner, 4)
    source.read_ahead((f"k/{i}", 100) for i in range(20))
    assert source.get("k/0") == b"k/0"
    assert source.get("k/3") == b"k/3"  # k/1, k/2 skipped: dropped, not kept waiting
    assert source.get("other") == b"other"  # not read ahead: fetched directly
    assert source.get("k/1") == b"k/1"  # asked after all: fetched again
    assert [source.get(f"k/{i}") for i in range(4, 20)] == [f"k/{i}".encode() for i in range(4, 20)]
    assert not source._ahead  # nothing left behind
    source.close()


def test_a_new_read_ahead_replaces_the_old_one() -> None:
    inner = SlowSource(0.001)
    source = PipelinedSource(inner, 4)
    source.read_ahead((f"a/{i}", 100) for i in range(1000))
    source.get("a/0")
    source.read_ahead([])
    assert not source._ahead
    assert sum(inner.gets.values()) <= 6  # a window's worth at most, never the 1000
    source.close()


def test_certificates_are_fetched_once_per_process() -> None:
    inner = SlowSource(0.0)
    source = PipelinedSource(inner, 2)
    cert = layout.certificate_key("ab" * 32)
    pulse = layout.pulse_key(1, 1)
    for _ in range(3):
        assert source.get(cert) == cert.encode()
        source.get(pulse)
    assert inner.gets[cert] == 1 and inner.gets[pulse] == 3
    source.close()


def test_a_certificate_kept_ahead_is_fetched_once_whatever_is_read_ahead() -> None:
    inner = SlowSource(0.01)
    source = PipelinedSource(inner, 4)
    cert = layout.certificate_key("cd" * 32)
    source.keep_ahead(cert)
    source.read_ahead([("k/1", 100)])  # replaces the read-ahead, not the certificate
    source.keep_ahead(cert)
    assert source.get("k/1") == b"k/1"
    assert source.get(cert) == cert.encode() and source.get(cert) == cert.encode()
    source.keep_ahead(cert)  # kept: not fetched again
    source.keep_ahead("k/not-immutable")  # only certificates and PQ key documents
    assert inner.gets[cert] == 1 and inner.gets["k/not-immutable"] == 0
    source.close()


def test_oversized_read_ahead_answers_are_refetched_under_the_callers_cap() -> None:
    inner = SlowSource(0.0)
    source = PipelinedSource(inner, 2)
    source.read_ahead([("k/long-key-name", 100)])
    assert source.get("k/long-key-name", max_bytes=4) == b"k/long-key-name"  # fake ignores cap
    assert inner.gets["k/long-key-name"] == 2  # asked again, with the cap, of the inner source
    source.close()


class StreamingSource(SlowSource):
    """A fake source that streams ``archive/*`` in three pieces; ``archive/broken``
    fails after two, ``archive/refused`` before any, ``archive/huge`` is too large to
    hold ahead. Counts streams."""

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        with self._lock:
            self.gets[key] += 1
        if key.endswith("/404"):
            return None
        if key == "archive/refused":
            raise FetchError("archive/refused: HTTP 500")
        return self._pieces(key)

    def _pieces(self, key: str) -> Iterator[bytes]:
        size = STREAM_HOLD_BYTES if key == "archive/huge" else 4
        for n in range(3):
            if key == "archive/broken" and n == 2:
                raise FetchError("archive/broken: connection reset")
            yield key.encode() + bytes([n]) * size


def _read(pieces: Iterator[bytes] | None) -> list[bytes] | str | None:
    if pieces is None:
        return None
    got = []
    try:
        for piece in pieces:
            got.append(piece)
    except FetchError as exc:
        return [*got, str(exc)]  # type: ignore[list-item]
    return got


def _streamed(source: StreamingSource | PipelinedSource, key: str) -> list[bytes] | str | None:
    """What reading ``key`` as a stream gives: its pieces, or the error it raised."""
    try:
        return _read(source.stream(key, max_bytes=1 << 30))
    except FetchError as exc:
        return f"raised: {exc}"


def test_archives_read_ahead_read_back_as_their_streams_would() -> None:
    keys = ["archive/ok", "archive/broken", "archive/refused", "archive/404", "archive/huge"]
    direct = StreamingSource(0.0)
    expected = [_streamed(direct, key) for key in keys]
    inner = StreamingSource(0.0)
    source = PipelinedSource(inner, 4)
    source.stream_ahead((k, 1 << 30) for k in keys)
    got = [_streamed(source, key) for key in keys]
    assert got == expected  # the same pieces, then the same error at the same point
    assert got[2] == "raised: archive/refused: HTTP 500"
    assert all(inner.gets[k] == 1 for k in keys[:4])  # each fetched once, ahead
    assert inner.gets["archive/huge"] == 2  # too large to hold: streamed again
    source.close()


def test_archives_ahead_are_bounded_and_skipped_ones_dropped() -> None:
    inner = StreamingSource(0.0)
    source = PipelinedSource(inner, 4)
    keys = [f"archive/{i}" for i in range(10)]
    source.stream_ahead((k, 100) for k in keys)
    assert list(source._streams) == keys[:STREAMS_AHEAD]
    assert _read(source.stream("archive/1", max_bytes=100)) is not None  # 0 skipped
    assert list(source._streams) == keys[2 : 2 + STREAMS_AHEAD]
    # Past the archives ahead (a gap of days): streamed now, the read-ahead moves on.
    assert _read(source.stream("archive/6", max_bytes=100)) is not None
    assert list(source._streams) == keys[7 : 7 + STREAMS_AHEAD]
    assert _read(source.stream("archive/0", max_bytes=100)) is not None  # not planned
    assert list(source._streams) == keys[7 : 7 + STREAMS_AHEAD]
    source.stream_ahead(())
    assert not source._streams
    assert inner.gets["archive/5"] == 0 and inner.gets["archive/9"] == 0  # never ahead
    source.close()


def test_pickles_to_one_source_per_process() -> None:
    inner = S3Source("bucket", "prefix", "http://127.0.0.1:9", pool=4)
    source = PipelinedSource(inner, 4)
    a = pickle.loads(pickle.dumps(source))  # noqa: S301 - our own bytes
    b = pickle.loads(pickle.dumps(source))  # noqa: S301
    assert a is b and a.concurrency == 4 and a.inner.pool == 4


def test_pipelined_splits_the_concurrency_and_leaves_directories_alone(tmp_path: Path) -> None:
    local = LocalSource(tmp_path)
    assert pipelined(local, 32, 2) is local
    s3 = pipelined(S3Source("bucket", "", "http://127.0.0.1:9"), 32, 3)
    assert isinstance(s3, PipelinedSource)
    assert s3.concurrency == 11 and s3.inner.pool == 11  # type: ignore[attr-defined]
