"""Typed views of the events (``docs/protocol.md``, "Events"): one ``TypedDict`` per kind.

As the replies (``_replies``), an event stays the plain dict the wire carried — nothing is
converted, and a field a newer supervisor adds is still in it — while mypy checks every
key a client reads and its type. A field the supervisor does not always send is
``NotRequired`` (read it with ``.get``). ``EVENT_TYPES`` maps each kind to its type; a
test holds them to what the supervisor emits (``tests/test_protocol_events.py``).

Every event has the fields of ``EventBase`` (``id``, ``session``, ``seq``, ``ts``, ``kind``;
``origin`` when its message had one, ``from: "terminal"`` when it was said in Claude
Code's own terminal UI). Each kind's ``kind`` is a ``Literal``, so ``event["kind"] ==
"result"`` narrows ``Event`` (the union) to ``ResultEvent``.
"""

# (no ``from __future__ import annotations``: the keys' NotRequired must be seen at run
# time, in ``__required_keys__``, which the test of what the supervisor emits reads)
from typing import Any, Literal, NotRequired, TypedDict

from ._messages import EventKind

#: the fields every stored event has (``from`` is a keyword: hence the functional form)
_Stored = TypedDict("_Stored", {
    #: global, increasing: what ``ack``'s ``upto`` and ``subscribe``'s ``after_id`` count
    "id": int,
    "session": str,
    #: per session, 1, 2, …: what a session's ``last_seq`` and ``subscribe``'s ``after_seq`` count
    "seq": int,
    #: Unix seconds
    "ts": float,
    #: the ``origin`` of the message whose turn this event belongs to (``tg:<chat>``…)
    "origin": NotRequired[str],
    #: ``"terminal"``: said in Claude Code's own terminal UI (``attach``), read-only
    "from": NotRequired[str],
})


class EventBase(_Stored):
    """What every event has; each kind adds its ``kind`` and fields."""


class StateEvent(EventBase):
    """The session's state changed (``SessionState``), and why (``Reason``)."""

    kind: Literal["state"]
    state: str
    reason: str
    #: the message whose arrival caused it (a start, a resume, a failed resume)
    message_id: NotRequired[int]
    #: seconds the session was idle, on ``resuming``
    idle_for: NotRequired[float]
    detail: NotRequired[str]
    #: ``attached``: the terminal's process, its tty, since when, its start time
    pid: NotRequired[int]
    tty: NotRequired[str | None]
    since: NotRequired[float]
    start: NotRequired[int | None]


class UserEvent(EventBase):
    """A message was handed to Claude and its turn begins (or, ``from: "terminal"``, a
    prompt typed in the terminal: no ``message_id``)."""

    kind: Literal["user"]
    message_id: NotRequired[int]
    text: str
    attachments: list[str]
    #: a steered message Claude had not taken when the turn it joined ended: its own turn
    steered: NotRequired[bool]


class SteeredEvent(EventBase):
    """A message written to Claude in the middle of the turn of message ``turn``."""

    kind: Literal["steered"]
    message_id: int
    turn: int
    text: str
    attachments: list[str]


class TakenEvent(EventBase):
    """Claude took a steered message into the turn of message ``turn``."""

    kind: Literal["taken"]
    message_id: int
    turn: int


class AssistantTextEvent(EventBase):
    """A piece of Claude's answer (complete; live text comes as ``live`` frames)."""

    kind: Literal["assistant_text"]
    message_id: NotRequired[int]
    text: str


class ToolUseEvent(EventBase):
    """Claude calls a tool."""

    kind: Literal["tool_use"]
    message_id: NotRequired[int]
    tool_use_id: str | None
    name: str | None
    input: Any


class ToolResultEvent(EventBase):
    """What a tool returned (text, at most ~4000 characters)."""

    kind: Literal["tool_result"]
    message_id: NotRequired[int]
    tool_use_id: str | None
    content: str
    is_error: bool


class PermissionDenial(TypedDict):
    tool_name: str | None
    tool_use_id: str | None


class ResultEvent(EventBase):
    """A turn's end. Read its costs with ``turn_cost`` / ``conversation_cost`` (events
    stored before the new names carry only ``cost_delta`` / ``cost_usd``)."""

    kind: Literal["result"]
    #: None: a turn Claude began by itself
    message_id: int | None
    is_error: bool
    subtype: str | None
    text: str
    #: what this turn cost (USD)
    turn_cost_usd: NotRequired[float | None]
    #: Claude's running total for the conversation, this turn included (USD)
    conversation_cost_usd: NotRequired[float | None]
    #: deprecated (v1): ``conversation_cost_usd``
    cost_usd: float | None
    #: deprecated (v1): ``turn_cost_usd``
    cost_delta: float
    duration_ms: float | None
    num_turns: int | None
    session_id: str | None
    terminal_reason: str | None
    interrupted: bool
    api_error_status: int | None
    errors: list[str]
    permission_denials: list[PermissionDenial]
    #: the steered messages Claude took into this turn
    steered: NotRequired[list[int]]


