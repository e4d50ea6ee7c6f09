"""LocalSource: a site in a local directory, read by key."""

from __future__ import annotations

from pathlib import Path

import pytest
from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import LocalSource, TooLargeError

UNSAFE = ["a/b/..", "a/b/.", "a/b/", "a//b/c", "a/./b/c", "../a/b/c", "a/../a/b/c", "/a/b/c"]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").write_bytes(b"pulse")
    (tmp_path / "top").write_bytes(b"top")
    (tmp_path / "outside").write_bytes(b"not the site's")
    return tmp_path


def test_reads_what_the_site_has(site: Path) -> None:
    source = LocalSource(site)
    assert source.get("a/b/c") == b"pulse"
    assert source.get("a/b/c") == b"pulse"  # again, from the kept directory
    assert source.get("top") == b"top"
    assert source.get("a/b/none") is None
    assert source.get("a/none/c") is None
    assert source.get("a/b") is None  # a directory is no object
    with pytest.raises(TooLargeError, match="larger than 4 bytes"):
        source.get("a/b/c", max_bytes=4)


@pytest.mark.parametrize("key", UNSAFE)
def test_refuses_unsafe_keys(site: Path, key: str) -> None:
    """Whether or not the directory the key names was read before."""
    fresh = LocalSource(site / "a")
    with pytest.raises(FetchError, match="unsafe key"):
        fresh.get(key)
    used = LocalSource(site / "a")
    assert used.get("a/b/c") is None and used.get("b/c") == b"pulse"
    with pytest.raises(FetchError, match="unsafe key"):
        used.get(key)
    with pytest.raises(FetchError, match="unsafe key"):
        used.get(key.replace("a/", "", 1))
