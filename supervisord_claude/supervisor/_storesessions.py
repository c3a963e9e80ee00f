"""The store's sessions and their messages (``SessionRows``): a session's row and the
records read back (cached, read again once written), its messages and their statuses,
and the conversation a fork copies.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import msgpack

from protocol import SessionState

from ._storefile import StoreFile
from ._storerecords import _SESSION_FIELDS, COST_ADDED, QUEUED, WRITTEN, Message, SessionRecord


class SessionRows(StoreFile):
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

    def owe_again(self, ids: tuple[int, ...]) -> None:
        """Messages written to Claude that it never took, given back by their keeper
        (Claude was stopped): ``queued`` again, delivered like any owed message."""
        with self._tx() as db:
            db.executemany("UPDATE messages SET status=? WHERE id=? AND status=?",
                           [(QUEUED, message_id, WRITTEN) for message_id in ids])

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
