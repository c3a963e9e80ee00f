"""The durable store: sessions, the event log, queued messages, consumer cursors, a small kv.

One SQLite file in WAL mode, written only by the supervisor process. Every event is
committed before it is published, so a subscriber can always re-read what it missed.

The newest events stored (a bounded number and size) are also kept in memory, as they
were committed, so subscribers that keep up are served without reading them back; and an
event's body is packed once: what a subscriber gets is that stored map with the event's
own fields added (``StoredEvent.data``), not a second encoding of it.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack

from protocol import EventKind, SessionState, _packedmap

from .._errors import StoreError
from .._wire import pack_body
from ._schedules import Schedule
from ._spend import SCHEMA as SPEND_SCHEMA
from ._spend import SpendTables, record_spend

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
-- msgpack [kind, body, kind, body, ...], each body the packed map (bin). Ids are never
-- reused (AUTOINCREMENT keeps the highest ever given, pruned or not).
CREATE TABLE IF NOT EXISTS event_runs(
    last_id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_id INTEGER NOT NULL,
    session TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    events BLOB NOT NULL
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

#: message status: queued (accepted, not yet handed to Claude), written (on Claude's
#: stdin), done (its turn ended), failed (reported to the user as not delivered)
QUEUED, WRITTEN, DONE, FAILED = "queued", "written", "done", "failed"


@dataclass(frozen=True)
class SessionRecord:
    name: str
    session_id: str
    cwd: str
    model: str | None
    persona: str | None
    idle_timeout: float | None
    state: SessionState
    started: bool
    created: float
    last_active: float
    suspended_at: float | None
    cost_usd: float
    last_seq: int
    claude_cost: float = 0.0  # Claude's own cumulative total_cost_usd, as last reported
    #: the keeper whose reports were stored last, and the number of its last stored event
    keeper_pid: int | None = None
    keeper_n: int = 0
    permission_mode: str = "ask"  # a protocol.PermissionMode value
    #: always-allow rules the user gave in this session ("Bash(npm test:*)")
    allowed_tools: tuple[str, ...] = ()
    #: the model Claude said it runs when it last started (whatever ``model`` asked for)
    claude_model: str | None = None

    def public(self, default_timeout: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "session_id": self.session_id,
            "cwd": self.cwd,
            "model": self.model,
            "persona": self.persona,
            "idle_timeout": self.idle_timeout if self.idle_timeout is not None else default_timeout,
            "state": self.state.value,
            "live": self.state.live,
            "started": self.started,
            "created": self.created,
            "last_active": self.last_active,
            "suspended_at": self.suspended_at,
            "cost_usd": self.cost_usd,
            "last_seq": self.last_seq,
            "mode": self.permission_mode,
            "allowed_tools": list(self.allowed_tools),
            "claude_model": self.claude_model,
        }


#: the updates of an event that changes nothing in its session
NO_UPDATES: Mapping[str, Any] = MappingProxyType({})


class EventWrite(NamedTuple):
    """One event to store, with what it changes in its session and its message (a tuple:
    one is made for every line Claude writes). The body is given as a map, or packed
    (``blob``: stored as it is, e.g. as a keeper sent it) with its ``message_id``."""

    session: str
    kind: EventKind
    body: dict[str, Any] | None
    updates: Mapping[str, Any] = NO_UPDATES
    message_status: tuple[int, str] | None = None
    #: (pid, n): the keeper report it came in, kept in its session's row (keeper_pid,
    #: keeper_n) so a new supervisor knows what to ask that keeper to send again
    keeper: tuple[int, int] | None = None
    blob: bytes | None = None
    message_id: int | None = None


_packb = msgpack.Packer(use_bin_type=True).pack


#: how many of the newest events, and how many bytes of them, are kept in memory
RECENT_EVENTS = 8192
RECENT_BYTES = 16 * 1024 * 1024


_ID, _SEQ = _packb("id"), _packb("seq")


def _own_fields(session: str, ts: float, kind: str) -> bytes:
    """The packed session, ts and kind entries of an event map (the same for a whole
    batch of one session's events of one kind)."""
    return b"".join((_packb("session"), _packb(session), _packb("ts"), _packb(ts), _packb("kind"), _packb(kind)))


def event_data(blob: bytes, event_id: int, seq: int, own_fields: bytes) -> bytes:
    """An event as a subscriber gets it: the stored body map with the event's own fields
    after its entries (where an old body holds one of them, the later one wins, as in
    ``StoredEvent.as_dict``)."""
    return _packedmap.extend(blob, 5, b"".join((_ID, _packb(event_id), _SEQ, _packb(seq), own_fields)))


_KIND_VALUES = {kind: kind.value for kind in EventKind}
_INSERT_RUN = "INSERT INTO event_runs(last_id, first_id, session, first_seq, ts, events) VALUES (?,?,?,?,?,?)"
#: events in one row at most when an old event log is moved to runs
_MIGRATED_RUN = 2048


def unpack_run(first_id: int, session: str, first_seq: int, ts: float, packed: bytes, after_id: int = 0,
               limit: int | None = None) -> list[StoredEvent]:
    """The events of a stored run (a row of ``event_runs``) after ``after_id``, up to
    ``limit`` of them."""
    items = msgpack.unpackb(packed)
    skip = max(0, after_id - first_id + 1)
    count = len(items) // 2 - skip
    if limit is not None:
        count = min(count, limit)
    return [StoredEvent(first_id + i, session, first_seq + i, ts, items[2 * i], items[2 * i + 1])
            for i in range(skip, skip + max(0, count))]



class StoredEvent:
    """One stored event: its columns, its body (unpacked when asked for) and the bytes a
    subscriber gets, built once from the stored body: ``{**body, id, session, seq, ts,
    kind}`` as one msgpack map."""

    __slots__ = ("_body", "_data", "_message_id", "blob", "id", "kind", "seq", "session", "ts")

    def __init__(self, event_id: int, session: str, seq: int, ts: float, kind: str, blob: bytes,
                 body: dict[str, Any] | None = None, message_id: int | None = None,
                 data: bytes | None = None) -> None:
        self.id = event_id
        self.session = session
        self.seq = seq
        self.ts = ts
        self.kind = kind
        self.blob = blob
        self._body = body
        self._data = data
        self._message_id = message_id

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = msgpack.unpackb(self.blob)
        return self._body

    @property
    def message_id(self) -> int | None:
        if self._message_id is None:
            found = self.body.get("message_id")
            self._message_id = found if isinstance(found, int) else None
        return self._message_id

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = event_data(self.blob, self.id, self.seq, _own_fields(self.session, self.ts, self.kind))
        return self._data

    def as_dict(self) -> dict[str, Any]:
        return {**self.body, "id": self.id, "session": self.session, "seq": self.seq, "ts": self.ts,
                "kind": self.kind}

    def __repr__(self) -> str:
        return f"StoredEvent({self.as_dict()!r})"


class _RecentEvents:
    """The newest stored events, in id order, without gaps: all there is after any id
    from the first one held on."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.ids: list[int] = []
        self.bytes = 0

    def clear(self) -> None:
        self.events, self.ids, self.bytes = [], [], 0

    def add(self, events: list[StoredEvent]) -> None:
        self.events.extend(events)
        self.ids.extend(e.id for e in events)
        self.bytes += sum(len(e.blob) for e in events)
        if len(self.events) > RECENT_EVENTS or self.bytes > RECENT_BYTES:
            # trim to half the bounds at once, so trimming costs O(1) per event
            keep, size = 0, 0
            for event in reversed(self.events):
                if keep >= RECENT_EVENTS // 2 or size + len(event.blob) > RECENT_BYTES // 2:
                    break
                keep += 1
                size += len(event.blob)
            del self.events[:len(self.events) - keep]
            del self.ids[:len(self.ids) - keep]
            self.bytes = size

    def after(self, after_id: int, session: str | None, limit: int) -> list[StoredEvent] | None:
        """Up to ``limit`` events after ``after_id`` (of ``session``), or None when some of
        them may be older than what is held."""
        if not self.ids or after_id < self.ids[0] - 1:
            return None
        start = bisect.bisect_right(self.ids, after_id)
        if session is None:
            return self.events[start:start + limit]
        return list(itertools.islice((e for e in itertools.islice(self.events, start, None)
                                      if e.session == session), limit))


@dataclass(frozen=True)
class Message:
    id: int
    session: str
    text: str
    attachments: list[str]
    status: str
    origin: str | None = None
    #: sent with ``queue``: it waits for a turn of its own (kept across a restart)
    own_turn: bool = False


#: an update that adds to the session's cost instead of setting it
COST_ADDED = "cost_added"

_SESSION_FIELDS = {
    COST_ADDED,
    "claude_model",
    "last_seq",
    "session_id",
    "cwd",
    "model",
    "persona",
    "idle_timeout",
    "state",
    "started",
    "last_active",
    "suspended_at",
    "cost_usd",
    "claude_cost",
    "keeper_pid",
    "keeper_n",
    "permission_mode",
    "allowed_tools",
}


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(when))


class Store(SpendTables):
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
            self._db.executescript(SCHEMA)
            self._db.executescript(SPEND_SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        self._recent = _RecentEvents()
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
            # closing the old connection checkpoints its WAL into the deleted file and
            # removes the -wal/-shm files, which must not be applied to the copy
            self._db.close()
            self._db = self._connect(self.path)
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
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").fetchone():
            self._migrate_events()

    def _migrate_events(self) -> None:
        """An event log of a row per event (up to 0.3) becomes one of runs: consecutive
        events of one session stored together become one row, with the same ids and seqs;
        the highest id ever given stays the highest (ids are never reused)."""
        started = time.monotonic()
        with self._tx() as db:
            high = max(self._sequence(db, "events"), db.execute("SELECT coalesce(max(id), 0) FROM events")
                       .fetchone()[0], self._last_id(db))
            runs: list[tuple[int, int, str, int, float, bytes]] = []
            moved = 0
            run: list[Any] = []
            first = last = first_seq = last_seq = 0
            session, ts = "", 0.0
            for event_id, event_session, seq, event_ts, kind, body in db.execute(
                    "SELECT id, session, seq, ts, kind, body FROM events ORDER BY id"):
                if not run or (event_session, event_ts, event_id, seq) != (session, ts, last + 1, last_seq + 1) \
                        or len(run) >= 2 * _MIGRATED_RUN:
                    if run:
                        runs.append((last, first, session, first_seq, ts, _packb(run)))
                    run, first, first_seq, session, ts = [], event_id, seq, event_session, event_ts
                run.append(kind)
                run.append(body)
                last, last_seq = event_id, seq
                moved += 1
                if len(runs) >= 1000:
                    db.executemany(_INSERT_RUN, runs)
                    runs = []
            if run:
                runs.append((last, first, session, first_seq, ts, _packb(run)))
            db.executemany(_INSERT_RUN, runs)
            db.execute("DELETE FROM sqlite_sequence WHERE name='event_runs'")
            db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('event_runs', ?)", (high,))
            db.execute("DROP TABLE events")
        log.info("the event log was moved to runs of events (%d events, %.1f s)", moved,
                 time.monotonic() - started)

    @staticmethod
    def _sequence(db: sqlite3.Connection, table: str) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
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

    # sessions -------------------------------------------------------------------------

    def create_session(
        self,
        name: str,
        session_id: str,
        cwd: str,
        model: str | None,
        persona: str | None,
        permission_mode: str = "ask",
    ) -> SessionRecord:
        now = self.wall()
        self._written.add(name)
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions(name, session_id, cwd, model, persona, state, created,"
                " last_active, suspended_at, permission_mode) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (name, session_id, cwd, model, persona, SessionState.SUSPENDED.value, now, now, now,
                 permission_mode),
            )
        record = self.get_session(name)
        assert record is not None
        return record

    @staticmethod
    def _session(row: tuple[Any, ...]) -> SessionRecord:
        return SessionRecord(
            name=row[0],
            session_id=row[1],
            cwd=row[2],
            model=row[3],
            persona=row[4],
            idle_timeout=row[5],
            state=SessionState(row[6]),
            started=bool(row[7]),
            created=row[8],
            last_active=row[9],
            suspended_at=row[10],
            cost_usd=row[11],
            last_seq=row[12],
            claude_cost=row[13],
            keeper_pid=row[14],
            keeper_n=row[15],
            permission_mode=row[16],
            allowed_tools=() if row[17] == "[]" else tuple(json.loads(row[17])),
            claude_model=row[18],
        )

    _SESSION_COLUMNS = (
        "name, session_id, cwd, model, persona, idle_timeout, state, started, created,"
        " last_active, suspended_at, cost_usd, last_seq, claude_cost, keeper_pid, keeper_n, permission_mode,"
        " allowed_tools, claude_model"
    )

    def get_session(self, name: str) -> SessionRecord | None:
        rows = self._read(f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE name=?", (name,))
        return self._session(rows[0]) if rows else None

    def list_sessions(self, include_archived: bool = False) -> list[SessionRecord]:
        """Every session (but the archived ones), the most recently active first. Served
        from the records read before, but for the sessions written since (a list of
        thousands of sessions on file costs a sort, not reading them all back)."""
        records = self._fresh_records()
        listed = [r for r in records.values() if include_archived or r.state is not SessionState.ARCHIVED]
        listed.sort(key=lambda r: r.name)
        listed.sort(key=lambda r: r.last_active, reverse=True)
        return listed

    def _fresh_records(self) -> dict[str, SessionRecord]:
        """Every session's record as stored now: those written since they were read are
        read again; all of them if another connection wrote to the file."""
        version = self._read("PRAGMA data_version")[0][0]
        if self._records is None or version != self._records_version:
            rows = self._read(f"SELECT {self._SESSION_COLUMNS} FROM sessions")
            self._records = {row[0]: self._session(row) for row in rows}
            self._records_version = version
        elif self._written:
            for name in self._written:
                record = self.get_session(name)
                if record is None:
                    self._records.pop(name, None)
                else:
                    self._records[name] = record
        self._written.clear()
        return self._records

    def update_session(self, name: str, **fields: Any) -> None:
        with self._tx() as db:
            self._update(db, name, fields)

    def _update(self, db: sqlite3.Connection, name: str, fields: dict[str, Any]) -> None:
        if not fields:
            return
        self._written.add(name)  # (also if the transaction is rolled back: read again, unchanged)
        bad = set(fields) - _SESSION_FIELDS
        if bad:
            raise ValueError(f"unknown session fields {bad}")
        values = [v.value if isinstance(v, SessionState) else json.dumps(list(v)) if k == "allowed_tools" else v
                  for k, v in fields.items()]
        # cost_added adds to cost_usd (events of one batch each add their turn's cost)
        assignments = ", ".join("cost_usd=cost_usd+?" if k == COST_ADDED else f"{k}=?" for k in fields)
        db.execute(f"UPDATE sessions SET {assignments} WHERE name=?", (*values, name))

    # events ---------------------------------------------------------------------------

    def append_event(
        self,
        session: str,
        kind: EventKind,
        body: dict[str, Any],
        updates: Mapping[str, Any] | None = None,
        message_status: tuple[int, str] | None = None,
    ) -> dict[str, Any]:
        """Store one event, session field updates and a message's new status atomically;
        return the event as published."""
        write = EventWrite(session, kind, body, updates or NO_UPDATES, message_status)
        return self.append_events([write])[0].as_dict()

    def append_events(self, writes: Sequence[EventWrite]) -> list[StoredEvent]:
        """Store events in one transaction, in order, with their session field updates and
        message statuses; return them as stored. All or nothing: after a StoreError
        none of them is stored. A body's keys that name an event field are not stored
        (the event's own value would replace them when read). Consecutive events of one
        session go in one row (a run)."""
        now = self.wall()
        last_seq: dict[str, int] = {}
        runs: list[tuple[int, int, str, int, float, bytes]] = []
        # each update sets fields (cost_added adds): applied in event order, they come to
        # one UPDATE per session with the later value of each field
        merged: dict[str, dict[str, Any]] = {}
        statuses: list[tuple[str, int]] = []
        # what subscribers get, built now, once (the body map is not kept: nothing here
        # needs it again, and these stay in memory for a while)
        events: list[StoredEvent] = []
        own: dict[tuple[str, str], bytes] = {}
        with self._tx() as db:
            event_id = self._last_id(db)
            run_session: str | None = None
            run: list[Any] = []
            run_first = run_first_seq = 0
            for w in writes:
                session = w.session
                seq = last_seq.get(session)
                if seq is None:
                    row = db.execute("SELECT last_seq FROM sessions WHERE name=?", (session,)).fetchone()
                    if row is None:
                        raise StoreError(f"no session {session!r}")
                    seq = row[0]
                    merged[session] = {}
                last_seq[session] = seq = seq + 1
                event_id += 1
                blob = w.blob
                if blob is None:
                    assert w.body is not None
                    blob = pack_body(w.body)
                kind = _KIND_VALUES[w.kind]
                if session != run_session:
                    if run_session is not None:
                        runs.append((event_id - 1, run_first, run_session, run_first_seq, now, _packb(run)))
                    run_session, run, run_first, run_first_seq = session, [], event_id, seq
                run.append(kind)
                run.append(blob)
                tail = own.get((session, kind))
                if tail is None:
                    tail = own[session, kind] = _own_fields(session, now, kind)
                events.append(StoredEvent(event_id, session, seq, now, kind, blob, None, w.message_id,
                                          event_data(blob, event_id, seq, tail)))
                if w.updates:
                    fields = merged[session]
                    for key, value in w.updates.items():
                        fields[key] = fields.get(key, 0.0) + value if key == COST_ADDED else value
                if w.keeper is not None:
                    merged[session]["keeper_pid"], merged[session]["keeper_n"] = w.keeper
                if w.message_status is not None:
                    statuses.append((w.message_status[1], w.message_status[0]))
            if run_session is not None:
                runs.append((event_id, run_first, run_session, run_first_seq, now, _packb(run)))
            db.executemany(_INSERT_RUN, runs)
            for session, seq in last_seq.items():
                self._update(db, session, {**merged[session], "last_seq": seq})
            spent = {session: fields[COST_ADDED] for session, fields in merged.items() if fields.get(COST_ADDED)}
            if spent:
                db.execute("INSERT INTO daily_cost(day, usd) VALUES (?, ?)"
                           " ON CONFLICT(day) DO UPDATE SET usd = usd + excluded.usd", (_day(now), sum(spent.values())))
                db.executemany("INSERT INTO session_daily_cost(day, session, usd) VALUES (?, ?, ?)"
                               " ON CONFLICT(day, session) DO UPDATE SET usd = usd + excluded.usd",
                               [(_day(now), session, usd) for session, usd in spent.items()])
                record_spend(db, now, spent)  # (by quarter hour: budgets count days in any zone)
            if statuses:
                db.executemany("UPDATE messages SET status=? WHERE id=?", statuses)
        self._recent.add(events)
        return events

    @classmethod
    def _last_id(cls, db: sqlite3.Connection) -> int:
        """The highest event id ever given (its events may be pruned since)."""
        return cls._sequence(db, "event_runs")

    def events_after(
        self, after_id: int, session: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.stored_after(after_id, session, limit)]

    def stored_after(self, after_id: int, session: str | None = None, limit: int = 200) -> list[StoredEvent]:
        """Up to ``limit`` events after the global id ``after_id`` (of one session), in
        order: the newest from memory, older ones read back."""
        recent = self._recent.after(after_id, session, limit)
        if recent is not None:
            return recent
        params: tuple[Any, ...]
        if session is None:
            sql, params = ("SELECT first_id, session, first_seq, ts, events FROM event_runs WHERE last_id>?"
                           " ORDER BY last_id", (after_id,))
        else:
            sql, params = ("SELECT first_id, session, first_seq, ts, events FROM event_runs"
                           " WHERE session=? AND last_id>? ORDER BY last_id", (session, after_id))
        out: list[StoredEvent] = []
        try:
            cursor = self._db.execute(sql, params)
            while len(out) < limit:
                row = cursor.fetchone()
                if row is None:
                    break
                first_id, run_session, first_seq, ts, packed = row
                out.extend(unpack_run(first_id, run_session, first_seq, ts, packed, after_id, limit - len(out)))
            cursor.close()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc
        return out

    def event_id_at_seq(self, session: str, seq: int) -> int:
        """The global id of a session's event ``seq`` (0 if before the first)."""
        if seq <= 0:
            return 0
        rows = self._read("SELECT first_id, first_seq, last_id FROM event_runs WHERE session=? AND first_seq<=?"
                          " ORDER BY first_seq DESC LIMIT 1", (session, seq))
        if not rows:
            return 0
        first_id, first_seq, last_id = rows[0]
        return int(min(last_id, first_id + seq - first_seq))

    def last_event_id(self) -> int:
        rows = self._read("SELECT max(last_id) FROM event_runs")
        return int(rows[0][0] or 0)

    # messages -------------------------------------------------------------------------

    def add_message(
        self,
        session: str,
        text: str,
        attachments: list[str],
        origin: str | None = None,
        idempotency_key: str | None = None,
        own_turn: bool = False,
    ) -> tuple[int, bool]:
        """Queue a message. Returns (id, created); a key already used for this session
        returns the first message's id and False, so a client that retries cannot send
        twice. Keys are scoped to their session."""
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT id FROM messages WHERE session=? AND idempotency_key=?", (session, idempotency_key)
                ).fetchone()
                if row is not None:
                    return int(row[0]), False
            cur = db.execute(
                "INSERT INTO messages(session, text, attachments, status, created, origin, idempotency_key, own_turn)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (session, text, msgpack.packb(attachments), QUEUED, self.wall(), origin, idempotency_key,
                 int(own_turn)),
            )
            # (last_active moves when Claude gets it: the `user` event; until then the
            # session has been idle since its last turn, which a resume reports)
        assert cur.lastrowid is not None
        return cur.lastrowid, True

    def message_by_key(self, session: str, idempotency_key: str) -> int | None:
        """The id of the session's message sent with this idempotency key, if any."""
        rows = self._read("SELECT id FROM messages WHERE session=? AND idempotency_key=?",
                          (session, idempotency_key))
        return int(rows[0][0]) if rows else None

    def set_message_status(self, message_id: int, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE messages SET status=? WHERE id=?", (status, message_id))

    _MESSAGE_COLUMNS = "id, session, text, attachments, status, origin, own_turn"

    @staticmethod
    def _message(row: tuple[Any, ...]) -> Message:
        return Message(row[0], row[1], row[2], msgpack.unpackb(row[3]), row[4], row[5], bool(row[6]))

    def messages(self, session: str | None, status: str) -> list[Message]:
        if session is None:
            rows = self._read(
                f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE status=? ORDER BY id", (status,)
            )
        else:
            rows = self._read(
                f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE session=? AND status=? ORDER BY id",
                (session, status),
            )
        return [self._message(r) for r in rows]

    def get_message(self, message_id: int) -> Message | None:
        rows = self._read(f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE id=?", (message_id,))
        return self._message(rows[0]) if rows else None

    def prune(self, older_than: float, max_runs: int | None = None) -> int:
        """Delete events stored before ``older_than`` (Unix time) that every named consumer
        has acked, and finished messages as old; with ``max_runs``, only the oldest so many
        runs of them (call again until it returns 0: a big prune in steps, so the
        supervisor serves in between). A consumer whose cursor has not moved since
        ``older_than`` holds nothing back (one that stopped for good, e.g. a removed bot,
        would keep every event for ever); each such is logged, once. Returns how many
        events went."""
        with self._tx() as db:
            for consumer, position in db.execute("SELECT consumer, position FROM cursors WHERE moved < ?",
                                                 (older_than,)):
                if (consumer, position) in self._said_stale:
                    continue
                self._said_stale.add((consumer, position))
                log.warning("consumer %s has not acked anything since %s (at event %d): it no longer holds"
                            " old events back (claudectl consumers --remove %s if it is gone for good)",
                            consumer, time.strftime("%Y-%m-%d %H:%M", time.localtime(older_than)), position,
                            consumer, extra={"consumer": consumer})
            row = db.execute("SELECT min(position) FROM cursors WHERE moved IS NULL OR moved >= ?",
                             (older_than,)).fetchone()
            keep_from = row[0] if row and row[0] is not None else None
            # (a run a consumer still needs part of is kept whole)
            where, params = ("ts < ?", (older_than,)) if keep_from is None else \
                ("ts < ? AND last_id <= ?", (older_than, keep_from))
            if max_runs is not None:
                where = f"last_id IN (SELECT last_id FROM event_runs WHERE {where} ORDER BY last_id LIMIT ?)"
                params = (*params, max_runs)
            pruned = db.execute(f"SELECT coalesce(sum(last_id - first_id + 1), 0) FROM event_runs WHERE {where}",
                                params).fetchone()[0]
            db.execute(f"DELETE FROM event_runs WHERE {where}", params)
            self._recent.clear()  # what it holds may be among them
            db.execute(
                "DELETE FROM messages WHERE created < ? AND status IN (?, ?)", (older_than, DONE, FAILED)
            )
        return int(pruned)

    def cost_on(self, when: float) -> float:
        """What Claude cost on the local day of ``when`` (Unix time), in USD."""
        rows = self._read("SELECT usd FROM daily_cost WHERE day=?", (_day(when),))
        return float(rows[0][0]) if rows else 0.0

    def session_costs_on(self, when: float) -> dict[str, float]:
        """What Claude cost in each session that spent anything on the local day of
        ``when``, in USD."""
        rows = self._read("SELECT session, usd FROM session_daily_cost WHERE day=? ORDER BY session", (_day(when),))
        return {str(r[0]): float(r[1]) for r in rows}

    def session_costs(self, since_day: str) -> dict[str, float]:
        """What each session cost from the local day ``since_day`` (YYYY-MM-DD) on."""
        return {str(r[0]): float(r[1]) for r in self._read(
            "SELECT session, SUM(usd) FROM session_daily_cost WHERE day >= ? GROUP BY session", (since_day,))}

    def cost_since(self, since_day: str) -> float:
        """What all sessions cost from the local day ``since_day`` on."""
        rows = self._read("SELECT SUM(usd) FROM daily_cost WHERE day >= ?", (since_day,))
        return float(rows[0][0] or 0.0) if rows else 0.0

    def budgets(self) -> dict[str, float]:
        """The caps the user set: ``{session or '*': usd}``."""
        return {str(r[0]): float(r[1]) for r in self._read("SELECT scope, usd FROM budgets")}

    def set_budget(self, scope: str, usd: float | None) -> None:
        with self._tx() as db:
            if usd is None:
                db.execute("DELETE FROM budgets WHERE scope=?", (scope,))
            else:
                db.execute("INSERT INTO budgets(scope, usd) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE"
                           " SET usd = excluded.usd", (scope, usd))

    def schedules(self) -> list[Schedule]:
        return [Schedule(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bool(r[5]), float(r[6]),
                         r[7], r[8], float(r[9])) for r in self._read(
            "SELECT id, session, cron, tz, prompt, paused, next_run, last_run, origin, created FROM schedules"
            " ORDER BY id")]

    def add_schedule(self, session: str, cron: str, tz: str, prompt: str, next_run: float, origin: str | None,
                     created: float) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO schedules(session, cron, tz, prompt, next_run, origin, created)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)", (session, cron, tz, prompt, next_run, origin, created))
            return int(cur.lastrowid or 0)

    def update_schedule(self, schedule_id: int, **fields: Any) -> bool:
        assert set(fields) <= {"paused", "next_run", "last_run"}
        with self._tx() as db:
            cur = db.execute(f"UPDATE schedules SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                             (*fields.values(), schedule_id))
            return cur.rowcount > 0

    def remove_schedule(self, schedule_id: int) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM schedules WHERE id=?", (schedule_id,)).rowcount > 0

    def fork_source(self, session: str) -> str | None:
        """The conversation a forked session copies at its first start, if it is one."""
        rows = self._read("SELECT source_id FROM forks WHERE session=?", (session,))
        return str(rows[0][0]) if rows else None

    def set_fork_source(self, session: str, source_id: str | None) -> None:
        with self._tx() as db:
            if source_id is None:
                db.execute("DELETE FROM forks WHERE session=?", (session,))
            else:
                db.execute("INSERT OR REPLACE INTO forks(session, source_id) VALUES (?, ?)", (session, source_id))

    # cursors and kv -------------------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        """Every named consumer's position (the last event id it acked)."""
        return {str(r[0]): int(r[1]) for r in self._read("SELECT consumer, position FROM cursors")}

    def get_cursor(self, consumer: str) -> int:
        rows = self._read("SELECT position FROM cursors WHERE consumer=?", (consumer,))
        return int(rows[0][0]) if rows else 0

    def set_cursor(self, consumer: str, position: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO cursors(consumer, position, moved) VALUES (?,?,?)"
                " ON CONFLICT(consumer) DO UPDATE SET position=max(position, excluded.position),"
                " moved=CASE WHEN excluded.position > position THEN excluded.moved ELSE moved END",
                (consumer, position, self.wall()),
            )

    def cursor_details(self) -> list[tuple[str, int, float | None]]:
        """Every named consumer: (name, position, when it last moved), by name."""
        rows = self._read("SELECT consumer, position, moved FROM cursors ORDER BY consumer")
        return [(str(r[0]), int(r[1]), None if r[2] is None else float(r[2])) for r in rows]

    def remove_cursor(self, consumer: str) -> bool:
        """Forget a consumer's cursor; False if there was none."""
        with self._tx() as db:
            return db.execute("DELETE FROM cursors WHERE consumer=?", (consumer,)).rowcount > 0

    def last_event_body(self, session: str, kind: EventKind) -> dict[str, Any] | None:
        """The body of the session's newest event of ``kind`` (None if it has none)."""
        # runs newest first, each read back to front; stops at the first match (the event
        # log is a row per run of events: see event_runs)
        for (packed,) in self._read("SELECT events FROM event_runs WHERE session=? ORDER BY last_id DESC",
                                    (session,)):
            items = msgpack.unpackb(packed)
            for i in range(len(items) - 2, -1, -2):
                if items[i] == kind.value:
                    body = msgpack.unpackb(items[i + 1])
                    return body if isinstance(body, dict) else None
        return None

    def kv_get(self, key: str) -> Any:
        rows = self._read("SELECT value FROM kv WHERE key=?", (key,))
        return msgpack.unpackb(rows[0][0]) if rows else None

    def kv_set(self, key: str, value: Any, max_keys: int | None = None) -> bool:
        """Store a value; False (nothing written) if the key is new and ``max_keys`` are
        kept already."""
        blob = msgpack.packb(value, use_bin_type=True)
        with self._tx() as db:
            if max_keys is not None and db.execute("SELECT 1 FROM kv WHERE key=?", (key,)).fetchone() is None \
                    and db.execute("SELECT count(*) FROM kv").fetchone()[0] >= max_keys:
                return False
            db.execute(
                "INSERT INTO kv(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, blob),
            )
        return True

    def kv_delete(self, key: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM kv WHERE key=?", (key,))
        return cur.rowcount > 0
