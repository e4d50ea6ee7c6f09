"""Getting bytes from a beacon site: a local directory, an http(s) URL, or s3://.

A ``Source`` answers ``get(key)`` with the bytes stored under a site-relative
key (see ``layout``), or None when there is none (404, no such file). Every
other failure raises ``FetchError`` with one line naming what could not be had.

Sources are hostile until checked, so every read is bounded:

- every object is capped in size (``max_bytes``; ``TooLargeError`` beyond it),
  and the cap is enforced while reading, never after;
- HTTP (``web.HttpSource``, imported only for an http(s) source) has a timeout
  per socket operation and a deadline per object, headers included, retries only transient
  failures (connection errors, timeouts, 408/425/429/5xx) with backoff, follows
  at most a few redirects and only to http(s), and refuses content it would
  have to decode (``Content-Encoding``);
- S3 has connect and read timeouts, botocore's bounded retries, and a deadline per
  object body (its headers are bounded by the read timeout only);
- a directory site opens regular files only (a FIFO, device or socket is refused
  in one line, never waited on), in directories that stay inside the site (a
  directory symlinked out of it is refused).

``read_chunks`` streams an object in pieces (daily archives), so a large object
never sits in memory whole. Sources pickle, so that worker processes can open
them again.
"""

from __future__ import annotations

import os
import stat
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from beacon_verifier.errors import FetchError

MAX_OBJECT_BYTES = 8 * 1024 * 1024  # a pulse is ~3 KB, an index object ~90 KB at most
#: Seconds for an S3 object's body, however slowly it trickles in (botocore bounds the
#: connection and each read, and its own retries, but not the whole).
S3_BODY_DEADLINE = 120.0
_CHUNK = 1024 * 1024
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = _O_READ | getattr(os, "O_DIRECTORY", 0)
_MAX_DIRECTORIES = 16
_NOT_NAMES = ("", ".", "..")  # what _check_key refuses as the last part of a key


class TooLargeError(FetchError):
    """An object is larger than the cap for its kind: a hostile or broken site."""


