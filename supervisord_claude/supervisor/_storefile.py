"""The store's SQLite file: its schema, the migrations from older versions, opening it
(0600, WAL, checkpointed by ``_storecheckpoints``), transactions and reads, and what
happens when it is deleted or replaced under a running supervisor. The rows are kept by
the classes built on ``StoreFile`` (``_storesessions`` → ``_storeevents`` → ``_storespend``
→ ``_store.Store``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._errors import StoreError
from ._spend import SCHEMA as SPEND_SCHEMA
from ._storecheckpoints import PAGE_BYTES, SELF_CHECKPOINT_PAGES, Checkpointer
from ._storerecords import SessionRecord
from ._storeruns import INSERT_RUN, MIGRATED_RUN, ReadBack, RecentRuns, pack_run, v1_run

log = logging.getLogger("supervisord_claude")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(
    name TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    cwd TEXT NOT NULL,
    model TEXT,
    persona TEXT,
    idle_timeout REAL,
    state TEXT NOT NULL,
    started INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    last_active REAL NOT NULL,
    suspended_at REAL,
    cost_usd REAL NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    claude_cost REAL NOT NULL DEFAULT 0,
    keeper_pid INTEGER,
    keeper_n INTEGER NOT NULL DEFAULT 0,
    permission_mode TEXT NOT NULL DEFAULT 'ask',
    allowed_tools TEXT NOT NULL DEFAULT '[]',
    claude_model TEXT
);
-- the event log, a row per run of one session's events stored together (a loop turn's
-- events of one keeper): ids first_id..last_id, seqs first_seq.., one ts; ``events`` is
-- the events as subscribers get them (each a msgpack map: the body with the event's own
-- fields appended) back to back, ``ends`` where each ends (uint32 little-endian each; see
-- _storeruns). Ids are never reused (AUTOINCREMENT keeps the highest ever given, pruned
-- or not).
CREATE TABLE IF NOT EXISTS event_runs(
    last_id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_id INTEGER NOT NULL,
    session TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    events BLOB NOT NULL,
    ends BLOB NOT NULL
);
-- a session's events after a cursor, in order, without scanning the session's history
CREATE INDEX IF NOT EXISTS event_runs_by_session ON event_runs(session, last_id);
-- a session's event by its seq (subscribe after a seq)
CREATE INDEX IF NOT EXISTS event_runs_by_seq ON event_runs(session, first_seq);
-- what is old enough to prune, without reading the whole log
CREATE INDEX IF NOT EXISTS event_runs_by_ts ON event_runs(ts);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    text TEXT NOT NULL,
    attachments BLOB NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    origin TEXT,
    idempotency_key TEXT,
    -- 1: sent with ``queue``, it waits for a turn of its own (never joins a running one)
    own_turn INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_status ON messages(session, status);
-- moved: when the position last advanced (Unix time); a cursor that has not moved for the
-- retention period no longer holds events back from pruning
CREATE TABLE IF NOT EXISTS cursors(consumer TEXT PRIMARY KEY, position INTEGER NOT NULL, moved REAL);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB NOT NULL);
-- what Claude cost per local day (YYYY-MM-DD), across sessions
CREATE TABLE IF NOT EXISTS daily_cost(day TEXT PRIMARY KEY, usd REAL NOT NULL);
-- the same per session (kept since 0.3.0: a day before that has only the total)
CREATE TABLE IF NOT EXISTS session_daily_cost(day TEXT NOT NULL, session TEXT NOT NULL, usd REAL NOT NULL,
                                              PRIMARY KEY(day, session));
-- daily spending caps set by the user (scope: a session's name, or '*' for all sessions)
CREATE TABLE IF NOT EXISTS budgets(scope TEXT PRIMARY KEY, usd REAL NOT NULL);
-- prompts sent to a session at the times a cron expression names (supervisor/_schedules.py)
CREATE TABLE IF NOT EXISTS schedules(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    cron TEXT NOT NULL,
    tz TEXT NOT NULL DEFAULT '',
    prompt TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    next_run REAL NOT NULL,
    last_run REAL,
    origin TEXT,
    created REAL NOT NULL
);
-- a forked session's first Claude continues a copy of this conversation (claude session id)
CREATE TABLE IF NOT EXISTS forks(session TEXT PRIMARY KEY, source_id TEXT NOT NULL);
"""


