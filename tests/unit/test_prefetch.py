"""PipelinedSource: reads ahead in order, drops what the reader skips, keeps certificates."""

from __future__ import annotations

import pickle
import threading
import time
from collections import Counter
from pathlib import Path

from beacon_verifier import layout
from beacon_verifier.fetch import LocalSource, S3Source
from beacon_verifier.prefetch import PipelinedSource, pipelined


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


def test_oversized_read_ahead_answers_are_refetched_under_the_callers_cap() -> None:
    inner = SlowSource(0.0)
    source = PipelinedSource(inner, 2)
    source.read_ahead([("k/long-key-name", 100)])
    assert source.get("k/long-key-name", max_bytes=4) == b"k/long-key-name"  # fake ignores cap
    assert inner.gets["k/long-key-name"] == 2  # asked again, with the cap, of the inner source
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