def _regular(fd: int, path: str) -> bool:
    """Whether ``fd`` is a regular file (False: a directory, read as absent). Closes
    ``fd`` and raises ``FetchError`` for anything else: a FIFO would block, a device
    never end, a socket not open at all."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return True
    os.close(fd)
    if stat.S_ISDIR(mode):
        return False
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise FetchError(f"{path}: is {kind}, not a regular file: refused")


class Source(Protocol):
    """A beacon site root."""

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None: ...

    def describe(self) -> str: ...


class _Stream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def _check_key(key: str) -> str:
    """``key`` if it is a relative path of plain names (no empty, ``.`` or ``..`` part)."""
    wrapped = f"/{key}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise FetchError(f"refusing unsafe key {key!r}")
    return key


def _read_capped(stream: Any, max_bytes: int, what: str, within: float | None = None) -> bytes:
    """Read all of ``stream``, refusing more than ``max_bytes`` (or taking over ``within`` s)."""
    deadline = None if within is None else time.monotonic() + within
    parts: list[bytes] = []
    total = 0
    read = getattr(stream, "read1", stream.read)  # read1: whatever has arrived, not a full chunk
    while True:
        part: bytes = read(min(_CHUNK, max_bytes + 1 - total))
        if not part:
            _check_complete(stream, what)
            return b"".join(parts)
        total += len(part)
        if total > max_bytes:
            raise TooLargeError(f"{what}: larger than {max_bytes} bytes")
        parts.append(part)
        if deadline is not None and time.monotonic() > deadline:
            raise FetchError(f"{what}: no complete answer within {within:.0f} s")


def _check_complete(stream: object, what: str) -> None:
    """An HTTP answer must be as long as its Content-Length said (``read1`` does not check)."""
    missing = getattr(stream, "length", None)
    if isinstance(missing, int) and missing > 0:
        raise FetchError(f"{what}: the answer was cut short ({missing} bytes missing)")


def _chunks(
    stream: _Stream,
    max_bytes: int,
    what: str,
    within: float | None,
    errors: tuple[type[Exception], ...] = (OSError,),
) -> Iterator[bytes]:
    """Yield ``stream`` in pieces, refusing more than ``max_bytes`` (or taking over
    ``within`` s from the first piece asked for); closes it when done.

    ``errors`` raised while reading (a connection that drops mid-way) become ``FetchError``.
    """
    deadline = None if within is None else time.monotonic() + within
    total = 0
    read = getattr(stream, "read1", stream.read)
    try:
        while part := read(_CHUNK):
            total += len(part)
            if total > max_bytes:
                raise TooLargeError(f"{what}: larger than {max_bytes} bytes")
            if deadline is not None and time.monotonic() > deadline:
                raise FetchError(f"{what}: no complete answer within {within:.0f} s")
            yield part
        _check_complete(stream, what)
    except errors as exc:
        raise FetchError(f"{what}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        stream.close()


class LocalSource:
    """A site laid out in a local directory (what the local publisher writes).

    Replaying a chain reads two or three small files per pulse from a few
    directories, so ``get`` opens files relative to a kept descriptor of their
    directory (at most ``_MAX_DIRECTORIES`` of them) rather than walking the
    whole path each time.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._prefix = os.path.join(root, "")
        self._inside = os.path.join(os.path.realpath(root), "")
        self._directories: dict[str, int] = {}

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the directory descriptors kept (``get`` opens them again if needed)."""
        directories, self._directories = getattr(self, "_directories", {}), {}
        for fd in directories.values():
            os.close(fd)

    def _directory(self, directory: str) -> int | None:
        """A descriptor of the site's ``directory``; None when there is no such directory."""
        fd = self._directories.get(directory)
        if fd is None:
            path = self._prefix + directory
            real = os.path.join(os.path.realpath(path), "")
            if not real.startswith(self._inside) and os.path.exists(path):
                raise FetchError(
                    f"{path}: leads outside the site (to {real.rstrip(os.sep) or os.sep}): refused"
                )
            try:
                fd = os.open(path, _O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                return None  # not remembered: it may appear later
            except OSError as exc:
                path = self._prefix + directory
                raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
            if len(self._directories) >= _MAX_DIRECTORIES:
                self.close()
            self._directories[directory] = fd
        return fd

    def describe(self) -> str:
        return str(self.root)

    def __reduce__(self) -> tuple[type[LocalSource], tuple[Path]]:
        return (LocalSource, (self.root,))

    def _open(self, key: str) -> tuple[IO[bytes], str] | None:
        """The regular file under ``key``, opened (the callers close it), or None."""
        _check_key(key)
        directory, _, name = key.rpartition("/")
        path = self._prefix + key
        try:
            dir_fd = self._directory(directory) if directory else None
            if directory and dir_fd is None:
                return None
            fd = os.open(name if directory else path, _O_READ, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if not _regular(fd, path):
            return None
        return os.fdopen(fd, "rb", buffering=0), path

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        # os-level calls: replaying a chain reads two or three small files per pulse.
        directory, _, name = key.rpartition("/")
        dir_fd = self._directories.get(directory)
        if dir_fd is None or name in _NOT_NAMES:  # a kept directory's key was checked
            _check_key(key)
        try:
            if dir_fd is None and directory:
                dir_fd = self._directory(directory)
                if dir_fd is None:
                    return None
            fd = os.open(name if directory else self._prefix + key, _O_READ, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise FetchError(f"cannot read {self._prefix + key}: {exc.strerror or exc}") from exc
        if not _regular(fd, self._prefix + key):
            return None
        try:
            data = os.read(fd, max_bytes + 1 if max_bytes < _CHUNK else _CHUNK)
            if len(data) == _CHUNK:  # a short read of a file is its end
                more = os.read(fd, max_bytes + 1 - len(data))
                while more and len(data) <= max_bytes:
                    data += more
                    more = os.read(fd, max_bytes + 1 - len(data))
        except IsADirectoryError:
            return None
        except OSError as exc:
            raise FetchError(f"cannot read {self._prefix + key}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        if len(data) > max_bytes:
            raise TooLargeError(f"{self._prefix + key}: larger than {max_bytes} bytes")
        return data

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        found = self._open(key)
        return None if found is None else _chunks(found[0], max_bytes, found[1], None)


class S3Source:
    """A site in an S3 bucket (needs the optional ``boto3`` extra); ``pool``: how many
    connections its (thread-safe) client keeps, for as many threads reading at once."""

    def __init__(
        self, bucket: str, prefix: str, endpoint_url: str | None = None, pool: int = 10
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise FetchError("s3:// sources need boto3: pip install 'beacon-verifier[s3]'") from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.pool = pool
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=10,
                read_timeout=15,
                retries={"max_attempts": 3},
                max_pool_connections=pool,
            ),
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __reduce__(self) -> tuple[type[S3Source], tuple[str, str, str | None, int]]:
        return (S3Source, (self.bucket, self.prefix, self.endpoint_url, self.pool))

    def _body(self, key: str) -> tuple[Any, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{_check_key(key)}" if self.prefix else key
        where = f"s3://{self.bucket}/{full}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise FetchError(f"{where}: {code or 'error'}") from None
        except BotoCoreError as exc:
            raise FetchError(f"{where}: {exc}") from None
        return response["Body"], where

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        from botocore.exceptions import BotoCoreError

        found = self._body(key)
        if found is None:
            return None
        body, where = found
        try:
            return _read_capped(body, max_bytes, where, S3_BODY_DEADLINE)
        except BotoCoreError as exc:
            raise FetchError(f"{where}: {exc}") from None
        finally:
            body.close()

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        from botocore.exceptions import BotoCoreError

        found = self._body(key)
        if found is None:
            return None
        return _chunks(found[0], max_bytes, found[1], S3_BODY_DEADLINE, (OSError, BotoCoreError))


def read_chunks(source: Source, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
    """The object under ``key`` in pieces (at most ``max_bytes`` in all), or None if absent.

    Sources that can stream (``stream``) do; from others the object comes whole.
    Raises ``TooLargeError`` past ``max_bytes`` and ``FetchError`` as ``get`` does,
    possibly while iterating.
    """
    stream = getattr(source, "stream", None)
    if stream is not None:
        pieces: Iterator[bytes] | None = stream(key, max_bytes=max_bytes)
        return pieces
    data = source.get(key, max_bytes=max_bytes)
    return None if data is None else iter((data,))


def open_source(spec: str) -> Source:
    """Open a site root given as a directory, an http(s):// URL or s3://bucket/prefix.

    For s3:// the endpoint comes from ``AWS_ENDPOINT_URL`` (standard boto3 behaviour).
    """
    parsed = urllib.parse.urlsplit(spec)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise FetchError(f"{spec}: an http(s) source needs a host")
        from beacon_verifier.web import HttpSource

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
        from beacon_verifier.web import http_get

        data = http_get(location, max_bytes=max_bytes)
        if data is None:
            raise FetchError(f"{location}: not found")
        return data
    path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else location
    try:
        fd = os.open(path, _O_READ)
        if not _regular(fd, location):
            raise FetchError(f"{location}: is a directory")
        with os.fdopen(fd, "rb", buffering=0) as fh:
            return _read_capped(fh, max_bytes, location)
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
        from beacon_verifier.web import HttpSource

        return HttpSource(root)
    path = Path(root or "/")
    return LocalSource(path) if path.is_dir() else None
