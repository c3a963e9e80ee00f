"""``backup``: a consistent copy of the store while the supervisor runs.

A ``cp`` of the store misses what is still in its write-ahead log (``store.db-wal``) and
can catch a page half-written. SQLite's online backup copies the database as one snapshot
(one read transaction, so every acknowledged event up to that moment and nothing
half-done), on a connection of its own in a worker thread: the supervisor goes on serving
while it copies. The copy is written beside the target under a hidden name, checked
(``PRAGMA quick_check``), made durable (fsync), and only then renamed into place — a
backup cut short leaves no file that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from protocol import ErrorCode

from .._errors import OpError


def check_target(target: Path, replace: bool) -> None:
    """Refuse what cannot be a backup's destination, before any work: ``OpError``."""
    if not target.is_absolute():
        raise OpError(ErrorCode.BAD_REQUEST, f"the backup's path must be absolute, not {str(target)!r}")
    if not target.parent.is_dir():
        raise OpError(ErrorCode.NOT_FOUND, f"the directory {target.parent} does not exist")
    if target.is_dir():
        raise OpError(ErrorCode.EXISTS, f"{target} is a directory; name the backup's file")
    if target.exists() and not replace:
        raise OpError(ErrorCode.EXISTS, f"{target} exists; pass --force to replace it")


def backup_store(source: Path, target: Path) -> dict[str, Any]:
    """Copy the store at ``source`` to ``target`` (a single-file SQLite database, mode
    0600); returns what was copied. Blocking: run it in a worker thread."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise OpError(ErrorCode.STORAGE, f"the copy failed its check ({check}); nothing was written")
            sessions = dst.execute("SELECT count(*) FROM sessions").fetchone()[0]
        finally:
            dst.close()
            src.close()
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise OpError(ErrorCode.STORAGE, f"the backup failed: {exc}; nothing was written") from None
    except OpError:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return {"path": str(target), "bytes": target.stat().st_size, "sessions": sessions}
