"""A ``Publisher`` on a local directory: every key is the file ``root/key``.

The tree is served as it is by any static host (``python -m http.server``,
nginx, a ``file://`` URL), so files are world-readable (0644, directories 0755)
whatever the umask: everything here is public.

Create-only writes are enforced by the filesystem, never by checking first: the
data goes to a temporary file in the target directory, is fsynced, and is then
``os.link``-ed to its name, which fails if the name exists. Two writers racing
for one key cannot both win, and a reader never sees a partial file. Mutable
writes go through a temporary file and ``os.replace``.

Temporary files are dot-files (``.tmp-*``); keys may not have a segment that
starts with a dot, so a temporary file is never taken for a key.

Conditional writes (``put_if``, the failover lease) hold an exclusive
``flock`` on the root directory while they compare and replace: the local
equivalent of S3's ``If-Match``, for instances on one host or one shared
filesystem with working locks. The version tag is the SHA-256 of the bytes.

Errors: ``PublishError`` when retrying cannot help (not a directory, no
permission, read-only), ``TransientPublishError`` otherwise (a full disk, I/O
errors). Deliberately not here: retries (the outbox retries).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from beacon.errors import (
    AlreadyPublishedError,
    ConditionFailedError,
    PublishError,
    TransientPublishError,
)

__all__ = ["LocalDirPublisher", "validate_key"]

FILE_MODE = 0o644
DIR_MODE = 0o755
_TMP_PREFIX = ".tmp-"
#: How long a conditional write waits for another writer's directory lock.
LOCK_WAIT_S = 2.0
_MAX_KEY_BYTES = 1024  # S3's limit, so a key valid here is valid in every store


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe site-relative key; raise ``PublishError`` if not.

    A key is a non-empty ``/``-separated path of at most 1024 UTF-8 bytes: not
    absolute, no empty segment (no ``//``, no trailing ``/``), no segment that
    starts with ``.`` (so no ``.`` or ``..``), no backslash and no control
    character. The same rule holds for every store, so a site can move between them.
    """
    if not isinstance(key, str) or not key:
        raise PublishError(f"invalid key {key!r}: must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > _MAX_KEY_BYTES:
        raise PublishError(f"invalid key {key[:60]!r}...: longer than {_MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise PublishError(f"invalid key {key!r}: must be relative")
    if "\\" in key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise PublishError(f"invalid key {key!r}: backslash or control character")
    for segment in key.split("/"):
        if not segment:
            raise PublishError(f"invalid key {key!r}: empty segment")
        if segment.startswith("."):
            raise PublishError(f"invalid key {key!r}: segment {segment!r} starts with '.'")
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


#: Filesystem errors that retrying cannot cure (a path that is not a writable directory).
_PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENOENT,
        errno.ENAMETOOLONG,
        errno.EINVAL,
        errno.ELOOP,
    }
)


def _error(exc: OSError, what: str) -> PublishError:
    """``PublishError`` if permanent, else ``TransientPublishError`` (e.g. a full disk)."""
    cls = PublishError if exc.errno in _PERMANENT_ERRNOS else TransientPublishError
    return cls(f"{what}: {_describe(exc)}")