class StoreFile:
    """The SQLite file: opened (0600, WAL), brought up to the schema, written in
    transactions; restored if deleted under us. The rows each part keeps are in the
    classes built on it (``_storesessions``, ``_storeevents``, ``_storespend``, ``_store``)."""

    def __init__(self, path: Path, wall: Callable[[], float] = time.time) -> None:
        #: wall-clock time, of what is stored (the supervisor's clock: see _clock)
        self.wall = wall
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            # conversations are private: SQLite gives its -wal/-shm files the same mode
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create the store {path}: {exc}") from exc
        try:
            self._db = self._connect(path)
            # (now, on the file just opened: the migrations below write)
            self._checkpoints = Checkpointer(path)
            self._db.executescript(SCHEMA)
            self._db.executescript(SPEND_SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        self._recent = RecentRuns()
        #: the run each last read from the file stopped in (a subscriber behind reads on there)
        self._read_back = ReadBack()
        #: every session's record as last read, and the sessions written since (read
        #: again when asked for); ``data_version`` tells if another connection wrote
        self._records: dict[str, SessionRecord] | None = None
        self._records_version = 0
        self._written: set[str] = set()
        #: (consumer, position) of the stale cursors logged already by ``prune``
        self._said_stale: set[tuple[str, int]] = set()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed event survives a crash of any process
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute(f"PRAGMA wal_autocheckpoint={SELF_CHECKPOINT_PAGES}")  # (``Checkpointer`` does it before)
        return db

    def restore_deleted(self) -> bool:
        """If the store file was deleted under us, write everything the open database holds
        (it still reads the deleted file) back to its path with SQLite's backup API, and go
        on with that file: what was acknowledged survives the next restart. False if the
        file is there (a replaced file is left alone: it may be the operator's)."""
        try:
            os.stat(self.path)
            return False
        except FileNotFoundError:
            pass
        except OSError:
            return False  # cannot tell: file_problem says why
        copy = self.path.with_name(self.path.name + ".restoring")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # (rm -r of the state dir)
            os.close(os.open(copy, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
            target = sqlite3.connect(copy)
            try:
                self._db.backup(target)
            finally:
                target.close()
            os.replace(copy, self.path)
            self._checkpoints.close()
            self._db.close()
            # SQLite leaves the -wal/-shm of a file deleted under it (it removes them only
            # with a file still at its path): the deleted file's, whose pages the copy
            # holds, not to be read with the copy
            for leftover in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + leftover).unlink()
            self._db = self._connect(self.path)
            self._checkpoints = Checkpointer(self.path)  # (on the restored file, just opened)
            self._records = None  # (data_version counts per connection)
        except (OSError, sqlite3.Error) as exc:
            with contextlib.suppress(OSError):
                copy.unlink()
            raise StoreError(f"cannot restore the deleted store file {self.path}: {exc}") from exc
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        return True

    def file_problem(self) -> str | None:
        """Why the store file on disk is no longer the one this store writes to (deleted
        or replaced under a running supervisor: what it writes would be lost), or None."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"the store file {self.path} was deleted while the supervisor ran"
        except OSError as exc:
            return f"the store file {self.path} cannot be checked: {exc.strerror or exc}"
        if (st.st_dev, st.st_ino) != self._identity:
            return f"the store file {self.path} was replaced while the supervisor ran"
        return None

    def _migrate(self) -> None:
        """Bring a store written by an older version up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        for column in ("origin", "idempotency_key"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE messages ADD COLUMN {column} TEXT")
        if "own_turn" not in columns:
            self._db.execute("ALTER TABLE messages ADD COLUMN own_turn INTEGER NOT NULL DEFAULT 0")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
        if "claude_cost" not in columns:
            self._db.execute("ALTER TABLE sessions ADD COLUMN claude_cost REAL NOT NULL DEFAULT 0")
        if "keeper_pid" not in columns:
            self._db.execute("ALTER TABLE sessions ADD COLUMN keeper_pid INTEGER")
            self._db.execute("ALTER TABLE sessions ADD COLUMN keeper_n INTEGER NOT NULL DEFAULT 0")
        if "claude_model" not in columns:
            self._db.execute("ALTER TABLE sessions ADD COLUMN claude_model TEXT")
        if "permission_mode" not in columns:
            self._db.execute("ALTER TABLE sessions ADD COLUMN permission_mode TEXT NOT NULL DEFAULT 'ask'")
            self._db.execute("ALTER TABLE sessions ADD COLUMN allowed_tools TEXT NOT NULL DEFAULT '[]'")
        if "moved" not in {row[1] for row in self._db.execute("PRAGMA table_info(cursors)")}:
            self._db.execute("ALTER TABLE cursors ADD COLUMN moved REAL")
            # (a cursor of an older version counts as moved now: it gets a full period)
            self._db.execute("UPDATE cursors SET moved = ?", (self.wall(),))
        # an idempotency key is scoped to its session (it was global before)
        self._db.execute("DROP INDEX IF EXISTS messages_by_key")
        self._db.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS messages_by_session_key ON messages(session, idempotency_key)"
        )
        if "ends" not in {row[1] for row in self._db.execute("PRAGMA table_info(event_runs)")}:
            self._migrate_runs()
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").fetchone():
            self._migrate_events()

    def _migrate_runs(self) -> None:
        """An event log of runs as 0.3 to 0.4 stored them (each row's events msgpack [kind,
        body, …], the event's own fields added when read) becomes one that holds them as
        subscribers get them (see ``_storeruns``): each row rewritten in place, in one
        transaction, with the same ids, seqs and times."""
        started = time.monotonic()
        moved = 0
        with self._tx() as db:
            db.execute("ALTER TABLE event_runs ADD COLUMN ends BLOB NOT NULL DEFAULT x''")
            done = 0
            while rows := db.execute("SELECT last_id, first_id, session, first_seq, ts, events FROM event_runs"
                                     " WHERE last_id > ? ORDER BY last_id LIMIT 1000", (done,)).fetchall():
                for last_id, first_id, session, first_seq, ts, packed in rows:
                    kinds, bodies = v1_run(packed)
                    data, ends = pack_run(first_id, first_seq, session, ts, kinds, bodies)
                    db.execute("UPDATE event_runs SET events=?, ends=? WHERE last_id=?", (data, ends, last_id))
                    moved += len(bodies)
                done = rows[-1][0]
        if moved:
            log.info("the event log's runs were rewritten as subscribers get them (%d events, %.1f s)", moved,
                     time.monotonic() - started)

    def _migrate_events(self) -> None:
        """An event log of a row per event (up to 0.3) becomes one of runs: consecutive
        events of one session stored together become one row, with the same ids and seqs;
        the highest id ever given stays the highest (ids are never reused)."""
        started = time.monotonic()
        with self._tx() as db:
            high = max(self._sequence(db, "events"), db.execute("SELECT coalesce(max(id), 0) FROM events")
                       .fetchone()[0], self._last_id(db))
            runs: list[tuple[int, int, str, int, float, bytes, bytes]] = []
            moved = 0
            kinds: list[str] = []
            bodies: list[bytes] = []
            first = last = first_seq = last_seq = 0
            session, ts = "", 0.0

            def close_run() -> None:
                runs.append((last, first, session, first_seq, ts, *pack_run(first, first_seq, session, ts, kinds,
                                                                            bodies)))

            for event_id, event_session, seq, event_ts, kind, body in db.execute(
                    "SELECT id, session, seq, ts, kind, body FROM events ORDER BY id"):
                if not kinds or (event_session, event_ts, event_id, seq) != (session, ts, last + 1, last_seq + 1) \
                        or len(kinds) >= MIGRATED_RUN:
                    if kinds:
                        close_run()
                    kinds, bodies, first, first_seq, session, ts = [], [], event_id, seq, event_session, event_ts
                kinds.append(kind)
                bodies.append(body)
                last, last_seq = event_id, seq
                moved += 1
                if len(runs) >= 1000:
                    db.executemany(INSERT_RUN, runs)
                    runs = []
            if kinds:
                close_run()
            db.executemany(INSERT_RUN, runs)
            db.execute("DELETE FROM sqlite_sequence WHERE name='event_runs'")
            db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('event_runs', ?)", (high,))
            db.execute("DROP TABLE events")
        log.info("the event log was moved to runs of events (%d events, %.1f s)", moved,
                 time.monotonic() - started)

    @staticmethod
    def _sequence(db: sqlite3.Connection, table: str) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        return int(row[0]) if row else 0

    @classmethod
    def _last_id(cls, db: sqlite3.Connection) -> int:
        """The highest event id ever given (its events may be pruned since)."""
        return cls._sequence(db, "event_runs")

    def close(self) -> None:
        self._checkpoints.close()
        self._db.close()

    def _disk_note(self) -> str:
        """Why the store's directory cannot be written, for the operator (SQLite says only
        "disk I/O error" of a file system the kernel remounted read-only after an error):
        found by creating a file next to the store. Only called after a failed write."""
        probe = self.path.with_name(self.path.name + ".probe")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
            os.unlink(probe)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return (f" (the file system of {self.path.parent} is read-only — remounted after an error? Nothing"
                        " new is accepted; what was accepted is kept by the keepers: stop the supervisor with"
                        " kill -9, repair the file system, start it again)")
            return f" ({self.path.parent}: {exc.strerror or exc})"
        return ""

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"store unavailable: {exc}{self._disk_note()}") from exc
        try:
            yield self._db
            self._db.execute("COMMIT")
            self._checkpoints.wrote(PAGE_BYTES)
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"store write failed: {exc}{self._disk_note()}") from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL)
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc
