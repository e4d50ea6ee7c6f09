"""A ``Publisher`` on S3-compatible storage (AWS S3, SeaweedFS, MinIO, R2, ...).

Create-only writes are enforced by the store: ``PutObject`` with
``If-None-Match: *`` is refused with 412 when the key exists. On 412 the stored
bytes are read back: equal bytes mean an earlier attempt of the same write
succeeded (its response was lost), different bytes raise ``AlreadyPublishedError``.
With ``object_lock_days`` set, immutable objects are also written with Object Lock
in COMPLIANCE mode until now + that many days (the bucket must have been created
with Object Lock enabled), so that not even the account owner can delete them.

Immutable objects carry ``Cache-Control: public, max-age=31536000, immutable``,
mutable ones ``public, max-age={max_age}``.

Credentials come from the standard AWS chain (environment, shared files,
instance or container roles), never from the beacon's configuration.

Errors: every botocore failure is wrapped into ``PublishError`` with one line that
names the operation and the object and never carries credentials. Failures that
may pass on their own (connection refused or reset, timeouts, throttling, HTTP
5xx, a conflicting concurrent request) raise the subclass
``TransientPublishError``; the rest (access denied, no such bucket, no
credentials, bad request) raise ``PublishError`` itself.

Conditional writes (``put_if``, the failover lease) use ``If-None-Match: *`` to
create and ``If-Match: <ETag>`` to replace; a 412 raises ``ConditionFailedError``.

Deliberately not here: retries. The client makes a single attempt per call;
the outbox decides when to try again.

boto3 and botocore are imported only when a client is built or an error is
translated, so importing this module is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from beacon.errors import (
    AlreadyPublishedError,
    ConditionFailedError,
    PublishError,
    TransientPublishError,
)
from beacon.publish import IMMUTABLE_CACHE_CONTROL
from beacon.publish.local import validate_key

__all__ = ["S3Client", "S3Publisher", "TransientPublishError", "make_client"]

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
OBJECT_LOCK_MODE = "COMPLIANCE"

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_CODES = frozenset(
    {
        "ConditionalRequestConflict",  # 409: a concurrent write to the key; retry
        "OperationAborted",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalError",
    }
)
_PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_USERINFO = re.compile(r"//[^/@\s]*@")
_MAX_MESSAGE = 300


class S3Client(Protocol):
    """The part of a boto3 S3 client this adapter uses (a test double needs no more)."""

    def put_object(self, **kwargs: Any) -> Any: ...

    def get_object(self, **kwargs: Any) -> Any: ...

    def get_paginator(self, operation_name: str) -> Any: ...


def make_client(
    endpoint_url: str | None = None, region: str | None = None, timeout: float | None = None
) -> S3Client:
    """A boto3 S3 client with credentials from the standard AWS chain.

    Path-style addressing when ``endpoint_url`` is given (self-hosted stores),
    a single attempt per call, bounded timeouts (``timeout`` seconds for both
    connecting and reading, when given). Raises ``PublishError`` when boto3
    cannot build the client (bad endpoint URL or region).
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    config = Config(
        connect_timeout=timeout or CONNECT_TIMEOUT,
        read_timeout=timeout or READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": 1},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    try:
        client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
    except (BotoCoreError, ValueError) as exc:
        raise PublishError(f"cannot build an S3 client: {_one_line(str(exc))}") from exc
    return client


def _one_line(text: str) -> str:
    text = _USERINFO.sub("//", " ".join(text.split()))
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _error_code(exc: BaseException) -> tuple[str, int | None]:
    """(S3 error code, HTTP status) of a botocore ``ClientError``; ("", None) otherwise."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", None
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(error.get("Code", "")), status if isinstance(status, int) else None


def _translate(exc: Exception, what: str) -> PublishError | None:
    """The ``PublishError`` for a store failure, or None when ``exc`` is not one."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        IncompleteReadError,
        SSLError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    transient: bool
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        message = str((exc.response.get("Error") or {}).get("Message", ""))
        transient = code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
        transient = transient or (status is not None and status >= 500)
        detail = f"{code or 'error'} (HTTP {status})" + (f": {message}" if message else "")
    elif isinstance(exc, SSLError):
        transient, detail = False, f"TLS failure: {exc}"
    elif isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        transient, detail = True, f"{type(exc).__name__}: {exc}"
    elif isinstance(exc, BotoCoreError):
        transient, detail = False, f"{type(exc).__name__}: {exc}"
    elif isinstance(exc, OSError):
        transient, detail = True, f"{type(exc).__name__}: {exc}"
    else:
        return None
    cls = TransientPublishError if transient else PublishError
    return cls(_one_line(f"{what} failed: {detail}"))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class S3Publisher:
    """Publishes the key ``k`` as the object ``{prefix}k`` in ``bucket``.

    ``client`` defaults to ``make_client(endpoint_url, region)``; ``now`` is the
    clock used for Object Lock retain-until dates. ``lease_timeout`` bounds the
    conditional requests of the failover lease (``put_if``, ``get_versioned``) on
    a client of their own, so that a store that hangs cannot hold a renewal past
    the lease's TTL (default: the normal timeouts). Raises ``ValueError`` for an
    empty bucket, an invalid prefix or ``object_lock_days`` < 1; ``PublishError``
    when the default client cannot be built.
    """

    __slots__ = ("_client", "_lease_client", "_now", "bucket", "object_lock_days", "prefix")

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        object_lock_days: int | None = None,
        client: S3Client | None = None,
        *,
        now: Callable[[], datetime] = _utc_now,
        lease_timeout: float | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must not be empty")
        stripped = prefix.strip("/")
        if stripped:
            try:
                validate_key(stripped)
            except PublishError as exc:
                raise ValueError(f"invalid prefix {prefix!r}: {exc}") from exc
        if object_lock_days is not None and (
            type(object_lock_days) is not int or object_lock_days < 1
        ):
            raise ValueError(f"object_lock_days must be a positive int, got {object_lock_days!r}")
        self.bucket = bucket
        self.prefix = f"{stripped}/" if stripped else ""
        self.object_lock_days = object_lock_days
        self._client = client if client is not None else make_client(endpoint_url, region)
        self._lease_client = (
            make_client(endpoint_url, region, lease_timeout)
            if client is None and lease_timeout is not None
            else self._client
        )
        self._now = now

    def __repr__(self) -> str:
        return f"S3Publisher(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _object(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    # --- writes -----------------------------------------------------------------

    def put_immutable(self, key: str, data: bytes, *, content_type: str) -> None:
        """Create ``key``; the store refuses (412) if it exists.

        Returns normally when the stored bytes equal ``data``. Raises
        ``AlreadyPublishedError`` when they differ, ``TransientPublishError`` /
        ``PublishError`` when the store fails, ``PublishError`` for an invalid key.
        """
        name = self._object(key)
        extra: dict[str, Any] = {}
        if self.object_lock_days is not None:
            extra["ObjectLockMode"] = OBJECT_LOCK_MODE
            extra["ObjectLockRetainUntilDate"] = self._now() + timedelta(days=self.object_lock_days)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=data,
                ContentType=content_type,
                CacheControl=IMMUTABLE_CACHE_CONTROL,
                IfNoneMatch="*",
                **extra,
            )
            return
        except Exception as exc:
            code, status = _error_code(exc)
            if code not in _PRECONDITION_FAILED and status != 412:
                error = _translate(exc, f"PUT {self._uri(name)}")
                if error is None:
                    raise
                raise error from exc
        existing = self._read(name)
        if existing is None:
            raise TransientPublishError(
                f"PUT {self._uri(name)}: the store says it exists (412) but it cannot be read"
            )
        if existing != data:
            raise AlreadyPublishedError(
                f"{self._uri(name)} is already published with different bytes "
                f"({len(existing)} stored, {len(data)} offered)"
            )

    def put_mutable(self, key: str, data: bytes, *, content_type: str, max_age: int) -> None:
        """Create or replace ``key`` (S3 replaces objects atomically).

        Raises ``ValueError`` for a negative ``max_age``, ``PublishError`` for an
        invalid key, ``TransientPublishError`` / ``PublishError`` when the store fails.
        """
        if type(max_age) is not int or max_age < 0:
            raise ValueError(f"max_age must be a non-negative int, got {max_age!r}")
        name = self._object(key)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=data,
                ContentType=content_type,
                CacheControl=f"public, max-age={max_age}",
            )
        except Exception as exc:
            error = _translate(exc, f"PUT {self._uri(name)}")
            if error is None:
                raise
            raise error from exc

    def put_if(
        self,
        key: str,
        data: bytes,
        *,
        version: str | None,
        content_type: str = "application/json",
        max_age: int | None = None,
    ) -> str:
        """Replace ``key`` only if its ETag is ``version`` (None: only if absent).

        ``Cache-Control: no-store`` unless ``max_age`` is given (then
        ``public, max-age={max_age}``, as ``put_mutable``). Returns the new ETag. Raises
        ``ConditionFailedError`` on 412 (or 404 when a version was expected),
        ``TransientPublishError`` / ``PublishError`` when the store fails.
        """
        name = self._object(key)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            response = self._lease_client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=data,
                ContentType=content_type,
                CacheControl="no-store" if max_age is None else f"public, max-age={max_age}",
                **condition,
            )
        except Exception as exc:
            code, status = _error_code(exc)
            gone = version is not None and (code in _NOT_FOUND or status == 404)
            if code in _PRECONDITION_FAILED or status == 412 or gone:
                raise ConditionFailedError(
                    f"{self._uri(name)} is not at version {version or 'absent'}"
                ) from None
            error = _translate(exc, f"PUT {self._uri(name)}")
            if error is None:
                raise
            raise error from exc
        return str(response["ETag"])

    # --- reads ------------------------------------------------------------------

    def _read(self, name: str) -> bytes | None:
        found = self._read_versioned(name)
        return None if found is None else found[0]

    def _read_versioned(
        self, name: str, client: S3Client | None = None
    ) -> tuple[bytes, str] | None:
        try:
            response = (client or self._client).get_object(Bucket=self.bucket, Key=name)
            body = response["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        except Exception as exc:
            code, status = _error_code(exc)
            if code in _NOT_FOUND or (status == 404 and code != "NoSuchBucket"):
                return None
            error = _translate(exc, f"GET {self._uri(name)}")
            if error is None:
                raise
            raise error from exc
        return data, str(response.get("ETag", ""))

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes under ``key`` and their ETag, or None when there is no such object."""
        return self._read_versioned(self._object(key), self._lease_client)

    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None when there is no such object.

        Raises ``PublishError`` for an invalid key, ``TransientPublishError`` /
        ``PublishError`` when the store fails (including a missing bucket).
        """
        return self._read(self._object(key))

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in lexicographic (UTF-8) order.

        Pages through ListObjectsV2 lazily. Raises ``TransientPublishError`` /
        ``PublishError`` (during iteration) when the store fails.
        """
        full = self.prefix + prefix
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", ()):
                    yield str(item["Key"])[len(self.prefix) :]
        except Exception as exc:
            error = _translate(exc, f"LIST {self._uri(full)}")
            if error is None:
                raise
            raise error from exc
