"""Private, durable SQLite files: the chain state and the entropy pool.

Both hold secrets until their pulse is released (the committed next value,
unused quantum bits), so the file is created 0600 and refused if group or
others can reach it; WAL with ``synchronous=FULL`` so a committed transaction
survives power loss; ``secure_delete`` so consumed secrets are overwritten.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ErrorWrapper = Callable[[str], Exception]


def open_private(path: Path, wrap: ErrorWrapper, *, what: str) -> sqlite3.Connection:
    """Open (creating 0600) the database at ``path``.

    Raises ``wrap(message)`` when the file is accessible to group or others, or
    cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise wrap(
                f"{what} {path} is accessible to group or others "
                f"(mode {stat.filemode(mode)}); run: chmod 600 {path}"
            )
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA secure_delete=ON")
        db.execute("PRAGMA busy_timeout=10000")
        return db
    except (OSError, sqlite3.Error) as exc:
        raise wrap(f"cannot open {what} {path}: {exc}") from None


@contextmanager
def immediate(db: sqlite3.Connection, wrap: ErrorWrapper, *, what: str) -> Iterator[None]:
    """One ``BEGIN IMMEDIATE`` transaction; SQLite errors become ``wrap(message)``."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise wrap(f"{what}: {exc}") from None