class LocalDirPublisher:
    """Publishes under ``root``; the key ``a/b/c`` is the file ``root/a/b/c``.

    Every method raises ``PublishError`` for an invalid key or a filesystem
    failure, never ``OSError``. ``root`` is created on the first write.
    """

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalDirPublisher({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """The file that holds ``key``. Raises ``PublishError`` for an invalid key."""
        return self.root.joinpath(*validate_key(key).split("/"))

    # --- writes -----------------------------------------------------------------

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents as 0755, fsyncing each new entry."""
        if directory.is_dir():
            return
        if self.root.exists() and not self.root.is_dir():
            raise PublishError(f"{self.root} is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        current = self.root
        for part in directory.relative_to(self.root).parts:
            current = current / part
            try:
                current.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(current, DIR_MODE)  # mkdir's mode is filtered by the umask
            _fsync_dir(current.parent)

    def _write_temp(self, directory: Path, name: str, data: bytes) -> Path:
        """Write ``data`` to a new fsynced 0644 temporary file in ``directory``."""
        temp = directory / f"{_TMP_PREFIX}{secrets.token_hex(8)}-{name[:64]}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return temp

    def put_immutable(self, key: str, data: bytes, *, content_type: str) -> None:
        """Create ``key`` with ``data``, refused by the filesystem if it exists.

        ``content_type`` is not stored (a static host derives it from the name).
        Returns normally when the file already holds exactly ``data``. Raises
        ``AlreadyPublishedError`` when it holds other bytes, ``PublishError`` on
        an invalid key or a filesystem failure.
        """
        path = self.path_for(key)
        try:
            self._make_dirs(path.parent)
            temp = self._write_temp(path.parent, path.name, data)
            existing: bytes | None
            try:
                os.link(temp, path)
            except FileExistsError:
                existing = path.read_bytes()
            else:
                existing = None
            finally:
                temp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _error(exc, f"cannot create {path}") from exc
        if existing is not None and existing != data:
            raise AlreadyPublishedError(
                f"{key} is already published with different bytes "
                f"({len(existing)} stored, {len(data)} offered)"
            )

    def put_mutable(self, key: str, data: bytes, *, content_type: str, max_age: int) -> None:
        """Create or atomically replace ``key``; readers see the old or the new bytes.

        ``content_type`` and ``max_age`` are not stored. Raises ``PublishError``.
        """
        path = self.path_for(key)
        try:
            self._make_dirs(path.parent)
            temp = self._write_temp(path.parent, path.name, data)
            try:
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _error(exc, f"cannot write {path}") from exc

    def put_if(
        self,
        key: str,
        data: bytes,
        *,
        version: str | None,
        content_type: str = "",
        max_age: int | None = None,
    ) -> str:
        """Replace ``key`` only if its SHA-256 is ``version`` (None: only if absent).

        ``content_type`` and ``max_age`` are not stored. The new bytes are
        written and fsynced before the lock is taken; under the lock only the
        comparison and the rename happen, so an instance frozen mid-write
        (SIGSTOP, a paused VM) almost never holds it, and waiting for it is
        bounded (``LOCK_WAIT_S``, then ``TransientPublishError``).

        Returns the new version. Raises ``ConditionFailedError`` when the file is
        in another version, ``PublishError`` on a filesystem failure.
        """
        path = self.path_for(key)
        try:
            self._make_dirs(path.parent)
            temp = self._write_temp(path.parent, path.name, data)
            try:
                root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    _lock(root, self.root)
                    current = self.get_versioned(key)
                    found = None if current is None else current[1]
                    if found != version:
                        raise ConditionFailedError(
                            f"{path} is at version {found or 'absent'}, not {version or 'absent'}"
                        )
                    os.replace(temp, path)
                finally:
                    os.close(root)  # releases the lock
            finally:
                temp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _error(exc, f"cannot write {path}") from exc
        return hashlib.sha256(data).hexdigest()

    def remove_stray_temporaries(self) -> int:
        """Delete ``.tmp-*`` files a killed writer left behind; returns how many.

        Only for the instance holding the lease, before it publishes: another
        writer's temporary file may be in use only while that writer is active.
        """
        removed = 0
        try:
            for dirpath, _dirnames, filenames in os.walk(self.root):
                for name in filenames:
                    if name.startswith(_TMP_PREFIX):
                        Path(dirpath, name).unlink(missing_ok=True)
                        removed += 1
        except OSError as exc:
            raise _error(exc, f"cannot clean {self.root}") from exc
        return removed

    # --- reads ------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None when there is no such file.

        Raises ``PublishError`` for an invalid key or an unreadable file.
        """
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise _error(exc, f"cannot read {path}") from exc

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes under ``key`` and their SHA-256 (the version), or None."""
        data = self.get(key)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the keys that start with ``prefix`` in lexicographic order.

        Temporary files are never listed. Raises ``PublishError`` when ``prefix``
        climbs out of the root or the tree cannot be read.
        """
        directory = prefix.rpartition("/")[0]
        start = self.path_for(directory) if directory else self.root
        keys: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(start, onerror=_raise):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                base = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue
                    key = name if base == "." else f"{base}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _error(exc, f"cannot list {start}") from exc
        yield from sorted(keys)


def _lock(fd: int, root: Path) -> None:
    """Take the exclusive lock on the directory ``fd``, waiting at most ``LOCK_WAIT_S``."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TransientPublishError(
                    f"{root} is locked by another writer for over {LOCK_WAIT_S} s"
                ) from None
            time.sleep(0.01)


def _raise(exc: OSError) -> None:
    raise exc
