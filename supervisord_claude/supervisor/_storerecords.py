"""What the store holds, as Python values: message statuses, ``SessionRecord``,
``Message``, ``EventWrite`` (one event to store), ``StoredEvent`` (one stored event and
the bytes a subscriber gets, built once), the newest events kept in memory
(``_RecentEvents``), and how a run of events is packed in a row (``unpack_run``).
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack

from protocol import EventKind, SessionState, _packedmap, mode_fields

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
            **mode_fields(self.permission_mode),  # (permission_mode, and its v1 name mode)
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
