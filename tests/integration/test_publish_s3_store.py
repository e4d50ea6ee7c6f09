"""S3Publisher against a real SeaweedFS S3 server on loopback."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from beacon.errors import AlreadyPublishedError, PublishError
from beacon.publish import IMMUTABLE_CACHE_CONTROL, JSON
from beacon.publish.s3 import S3Publisher, TransientPublishError

try:
    from .s3server import SeaweedS3Server
except ImportError:
    from s3server import SeaweedS3Server  # type: ignore[no-redef,import-not-found,unused-ignore]

pytestmark = pytest.mark.integration


def publisher(server: SeaweedS3Server, **kwargs: Any) -> S3Publisher:
    kwargs.setdefault("bucket", server.bucket)
    return S3Publisher(client=server.client(), **kwargs)


def anonymous_get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def anonymous_put(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_store_refuses_a_second_create_and_accepts_an_identical_retry(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    pub = publisher(s3_running)
    key = f"{key_prefix}/beacon/2.0/chain/1/pulse/1"
    pub.put_immutable(key, b"first", content_type=JSON)

    # The store itself refuses: a raw conditional PUT gets 412.
    with pytest.raises(ClientError) as refused:
        s3_running.client().put_object(
            Bucket=s3_running.bucket, Key=key, Body=b"second", IfNoneMatch="*"
        )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    with pytest.raises(AlreadyPublishedError):
        pub.put_immutable(key, b"second", content_type=JSON)
    pub.put_immutable(key, b"first", content_type=JSON)  # idempotent retry
    assert pub.get(key) == b"first"


def test_concurrent_creators_exactly_one_wins(s3_running: SeaweedS3Server, key_prefix: str) -> None:
    key = f"{key_prefix}/race"
    barrier = threading.Barrier(6)
    outcomes: dict[int, str] = {}

    def create(i: int) -> None:
        pub = publisher(s3_running)
        barrier.wait()
        try:
            pub.put_immutable(key, f"writer {i}".encode(), content_type=JSON)
            outcomes[i] = "won"
        except AlreadyPublishedError:
            outcomes[i] = "refused"

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 6
    assert len(winners) == 1
    assert publisher(s3_running).get(key) == f"writer {winners[0]}".encode()


def test_anonymous_get_works_and_anonymous_put_is_refused(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    pub = publisher(s3_running)
    key = f"{key_prefix}/beacon/2.0/pulse/last"
    pub.put_mutable(key, b'{"pulse":1}', content_type=JSON, max_age=30)
    url = f"{s3_running.endpoint_url}/{s3_running.bucket}/{key}"

    status, body, headers = anonymous_get(url)
    assert (status, body) == (200, b'{"pulse":1}')
    assert headers["Cache-Control"] == "public, max-age=30"
    assert headers["Content-Type"] == JSON

    assert anonymous_put(url, b"forged") == 403
    assert anonymous_put(f"{url}-new", b"forged") == 403
    assert anonymous_get(url)[1] == b'{"pulse":1}'
    assert anonymous_get(f"{url}-new")[0] == 404


def test_immutable_objects_carry_long_cache_headers(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    key = f"{key_prefix}/cert"
    publisher(s3_running).put_immutable(key, b"PEM", content_type="application/x-pem-file")
    status, body, headers = anonymous_get(f"{s3_running.endpoint_url}/{s3_running.bucket}/{key}")
    assert (status, body) == (200, b"PEM")
    assert headers["Cache-Control"] == IMMUTABLE_CACHE_CONTROL
    assert headers["Content-Type"] == "application/x-pem-file"


def test_object_lock_refuses_deleting_a_locked_version(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    pub = publisher(
        s3_running, bucket=s3_running.locked_bucket, object_lock_days=1, now=lambda: now
    )
    key = f"{key_prefix}/beacon/2.0/chain/1/pulse/7"
    pub.put_immutable(key, b"locked pulse", content_type=JSON)
    with pytest.raises(AlreadyPublishedError):
        pub.put_immutable(key, b"another pulse", content_type=JSON)
    pub.put_immutable(key, b"locked pulse", content_type=JSON)

    admin = s3_running.client()
    retention = admin.get_object_retention(Bucket=s3_running.locked_bucket, Key=key)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    until = retention["RetainUntilDate"]
    assert abs(until - (now + timedelta(days=1))) < timedelta(seconds=2)

    versions = admin.list_object_versions(Bucket=s3_running.locked_bucket, Prefix=key)
    version_id = versions["Versions"][0]["VersionId"]
    with pytest.raises(ClientError) as refused:
        admin.delete_object(Bucket=s3_running.locked_bucket, Key=key, VersionId=version_id)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    body = admin.get_object(Bucket=s3_running.locked_bucket, Key=key, VersionId=version_id)
    assert body["Body"].read() == b"locked pulse"
    assert pub.get(key) == b"locked pulse"


def test_get_list_and_mutable_round_trip_under_a_prefix(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    pub = publisher(s3_running, prefix=f"{key_prefix}/site/")
    keys = [
        "beacon/2.0/chain/1/pulse/1",
        "beacon/2.0/chain/1/pulse/10",
        "beacon/2.0/chain/1/pulse/2",
        "beacon/2.0/chain/2/pulse/1",
    ]
    for key in reversed(keys):
        pub.put_immutable(key, key.encode(), content_type=JSON)
    pub.put_mutable("beacon/2.0/pulse/last", b"v1", content_type=JSON, max_age=5)
    pub.put_mutable("beacon/2.0/pulse/last", b"v2", content_type=JSON, max_age=5)

    assert list(pub.list("beacon/2.0/chain/1/")) == sorted(keys[:3])
    assert list(pub.list("beacon/2.0/chain/1/pulse/1")) == [
        "beacon/2.0/chain/1/pulse/1",
        "beacon/2.0/chain/1/pulse/10",
    ]
    assert list(pub.list("")) == sorted([*keys, "beacon/2.0/pulse/last"])
    assert list(pub.list("nothing/")) == []
    assert pub.get("beacon/2.0/pulse/last") == b"v2"
    assert pub.get("beacon/2.0/chain/1/pulse/2") == b"beacon/2.0/chain/1/pulse/2"
    assert pub.get("beacon/2.0/chain/9/pulse/9") is None
    # The prefix is where the objects really are.
    raw = s3_running.client().get_object(
        Bucket=s3_running.bucket, Key=f"{key_prefix}/site/beacon/2.0/pulse/last"
    )
    assert raw["Body"].read() == b"v2"


def test_list_pages_through_many_keys(s3_running: SeaweedS3Server, key_prefix: str) -> None:
    pub = publisher(s3_running, prefix=key_prefix)
    client = s3_running.client()
    for i in range(25):
        client.put_object(Bucket=s3_running.bucket, Key=f"{key_prefix}/k/{i:03d}", Body=b"x")
    paginator = client.get_paginator("list_objects_v2")
    pages = list(
        paginator.paginate(
            Bucket=s3_running.bucket, Prefix=f"{key_prefix}/k/", PaginationConfig={"PageSize": 10}
        )
    )
    assert len(pages) == 3  # the store really pages
    assert list(pub.list("k/")) == [f"k/{i:03d}" for i in range(25)]


def test_default_credential_chain_from_environment(
    s3_running: SeaweedS3Server, key_prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_running.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_running.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    pub = S3Publisher(
        s3_running.bucket, endpoint_url=s3_running.endpoint_url, region=s3_running.region
    )
    pub.put_immutable(f"{key_prefix}/env", b"from env", content_type=JSON)
    assert pub.get(f"{key_prefix}/env") == b"from env"


def test_bad_credentials_and_missing_bucket_are_permanent_errors(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    secret = "not-the-secret-5f2c9a"
    bad = S3Publisher(
        s3_running.bucket,
        client=s3_running.client(aws_access_key_id="nobody", aws_secret_access_key=secret),
    )
    with pytest.raises(PublishError) as denied:
        bad.put_immutable(f"{key_prefix}/x", b"x", content_type=JSON)
    assert not isinstance(denied.value, TransientPublishError)
    assert secret not in str(denied.value)
    assert "\n" not in str(denied.value)

    missing = publisher(s3_running, bucket="no-such-bucket-here")
    with pytest.raises(PublishError) as no_bucket:
        missing.get(f"{key_prefix}/x")
    assert not isinstance(no_bucket.value, TransientPublishError)
    assert "NoSuchBucket" in str(no_bucket.value)


@pytest.mark.slow
def test_outage_is_transient_and_data_survives_a_restart(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    pub = publisher(s3_running)
    key = f"{key_prefix}/beacon/2.0/chain/1/pulse/3"
    pub.put_immutable(key, b"before restart", content_type=JSON)
    s3_running.stop()
    try:
        assert not s3_running.running
        with pytest.raises(TransientPublishError) as down:
            pub.put_immutable(f"{key_prefix}/during", b"x", content_type=JSON)
        assert "Could not connect" in str(down.value) or "Connect" in str(down.value)
        with pytest.raises(TransientPublishError):
            pub.get(key)
        with pytest.raises(TransientPublishError):
            list(pub.list(key_prefix))
    finally:
        s3_running.start()
    assert pub.get(key) == b"before restart"
    with pytest.raises(AlreadyPublishedError):
        pub.put_immutable(key, b"after restart", content_type=JSON)
    pub.put_immutable(f"{key_prefix}/after", b"after", content_type=JSON)
    assert list(pub.list(key_prefix)) == [f"{key_prefix}/after", key]
    # The bucket policy survived too.
    assert anonymous_get(f"{s3_running.endpoint_url}/{s3_running.bucket}/{key}")[0] == 200


@pytest.mark.slow
def test_sigkill_and_restart_keeps_acknowledged_objects(
    s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    pub = publisher(s3_running)
    keys = [f"{key_prefix}/p/{i}" for i in range(5)]
    for key in keys:
        pub.put_immutable(key, key.encode(), content_type=JSON)
    s3_running.kill()
    try:
        with pytest.raises(TransientPublishError):
            pub.get(keys[0])
    finally:
        s3_running.start()
    assert [pub.get(key) for key in keys] == [key.encode() for key in keys]
    with pytest.raises(AlreadyPublishedError):
        pub.put_immutable(keys[0], b"forged", content_type=JSON)
