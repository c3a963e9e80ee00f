"""What the store holds, as Python values: message statuses, ``SessionRecord``,
``Message``, ``EventWrite`` (one event to store), ``StoredEvent`` (one stored event and
the bytes a subscriber gets, built once with its run: ``_storeruns``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack

from protocol import EventKind, SessionState, mode_fields

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


_KIND_VALUES = {kind: kind.value for kind in EventKind}
#: an event's own fields, added to its body when it is stored (``_storeruns.pack_run``)
_OWN_FIELDS = ("id", "session", "seq", "ts", "kind")


def body_of(event: dict[str, Any]) -> dict[str, Any]:
    """An event's body: its map without its own fields."""
    return {k: v for k, v in event.items() if k not in _OWN_FIELDS}


class StoredEvent:
    """One stored event: its columns and its bytes as a subscriber gets them (``data``:
    ``{**body, id, session, seq, ts, kind}`` as one msgpack map, a slice of its run's);
    its kind, body and message id read from them when asked for."""

    __slots__ = ("_dict", "_kind", "_message_id", "data", "id", "seq", "session", "ts")

    def __init__(self, event_id: int, session: str, seq: int, ts: float, data: bytes,
                 kind: str | None = None, message_id: int | None = None) -> None:
        self.id = event_id
        self.session = session
        self.seq = seq
        self.ts = ts
        self.data = data
        self._kind = kind
        self._message_id = message_id
        self._dict: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        if self._dict is None:
            self._dict = msgpack.unpackb(self.data)
        return dict(self._dict)

    @property
    def kind(self) -> str:
        if self._kind is None:
            self._kind = str(self.as_dict()["kind"])
        return self._kind

    @property
    def body(self) -> dict[str, Any]:
        return body_of(self.as_dict())

    @property
    def message_id(self) -> int | None:
        if self._message_id is None:
            found = self.as_dict().get("message_id")
            self._message_id = found if isinstance(found, int) else None
        return self._message_id

    def __repr__(self) -> str:
        return f"StoredEvent({self.as_dict()!r})"


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
