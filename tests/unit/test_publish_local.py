"""LocalDirPublisher: create-only by os.link, atomic replace, key rules, listing."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from beacon.errors import AlreadyPublishedError, PublishError
from beacon.publish import JSON, Publisher
from beacon.publish.local import LocalDirPublisher, validate_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_then_identical_retry_then_refusal(tmp_path: Path) -> None:
    pub: Publisher = LocalDirPublisher(tmp_path / "site")  # mypy checks the port
    key = "beacon/2.0/chain/1/pulse/1"
    pub.put_immutable(key, b"pulse one", content_type=JSON)
    assert (tmp_path / "site/beacon/2.0/chain/1/pulse/1").read_bytes() == b"pulse one"
    pub.put_immutable(key, b"pulse one", content_type=JSON)  # idempotent retry
    with pytest.raises(AlreadyPublishedError, match="already published"):
        pub.put_immutable(key, b"pulse ONE", content_type=JSON)
    assert pub.get(key) == b"pulse one"
    assert sorted(p.name for p in (tmp_path / "site/beacon/2.0/chain/1/pulse").iterdir()) == ["1"]


def test_existing_file_written_by_someone_else_is_refused(tmp_path: Path) -> None:
    # No check-then-write: the link itself fails on an existing name.
    (tmp_path / "a").mkdir()
    (tmp_path / "a/b").write_bytes(b"other")
    pub = LocalDirPublisher(tmp_path)
    with pytest.raises(AlreadyPublishedError):
        pub.put_immutable("a/b", b"mine", content_type=JSON)
    assert (tmp_path / "a/b").read_bytes() == b"other"


def test_empty_bytes_are_a_valid_object(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    pub.put_immutable("empty", b"", content_type=JSON)
    pub.put_immutable("empty", b"", content_type=JSON)
    with pytest.raises(AlreadyPublishedError):
        pub.put_immutable("empty", b"x", content_type=JSON)
    assert pub.get("empty") == b""


def test_concurrent_creators_exactly_one_wins(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    writers = 16
    barrier = threading.Barrier(writers)
    outcomes: dict[int, str] = {}

    def create(i: int) -> None:
        barrier.wait()
        try:
            pub.put_immutable("race/key", f"writer {i}".encode() * 1000, content_type=JSON)
            outcomes[i] = "won"
        except AlreadyPublishedError:
            outcomes[i] = "refused"

    threads = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == writers
    assert len(winners) == 1
    assert pub.get("race/key") == f"writer {winners[0]}".encode() * 1000
    assert os.listdir(tmp_path / "race") == ["key"]  # no temporary file left


def test_concurrent_creators_with_same_bytes_all_succeed(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            pub.put_immutable("same", b"identical", content_type=JSON)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert pub.get("same") == b"identical"


def test_files_are_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        pub = LocalDirPublisher(tmp_path / "root")
        pub.put_immutable("x/y/immutable", b"1", content_type=JSON)
        pub.put_mutable("x/mutable", b"2", content_type=JSON, max_age=5)
    finally:
        os.umask(old)
    assert mode(tmp_path / "root/x/y/immutable") == 0o644
    assert mode(tmp_path / "root/x/mutable") == 0o644
    assert mode(tmp_path / "root/x") == 0o755
    assert mode(tmp_path / "root/x/y") == 0o755


def test_mutable_put_replaces_atomically(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    pub.put_mutable("beacon/2.0/pulse/last", b"one", content_type=JSON, max_age=5)
    pub.put_mutable("beacon/2.0/pulse/last", b"two", content_type=JSON, max_age=5)
    assert pub.get("beacon/2.0/pulse/last") == b"two"
    assert os.listdir(tmp_path / "beacon/2.0/pulse") == ["last"]


def test_mutable_put_does_not_touch_immutability_of_other_keys(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    pub.put_mutable("k", b"mutable", content_type=JSON, max_age=5)
    # A later create-only write to the same key is refused by the filesystem.
    with pytest.raises(AlreadyPublishedError):
        pub.put_immutable("k", b"other", content_type=JSON)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs/path",
        "a//b",
        "a/b/",
        "../escape",
        "a/../../escape",
        "a/./b",
        ".hidden",
        "a/.tmp-123-b",
        "a\\b",
        "a/b\x00c",
        "a/\nb",
        "k" * 1025,
    ],
)
def test_invalid_keys_are_refused_everywhere(tmp_path: Path, key: str) -> None:
    pub = LocalDirPublisher(tmp_path / "root")
    with pytest.raises(PublishError, match="invalid key"):
        validate_key(key)
    with pytest.raises(PublishError):
        pub.put_immutable(key, b"x", content_type=JSON)
    with pytest.raises(PublishError):
        pub.put_mutable(key, b"x", content_type=JSON, max_age=1)
    with pytest.raises(PublishError):
        pub.get(key)
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "root").exists()


def test_get_missing_and_directory_keys(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    assert pub.get("nothing/here") is None
    pub.put_immutable("a/b", b"x", content_type=JSON)
    assert pub.get("a") is None  # a directory is not an object
    assert pub.get("a/b/c") is None  # a file is not a directory


def test_key_that_is_a_directory_cannot_be_written(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    pub.put_immutable("a/b", b"x", content_type=JSON)
    with pytest.raises(PublishError):
        pub.put_immutable("a", b"y", content_type=JSON)
    with pytest.raises(PublishError):
        pub.put_mutable("a", b"y", content_type=JSON, max_age=1)
    with pytest.raises(PublishError, match="cannot create") as caught:
        pub.put_immutable("a/b/c", b"z", content_type=JSON)
    assert not isinstance(caught.value, AlreadyPublishedError)


def test_list_is_lexicographic_and_hides_temporary_files(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    keys = [
        "beacon/2.0/chain/1/pulse/1",
        "beacon/2.0/chain/1/pulse/10",
        "beacon/2.0/chain/1/pulse/2",
        "beacon/2.0/chain/1/pulse/last",
        "beacon/2.0/chain/2/pulse/1",
        "beacon/2.0/pulse/last",
    ]
    for key in reversed(keys):
        pub.put_immutable(key, key.encode(), content_type=JSON)
    (tmp_path / "beacon/2.0/chain/1/pulse/.tmp-dead-1").write_bytes(b"crash leftover")
    assert list(pub.list("")) == sorted(keys)
    assert list(pub.list("beacon/2.0/chain/1/pulse/1")) == keys[:2]
    assert list(pub.list("beacon/2.0/chain/")) == sorted(keys[:5])
    assert list(pub.list("beacon/2.0/ch")) == sorted(keys[:5])
    assert list(pub.list("beacon/3.0/")) == []
    assert list(pub.list("beacon/2.0/pulse/last/x")) == []
    assert list(LocalDirPublisher(tmp_path / "absent").list("")) == []
    with pytest.raises(PublishError):
        list(pub.list("../"))


def test_filesystem_errors_become_publish_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    pub = LocalDirPublisher(tmp_path)
    with pytest.raises(PublishError, match="Operation not permitted") as caught:
        pub.put_immutable("k", b"x", content_type=JSON)
    assert not isinstance(caught.value, AlreadyPublishedError)
    assert isinstance(caught.value.__cause__, OSError)
    assert os.listdir(tmp_path) == []  # the temporary file is gone


def test_served_tree_matches_keys(tmp_path: Path) -> None:
    # What a static host or file:// sees is exactly key -> bytes.
    pub = LocalDirPublisher(tmp_path)
    pub.put_immutable("beacon/2.0/certificate/abc", b"PEM", content_type=JSON)
    assert (
        (tmp_path / "beacon" / "2.0" / "certificate" / "abc")
        .as_uri()
        .endswith("/beacon/2.0/certificate/abc")
    )
    assert pub.path_for("beacon/2.0/certificate/abc").read_bytes() == b"PEM"