class MessageFailedEvent(EventBase):
    """The message was **not** answered, and why."""

    kind: Literal["message_failed"]
    message_id: int
    reason: str


class ErrorEvent(EventBase):
    """Something went wrong with Claude's process (it could not start, it exited) or with
    the keeper's link (the supervisor was away too long: the answer was interrupted)."""

    kind: Literal["error"]
    message: str
    exit_code: NotRequired[int]
    message_id: NotRequired[int]


class SettingsEvent(EventBase):
    """A setting of the session changed (each field only when it changed)."""

    kind: Literal["settings"]
    model: NotRequired[str]
    #: seconds
    idle_timeout: NotRequired[float]
    #: the permission mode (read it with ``permission_mode_of``)
    permission_mode: NotRequired[str]
    #: deprecated (v1): ``permission_mode``; an event stored by an earlier release has only this
    mode: NotRequired[str]
    allowed_tools: NotRequired[list[str]]
    #: the model Claude says it runs (its init line), when it changes
    claude_model: NotRequired[str]


class PermissionRequestEvent(EventBase):
    """Claude waits for ``permit`` or ``answer``."""

    kind: Literal["permission_request"]
    message_id: NotRequired[int]
    request_id: str
    tool_name: str | None
    input: Any
    tool_use_id: str | None
    #: Claude's own PermissionUpdate suggestions
    suggestions: list[dict[str, Any]]
    #: the rules ``permit`` with ``always`` would add (not for a question or a plan)
    always: NotRequired[list[str]]
    #: the directories ``permit``'s ``directory`` may pick (a file tool, deeper down)
    always_dirs: NotRequired[list[str]]
    #: the tool call's input when the request carries none (``ExitPlanMode``'s plan)
    tool_use_input: NotRequired[Any]


class PermissionResolvedEvent(EventBase):
    """A permission request was answered (``by``: ``user``, ``timeout``, ``claude``)."""

    kind: Literal["permission_resolved"]
    message_id: NotRequired[int]
    request_id: str
    allow: bool
    by: str
    message: NotRequired[str]
    #: the rules added
    always: NotRequired[list[str]]
    #: ``{question: answer}``
    answers: NotRequired[dict[str, str]]
    #: the permission mode a plan was approved into (read it with ``permission_mode_of``)
    permission_mode: NotRequired[str]
    #: deprecated (v1): ``permission_mode``
    mode: NotRequired[str]


class ReminderEvent(EventBase):
    """A prompt has waited ``remind_after`` for an answer (once per request)."""

    kind: Literal["reminder"]
    message_id: NotRequired[int]
    request_id: str
    tool_name: str
    detail: str
    since: float
    waited: float
    denied_in: float


class StalledEvent(EventBase):
    """No output for ``stall_after`` while Claude used almost no CPU (once per silence)."""

    kind: Literal["stalled"]
    message_id: NotRequired[int]
    #: ``tool`` or ``writing``
    doing: str
    tool: NotRequired[str]
    detail: NotRequired[str]
    tool_for: NotRequired[float]
    since: float
    silent_for: float
    cpu_percent: float


#: an event of any kind (``event["kind"] == "…"`` narrows it)
Event = (StateEvent | UserEvent | SteeredEvent | TakenEvent | AssistantTextEvent | ToolUseEvent
         | ToolResultEvent | ResultEvent | MessageFailedEvent | ErrorEvent | SettingsEvent
         | PermissionRequestEvent | PermissionResolvedEvent | ReminderEvent | StalledEvent)

#: each kind's type
EVENT_TYPES: dict[EventKind, type] = {
    EventKind.STATE: StateEvent,
    EventKind.USER: UserEvent,
    EventKind.STEERED: SteeredEvent,
    EventKind.TAKEN: TakenEvent,
    EventKind.ASSISTANT_TEXT: AssistantTextEvent,
    EventKind.TOOL_USE: ToolUseEvent,
    EventKind.TOOL_RESULT: ToolResultEvent,
    EventKind.RESULT: ResultEvent,
    EventKind.MESSAGE_FAILED: MessageFailedEvent,
    EventKind.ERROR: ErrorEvent,
    EventKind.SETTINGS: SettingsEvent,
    EventKind.PERMISSION_REQUEST: PermissionRequestEvent,
    EventKind.PERMISSION_RESOLVED: PermissionResolvedEvent,
    EventKind.REMINDER: ReminderEvent,
    EventKind.STALLED: StalledEvent,
}
