"""The gateway's reads: the cache's byte bound, LRU order, TTL of mutable objects,
and errors of the site as one ``UpstreamError``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import MAX_OBJECT_BYTES, LocalSource

from beacon.serve.app import content_type
from beacon.serve.upstream import Upstream, UpstreamError


class CountingSource:
    """A site in a dict that counts its reads (a remote source: read on the pool)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        self.reads.append(key)
        data = self.objects.get(key)
        if data is not None and len(data) > max_bytes:
            raise FetchError(f"{key}: larger than {max_bytes} bytes")
        return data

    def describe(self) -> str:
        return "dict"


def test_immutable_objects_are_read_once_and_the_cache_keeps_its_byte_bound() -> None:
    source = CountingSource({f"k{i}": bytes(100) for i in range(20)})
    upstream = Upstream(source, cache_bytes=1000)  # ten objects of 100 bytes

    async def run() -> None:
        for i in range(20):
            assert await upstream.get(f"k{i}", max_bytes=200, immutable=True) == bytes(100)
            assert upstream.cached_bytes <= 1000
        assert await upstream.get("k19", max_bytes=200, immutable=True) is not None
        assert source.reads.count("k19") == 1  # kept
        assert await upstream.get("k0", max_bytes=200, immutable=True) is not None
        assert source.reads.count("k0") == 2  # evicted, least recently used

    asyncio.run(run())
    upstream.close()


def test_mutable_objects_live_one_ttl_and_absent_ones_are_not_cached() -> None:
    source = CountingSource({"last": b"1"})
    upstream = Upstream(source, mutable_ttl=0.05)

    async def run() -> None:
        assert await upstream.get("last", max_bytes=10, immutable=False) == b"1"
        source.objects["last"] = b"2"
        assert await upstream.get("last", max_bytes=10, immutable=False) == b"1"  # within TTL
        await asyncio.sleep(0.08)
        assert await upstream.get("last", max_bytes=10, immutable=False) == b"2"
        assert await upstream.get("later", max_bytes=10, immutable=True) is None
        source.objects["later"] = b"3"
        assert await upstream.get("later", max_bytes=10, immutable=True) == b"3"

    asyncio.run(run())
    upstream.close()


def test_an_object_too_large_for_the_cache_is_served_but_not_kept() -> None:
    source = CountingSource({"big": bytes(500)})
    upstream = Upstream(source, cache_bytes=1000)

    async def run() -> None:
        for _ in range(2):
            assert len(await upstream.get("big", max_bytes=1000, immutable=True) or b"") == 500
        assert source.reads == ["big", "big"] and upstream.cached_bytes == 0

    asyncio.run(run())
    upstream.close()


def test_site_failures_and_oversized_objects_are_one_upstream_error(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(bytes(2048))
    upstream = Upstream(LocalSource(tmp_path))
    with pytest.raises(UpstreamError, match="larger than 1024 bytes"):
        asyncio.run(upstream.get("big", max_bytes=1024, immutable=True))
    with pytest.raises(UpstreamError, match="unsafe key"):
        asyncio.run(upstream.get("a/../big", max_bytes=1024, immutable=True))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("beacon/2.0/chain/1/pulse/7", "application/json"),
        ("beacon/2.0/chain/1/entropy/7", "application/json"),
        ("beacon/2.0/certificate/ab12", "text/plain"),
        ("beacon/2.0/batch/b-1", "application/octet-stream"),
        ("beacon/2.0/archive/day/2026-01-01.jsonl.gz", "application/gzip"),
        ("beacon/2.0/index/bounds.json", "application/json"),
        ("index.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("README", "application/octet-stream"),
    ],
)
def test_content_types(key: str, expected: str) -> None:
    assert content_type(key) == expected
