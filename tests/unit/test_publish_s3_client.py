"""S3Publisher with a test double: request shapes and error translation (no network)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from beacon.errors import AlreadyPublishedError, PublishError
from beacon.publish import IMMUTABLE_CACHE_CONTROL, JSON, Publisher
from beacon.publish.s3 import S3Publisher, TransientPublishError, make_client

NOW = datetime(2026, 11, 21, 16, 35, tzinfo=UTC)


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


class FakeS3:
    """Objects in a dict; ``fail`` makes the next calls raise."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls: list[dict[str, Any]] = []
        self.fail: dict[str, BaseException] = {}
        self.page_size = 2

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if "put" in self.fail:
            raise self.fail["put"]
        if kwargs.get("IfNoneMatch") == "*" and kwargs["Key"] in self.objects:
            raise client_error("PreconditionFailed", 412, "At least one of the pre-conditions")
        self.objects[kwargs["Key"]] = kwargs["Body"]
        return {}

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        if "get" in self.fail:
            raise self.fail["get"]
        if kwargs["Key"] not in self.objects:
            raise client_error("NoSuchKey", 404, "The specified key does not exist.")
        return {"Body": io.BytesIO(self.objects[kwargs["Key"]])}

    def get_paginator(self, operation_name: str) -> Any:
        assert operation_name == "list_objects_v2"
        fake = self

        class Paginator:
            def paginate(self, *, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:
                keys = sorted(k for k in fake.objects if k.startswith(Prefix))
                for i in range(0, len(keys), fake.page_size):
                    if i and "list" in fake.fail:
                        raise fake.fail["list"]
                    yield {"Contents": [{"Key": k} for k in keys[i : i + fake.page_size]]}

        return Paginator()


def test_immutable_put_is_conditional_with_long_cache() -> None:
    fake = FakeS3()
    pub: Publisher = S3Publisher("b", client=fake)  # mypy checks the port
    pub.put_immutable("beacon/2.0/chain/1/pulse/1", b"p", content_type=JSON)
    assert fake.calls == [
        {
            "Bucket": "b",
            "Key": "beacon/2.0/chain/1/pulse/1",
            "Body": b"p",
            "ContentType": JSON,
            "CacheControl": IMMUTABLE_CACHE_CONTROL,
            "IfNoneMatch": "*",
        }
    ]


def test_412_compares_bytes() -> None:
    fake = FakeS3()
    pub = S3Publisher("b", client=fake)
    pub.put_immutable("k", b"one", content_type=JSON)
    pub.put_immutable("k", b"one", content_type=JSON)
    with pytest.raises(AlreadyPublishedError, match="s3://b/k"):
        pub.put_immutable("k", b"two", content_type=JSON)
    assert fake.objects["k"] == b"one"


def test_412_but_unreadable_is_transient() -> None:
    fake = FakeS3()
    fake.fail["put"] = client_error("PreconditionFailed", 412)
    with pytest.raises(TransientPublishError, match="cannot be read"):
        S3Publisher("b", client=fake).put_immutable("k", b"x", content_type=JSON)


def test_object_lock_parameters() -> None:
    fake = FakeS3()
    pub = S3Publisher("b", object_lock_days=3650, client=fake, now=lambda: NOW)
    pub.put_immutable("k", b"x", content_type=JSON)
    call = fake.calls[0]
    assert call["ObjectLockMode"] == "COMPLIANCE"
    assert call["ObjectLockRetainUntilDate"] == NOW + timedelta(days=3650)
    pub.put_mutable("m", b"y", content_type=JSON, max_age=10)
    assert "ObjectLockMode" not in fake.calls[1]


def test_mutable_put_has_short_cache_and_no_condition() -> None:
    fake = FakeS3()
    pub = S3Publisher("b", prefix="/site/", client=fake)
    pub.put_mutable("beacon/2.0/pulse/last", b"1", content_type=JSON, max_age=30)
    pub.put_mutable("beacon/2.0/pulse/last", b"2", content_type=JSON, max_age=30)
    assert fake.calls[-1] == {
        "Bucket": "b",
        "Key": "site/beacon/2.0/pulse/last",
        "Body": b"2",
        "ContentType": JSON,
        "CacheControl": "public, max-age=30",
    }
    assert pub.get("beacon/2.0/pulse/last") == b"2"
    with pytest.raises(ValueError, match="max_age"):
        pub.put_mutable("k", b"", content_type=JSON, max_age=-1)


def test_get_list_and_prefix() -> None:
    fake = FakeS3()
    fake.objects = {"p/a/1": b"1", "p/a/10": b"10", "p/a/2": b"2", "p/b": b"b", "other": b"o"}
    pub = S3Publisher("b", prefix="p", client=fake)
    assert pub.get("a/1") == b"1"
    assert pub.get("a/3") is None
    assert list(pub.list("a/")) == ["a/1", "a/10", "a/2"]
    assert list(pub.list("")) == ["a/1", "a/10", "a/2", "b"]
    assert list(S3Publisher("b", client=fake).list("o")) == ["other"]


@pytest.mark.parametrize("key", ["", "/x", "a//b", "../x", "a/./b", "a\\b"])
def test_invalid_keys(key: str) -> None:
    pub = S3Publisher("b", client=FakeS3())
    with pytest.raises(PublishError, match="invalid key"):
        pub.put_immutable(key, b"x", content_type=JSON)
    with pytest.raises(PublishError, match="invalid key"):
        pub.get(key)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket": ""}, "bucket"),
        ({"bucket": "b", "prefix": "../up"}, "prefix"),
        ({"bucket": "b", "object_lock_days": 0}, "object_lock_days"),
        ({"bucket": "b", "object_lock_days": True}, "object_lock_days"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Publisher(client=FakeS3(), **kwargs)


@pytest.mark.parametrize(
    ("error", "transient", "text"),
    [
        (client_error("SlowDown", 503, "Please reduce your request rate."), True, "SlowDown"),
        (client_error("InternalError", 500), True, "HTTP 500"),
        (client_error("ConditionalRequestConflict", 409), True, "Conflict"),
        (client_error("RequestTimeout", 400), True, "RequestTimeout"),
        (client_error("AccessDenied", 403, "Access Denied."), False, "AccessDenied"),
        (client_error("NoSuchBucket", 404), False, "NoSuchBucket"),
        (client_error("InvalidAccessKeyId", 403), False, "InvalidAccessKeyId"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b/k"), True, "Could not"),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9/b/k"), True, "ReadTimeout"),
        (NoCredentialsError(), False, "Unable to locate credentials"),
        (ConnectionResetError(104, "Connection reset by peer"), True, "reset"),
    ],
)
def test_error_translation(error: BaseException, transient: bool, text: str) -> None:
    for operation in ("put", "get", "mutable"):
        fake = FakeS3()
        fake.fail = {"put": error, "get": error}
        pub = S3Publisher("bucket", client=fake)
        with pytest.raises(PublishError) as caught:
            if operation == "put":
                pub.put_immutable("k", b"x", content_type=JSON)
            elif operation == "get":
                pub.get("k")
            else:
                pub.put_mutable("k", b"x", content_type=JSON, max_age=1)
        assert isinstance(caught.value, TransientPublishError) is transient
        assert not isinstance(caught.value, AlreadyPublishedError)
        assert caught.value.__cause__ is error
        message = str(caught.value)
        assert text in message
        assert "s3://bucket/k" in message
        assert "\n" not in message


def test_list_errors_are_wrapped_during_iteration() -> None:
    fake = FakeS3()
    fake.objects = {f"k{i}": b"" for i in range(5)}
    fake.fail["list"] = client_error("ServiceUnavailable", 503)
    listing = S3Publisher("b", client=fake).list("k")
    assert [next(listing), next(listing)] == ["k0", "k1"]
    with pytest.raises(TransientPublishError, match="LIST s3://b/k"):
        next(listing)


def test_messages_are_one_line_without_userinfo_and_bounded() -> None:
    fake = FakeS3()
    fake.fail["get"] = EndpointConnectionError(endpoint_url="http://user:s3cr3t@host:1/b/k")
    with pytest.raises(TransientPublishError) as caught:
        S3Publisher("b", client=fake).get("k")
    assert "s3cr3t" not in str(caught.value)
    fake.fail["get"] = client_error("InternalError", 500, "line one\nline two " + "x" * 1000)
    with pytest.raises(TransientPublishError) as caught:
        S3Publisher("b", client=fake).get("k")
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) <= 300


def test_other_exceptions_are_not_disguised() -> None:
    fake = FakeS3()
    fake.fail["put"] = TypeError("a bug")
    with pytest.raises(TypeError, match="a bug"):
        S3Publisher("b", client=fake).put_immutable("k", b"x", content_type=JSON)


def test_make_client_needs_no_network_or_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    client: Any = make_client("http://127.0.0.1:9", "us-east-1")
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.retries["total_max_attempts"] == 1
    with pytest.raises(PublishError, match="cannot build"):
        make_client("not a url", "us-east-1")
