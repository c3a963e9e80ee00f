"""The store's event log (``EventRows``): events stored in runs (consecutive events of
one session in one row: ``_storeruns``), in one transaction with what they change in
their session and message; read back by id or by a session's seq, the newest from
memory; pruned.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from protocol import EventKind

from .._errors import StoreError
from .._wire import pack_body
from ._spend import record_spend
from ._storerecords import (
    _KIND_VALUES,
    COST_ADDED,
    DONE,
    FAILED,
    NO_UPDATES,
    EventWrite,
    StoredEvent,
    _day,
    body_of,
)
from ._storeruns import INSERT_RUN, RunSlice, RunWrite, StoredRun, pack_run, slices_after
from ._storesessions import SessionRows

log = logging.getLogger("supervisord_claude")


def _message_id_of(w: EventWrite) -> int | None:
    if w.message_id is not None or w.body is None:
        return w.message_id
    message_id = w.body.get("message_id")
    return message_id if isinstance(message_id, int) else None


class EventRows(SessionRows):
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

    def append_events(self, writes: Sequence[EventWrite | RunWrite]) -> list[StoredEvent]:
        """``append_runs``, its events each on its own."""
        return [event for run in self.append_runs(writes) for event in run.events()]

    def append_runs(self, writes: Sequence[EventWrite | RunWrite]) -> list[StoredRun]:
        """Store events in one transaction, in order, with their session field updates and
        message statuses; return them as stored, in runs. All or nothing: after a
        StoreError none of them is stored. A body's keys that name an event field are not
        stored (the event's own value would replace them when read). Consecutive events
        of one session go in one row (a run)."""
        now = self.wall()
        last_seq: dict[str, int] = {}
        # each update sets fields (cost_added adds): applied in event order, they come to
        # one UPDATE per session with the later value of each field
        merged: dict[str, dict[str, Any]] = {}
        statuses: list[tuple[str, int]] = []
        # consecutive writes of one session: one run (session, kinds, message ids, bodies,
        # extras), gathered in place
        pending: list[tuple[str, list[str], list[int | None], list[bytes], list[bytes]]] = []
        for w in writes:
            session = w.session
            if not pending or pending[-1][0] != session:
                pending.append((session, [], [], [], []))
            _, kinds, message_ids, blobs, extras = pending[-1]
            if type(w) is RunWrite:
                kinds.extend(w.kinds)
                message_ids.extend(w.message_ids)
                blobs.extend(w.blobs)
                extras.extend(w.extras or itertools.repeat(b"", len(w.blobs)))
                statuses.extend((status, message_id) for message_id, status in w.statuses)
            else:
                assert isinstance(w, EventWrite)
                kinds.append(_KIND_VALUES[w.kind])
                message_ids.append(_message_id_of(w))
                blobs.append(w.blob if w.blob is not None else pack_body(w.body or {}))
                extras.append(b"")
                if w.message_status is not None:
                    statuses.append((w.message_status[1], w.message_status[0]))
            if w.updates:
                fields = merged.setdefault(session, {})
                for key, value in w.updates.items():
                    fields[key] = fields.get(key, 0.0) + value if key == COST_ADDED else value
            if w.keeper is not None:
                fields = merged.setdefault(session, {})
                fields["keeper_pid"], fields["keeper_n"] = w.keeper
        stored: list[StoredRun] = []
        rows: list[tuple[int, int, str, int, float, bytes, bytes]] = []
        with self._tx() as db:
            event_id = self._last_id(db)
            for session, kinds, message_ids, blobs, extras in pending:
                seq = last_seq.get(session)
                if seq is None:
                    row = db.execute("SELECT last_seq FROM sessions WHERE name=?", (session,)).fetchone()
                    if row is None:
                        raise StoreError(f"no session {session!r}")
                    seq = row[0]
                data, ends = pack_run(event_id + 1, seq + 1, session, now, kinds, blobs, extras)
                count = len(blobs)
                rows.append((event_id + count, event_id + 1, session, seq + 1, now, data, ends))
                stored.append(StoredRun(event_id + 1, session, seq + 1, now, data, ends, kinds, message_ids))
                event_id += count
                last_seq[session] = seq + count
            db.executemany(INSERT_RUN, rows)
            for session, seq in last_seq.items():
                self._update(db, session, {**merged.get(session, {}), "last_seq": seq})
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
        self._checkpoints.wrote(sum(len(row[5]) for row in rows))
        self._recent.add(stored)
        return stored

    def events_after(
        self, after_id: int, session: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.stored_after(after_id, session, limit)]

    def stored_after(self, after_id: int, session: str | None = None, limit: int = 200) -> list[StoredEvent]:
        """Up to ``limit`` events after the global id ``after_id`` (of one session), in
        order, each on its own."""
        return [event for part in self.runs_after(after_id, session, limit) for event in part.events()]

    def runs_after(self, after_id: int, session: str | None = None, limit: int = 200) -> list[RunSlice]:
        """Up to ``limit`` events after the global id ``after_id`` (of one session), in
        order, as slices of their runs: the newest from memory, older ones read back."""
        recent = self._recent.after(after_id, session, limit)
        if recent is not None:
            return recent
        kept = self._read_back.after(after_id, session, limit)
        if kept:  # (what a read from the file gave before: the rest, if any, from here on)
            count = sum(map(len, kept))
            return kept if count >= limit else kept + self.runs_after(kept[-1].last_id, session, limit - count)
        params: tuple[Any, ...]
        if session is None:
            sql, params = ("SELECT first_id, session, first_seq, ts, events, ends FROM event_runs WHERE last_id>?"
                           " ORDER BY last_id", (after_id,))
        else:
            sql, params = ("SELECT first_id, session, first_seq, ts, events, ends FROM event_runs"
                           " WHERE session=? AND last_id>? ORDER BY last_id", (session, after_id))
        out: list[RunSlice] = []
        try:
            cursor = self._db.execute(sql, params)
            while limit > 0:
                row = cursor.fetchone()
                if row is None:
                    break
                [part] = slices_after([StoredRun(*row)], after_id, None, limit)
                out.append(part)
                limit -= len(part)
            cursor.close()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc
        self._read_back.keep(session, out[-1].run if out else None)
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
            self._read_back.clear()
            db.execute(
                "DELETE FROM messages WHERE created < ? AND status IN (?, ?)", (older_than, DONE, FAILED)
            )
        return int(pruned)

    def last_event_body(self, session: str, kind: EventKind) -> dict[str, Any] | None:
        """The body of the session's newest event of ``kind`` (None if it has none)."""
        # runs newest first; stops at the first that holds one (the event log is a row per
        # run of events: see event_runs)
        for row in self._read("SELECT first_id, session, first_seq, ts, events, ends FROM event_runs WHERE session=?"
                              " ORDER BY last_id DESC", (session,)):
            found = [e for e in StoredRun(*row).unpacked() if e.get("kind") == kind.value]
            if found:
                return body_of(found[-1])
        return None
