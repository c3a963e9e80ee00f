"""The store's checkpoints: its WAL copied back into the store file on a thread of its
own (``Checkpointer``), so that the supervisor's loop does not wait for the fsyncs."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("supervisord_claude")

#: about this many bytes written to the WAL and it is copied back into the store file (a
#: checkpoint) by ``Checkpointer``: SQLite's own default, 1,000 pages
CHECKPOINT_BYTES = 4 * 1024 * 1024
#: what one transaction writes at least (a page)
PAGE_BYTES = 4096
#: the WAL's size in pages at which a commit checkpoints it itself (SQLite's automatic
#: checkpoint, which the supervisor's loop waits for): only if ``Checkpointer`` falls behind
SELF_CHECKPOINT_PAGES = 4000


class Checkpointer:
    """Copies the WAL back into the store file on a thread of its own, with a connection
    of its own, once about CHECKPOINT_BYTES were written. A checkpoint fsyncs the WAL and
    the file: on a busy disk 20 to 70 ms, which SQLite's automatic checkpoint spends inside
    the commit that passes 1,000 pages — the supervisor's loop stopped meanwhile (one
    stop in every 20,000-event burst). Here the loop goes on (SQLite lets a checkpoint
    run beside a writer; the thread holds no Python lock meanwhile). What is committed is
    in the WAL either way: nothing acknowledged depends on it. The thread starts at the
    first checkpoint due (a store that writes little never starts it).

    Made on the loop thread right after the store's connection opened the file: its own
    connection is opened there, never creating a file (``mode=rw``), and reads once, so it
    holds the file, WAL and shared memory the store's holds. A store file deleted or
    replaced later (``_storefile``) is then no matter: a checkpoint copies the WAL into the
    file the store has open (deleted, what it restores from). Opened by path later, it
    would make an empty file there (whose first checkpoint deletes the live WAL) or open
    the operator's file, and copy the store's WAL into it. After ``__init__`` only the
    thread uses the connection, until ``close``."""

    def __init__(self, path: Path) -> None:
        self._written = 0
        self._due = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        #: how many checkpoints it made (tests wait for one)
        self.done = 0
        self._db: sqlite3.Connection | None = None
        db = None
        try:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, isolation_level=None,
                                 check_same_thread=False)
            db.execute("SELECT count(*) FROM sqlite_master").fetchall()  # (opens the WAL and its shared memory)
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            log.warning("cannot open the store for checkpoints (%s): each commit past %d pages makes its own",
                        exc, SELF_CHECKPOINT_PAGES)
            return
        self._db = db

    def wrote(self, size: int) -> None:
        """About ``size`` more bytes are in the WAL."""
        self._written += size
        if self._written < CHECKPOINT_BYTES or self._closing or self._db is None:
            return
        self._written = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(self._db,), name="store checkpoints",
                                            daemon=True)
            self._thread.start()
        self._due.set()

    def _run(self, db: sqlite3.Connection) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._closing:
                return
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.done += 1
            except sqlite3.Error as exc:
                log.warning("store checkpoint failed (%s); tried again after the next writes", exc)

    def close(self) -> None:
        """Stop the thread and close its connection (before the store's own: the last one
        to close checkpoints what is left and removes the WAL, the file still at its path)."""
        self._closing = True
        if self._thread is not None:
            self._due.set()
            self._thread.join()
            self._thread = None
        if self._db is not None:
            self._db.close()  # (the thread has ended: no other user)
            self._db = None
