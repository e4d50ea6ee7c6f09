"""Getting bytes from a beacon site: a local directory, an http(s) URL, or s3://.

A ``Source`` answers ``get(key)`` with the bytes stored under a site-relative
key (see ``layout``), or None when there is none (404, no such file). Every
other failure raises ``FetchError`` with one line naming what could not be had.
Objects are capped in size; HTTP has timeouts and retries transient errors only.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from beacon_verifier.errors import FetchError

MAX_OBJECT_BYTES = 8 * 1024 * 1024  # a daily archive is ~2 MB; a pulse ~3 KB
HTTP_TIMEOUT = 15.0
HTTP_RETRIES = 3
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class Source(Protocol):
    """A beacon site root."""

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None: ...

    def describe(self) -> str: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise FetchError(f"refusing unsafe key {key!r}")
    return key


def _read_capped(stream: Any, max_bytes: int, what: str) -> bytes:
    data: bytes = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FetchError(f"{what}: larger than {max_bytes} bytes")
    return data


class LocalSource:
    """A site laid out in a local directory (what the local publisher writes)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        path = self.root / _check_key(key)
        try:
            with path.open("rb") as fh:
                return _read_capped(fh, max_bytes, str(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            return None
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc


def http_get(url: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
    """GET ``url``; None on 404/410. Retries transient failures with backoff."""
    delay = 0.5
    for attempt in range(HTTP_RETRIES):
        request = urllib.request.Request(  # noqa: S310 - scheme checked by the caller
            url, headers={"User-Agent": "beacon-verify/0.1"}
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
                return _read_capped(response, max_bytes, url)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return None
            if exc.code not in _TRANSIENT_HTTP or attempt == HTTP_RETRIES - 1:
                raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == HTTP_RETRIES - 1:
                reason = getattr(exc, "reason", exc)
                raise FetchError(f"{url}: {reason}") from None
        time.sleep(delay)
        delay *= 2
    raise FetchError(f"{url}: no answer")  # pragma: no cover - loop always returns or raises


class HttpSource:
    """A site served over http(s)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def describe(self) -> str:
        return self.base_url

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        return http_get(f"{self.base_url}/{_check_key(key)}", max_bytes=max_bytes)


class S3Source:
    """A site in an S3 bucket (needs the optional ``boto3`` extra)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise FetchError("s3:// sources need boto3: pip install 'beacon-verifier[s3]'") from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(connect_timeout=10, read_timeout=15, retries={"max_attempts": 3}),
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{_check_key(key)}" if self.prefix else key
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=full)
            return _read_capped(response["Body"], max_bytes, f"s3://{self.bucket}/{full}")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise FetchError(f"s3://{self.bucket}/{full}: {code or 'error'}") from None
        except BotoCoreError as exc:
            raise FetchError(f"s3://{self.bucket}/{full}: {exc}") from None


def open_source(spec: str) -> Source:
    """Open a site root given as a directory, an http(s):// URL or s3://bucket/prefix.

    For s3:// the endpoint comes from ``AWS_ENDPOINT_URL`` (standard boto3 behaviour).
    """
    parsed = urllib.parse.urlsplit(spec)
    if parsed.scheme in ("http", "https"):
        return HttpSource(spec)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise FetchError(f"{spec}: s3 URL needs a bucket (s3://bucket/prefix)")
        return S3Source(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return LocalSource(Path(urllib.parse.unquote(parsed.path)))
    if parsed.scheme:
        raise FetchError(f"{spec}: unsupported source scheme {parsed.scheme!r}")
    root = Path(spec)
    if not root.is_dir():
        raise FetchError(f"{spec}: not a directory")
    return LocalSource(root)


def read_location(location: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes:
    """Read one object given as a file path or an http(s) URL. Missing → ``FetchError``."""
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme in ("http", "https"):
        data = http_get(location, max_bytes=max_bytes)
        if data is None:
            raise FetchError(f"{location}: not found")
        return data
    path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else location)
    try:
        with path.open("rb") as fh:
            return _read_capped(fh, max_bytes, str(path))
    except FileNotFoundError:
        raise FetchError(f"{location}: no such file") from None
    except OSError as exc:
        raise FetchError(f"{location}: {exc.strerror or exc}") from None


def site_root_of(location: str) -> Source | None:
    """The site root a pulse location sits in, if it is laid out as ``.../beacon/2.0/...``."""
    marker = "/beacon/2.0/"
    if marker not in location:
        return None
    root = location[: location.index(marker)]
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme in ("http", "https"):
        return HttpSource(root)
    path = Path(root or "/")
    return LocalSource(path) if path.is_dir() else None
