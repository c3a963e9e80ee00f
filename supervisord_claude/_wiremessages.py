"""The internal wire's messages (see ``_wire``): each a frozen dataclass whose ``TAG``
is its ``t`` on the wire; the keeper's launch spec; how an event body is packed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack


@dataclass(frozen=True)
class QueuedMessage:
    """A user message on its way to Claude."""

    id: int
    text: str
    attachments: tuple[str, ...] = ()
    #: sent while a turn runs, it goes to Claude at once and joins that turn (``send``
    #: without ``queue``); otherwise it waits for a turn of its own
    steer: bool = False


@dataclass(frozen=True)
class KeeperSpec:
    """Everything a forked keeper needs to run one session."""

    session: str
    instance: str
    runtime_dir: str
    claude_bin: str
    cwd: str
    session_id: str
    #: the conversation exists (Claude saw a first message): start with --resume
    started: bool
    idle_timeout: float
    model: str | None = None
    system_prompt: str | None = None
    extra_args: tuple[str, ...] = ()
    permission_mode: str = "ask"  # a protocol.PermissionMode value
    allowed_tools: tuple[str, ...] = ()  # always-allow rules of the session
    #: an unanswered permission request is denied after this long
    permission_timeout: float = 600.0
    #: seconds the session was suspended, for "Resuming session (idle for 15 min)"
    idle_for: float | None = None
    #: Claude's cumulative total_cost_usd as last reported (it carries on across --resume)
    cost_baseline: float = 0.0
    #: how long a keeper whose supervisor died waits for the next one before it stops
    orphan_timeout: float = 300.0
    messages: tuple[QueuedMessage, ...] = ()
    #: what Claude may still spend today (the budgets), for --max-budget-usd; None: no cap
    budget_usd: float | None = None
    #: a forked session's first start continues a copy of this conversation (--fork-session)
    fork_from: str | None = None


class Message:
    """Base of every internal message; ``TAG`` is its ``t`` on the wire."""

    TAG: ClassVar[str] = ""


@dataclass(frozen=True, kw_only=True)
class Numbered(Message):
    """A keeper's report after its Hello: numbered, kept by the keeper until acked."""

    n: int = 0

    @property
    def last_n(self) -> int:
        """The number of the last report it carries (a run of events carries several)."""
        return self.n


# fork server --------------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn(Message):
    TAG = "spawn"
    token: int
    spec: KeeperSpec


@dataclass(frozen=True)
class Spawned(Message):
    TAG = "spawned"
    token: int
    pid: int


@dataclass(frozen=True)
class SpawnFailed(Message):
    TAG = "spawn_failed"
    token: int
    error: str


@dataclass(frozen=True)
class Exited(Message):
    TAG = "exited"
    pid: int
    status: int


# keeper -> supervisor -----------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    """A keeper introduces itself, on every connection to a supervisor."""

    TAG = "hello"
    pid: int
    version: int = 1  # a keeper always says which; one that does not predates versions
    session: str = ""
    claude_pid: int | None = None
    state: str = ""
    current: int | None = None  # the message Claude is answering
    queued: tuple[int, ...] = ()  # messages it holds for Claude, in order
    #: the conversation exists (Claude's --resume works): the session record's ``started``
    #: (``resumed`` in a keeper of an earlier release, which the decoder still reads)
    started: bool = False
    #: permission requests Claude waits on (their permission_request event bodies)
    pending: tuple[dict[str, Any], ...] = ()
    #: messages written to Claude during its turn that it has not taken yet (wire 6)
    steered: tuple[int, ...] = ()
    #: the number of its last report when it said hello (wire 8): which messages it took
    #: is known once every report up to it is stored (``KeeperHandle.resend_until``); None
    #: from a keeper of an older wire, which does not say
    last_n: int | None = None


@dataclass(frozen=True)
class ClaudeStarted(Numbered):
    TAG = "claude"
    pid: int


@dataclass(frozen=True)
class ConversationStarted(Numbered):
    TAG = "started"
    session_id: str


#: an event's own fields (added by the supervisor's store), which no body may hold
EVENT_FIELDS = frozenset({"id", "session", "seq", "ts", "kind"})


@dataclass(frozen=True)
class KeeperEvent(Numbered):
    """An event of the session. Its body travels packed (``b``, a msgpack map) and is
    stored as it came: the supervisor unpacks only the few kinds it acts on. ``m`` is the
    body's ``message_id``, which every event of a turn carries."""

    TAG = "event"
    kind: str
    packed: bytes
    message_id: int | None = None

    @classmethod
    def of(cls, kind: str, body: dict[str, Any], n: int = 0) -> KeeperEvent:
        return cls(kind, pack_body(body), _message_id(body), n=n)

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = msgpack.unpackb(self.packed)
        return body


@dataclass(frozen=True)
class KeeperEvents(Numbered):
    """A run of events of the session, in order: what a keeper reported in one loop turn
    (up to RUN_EVENTS, RUN_BYTES), as one message, so a burst costs the supervisor a
    message per run, not per line. ``n`` numbers the first; the others follow (n + 1, …).
    ``events`` is flat, three items an event: its kind, its message id, its packed body
    (as in ``KeeperEvent``)."""

    TAG = "events"
    events: list[Any]

    @property
    def last_n(self) -> int:
        return self.n + len(self.events) // 3 - 1

    def each(self) -> list[KeeperEvent]:
        """Its events, each as a ``KeeperEvent`` with its own number (for tests and tools:
        the supervisor reads the flat list)."""
        flat = self.events
        return [KeeperEvent(flat[i], flat[i + 2], flat[i + 1], n=self.n + i // 3) for i in range(0, len(flat), 3)]


#: a keeper closes a run of events at this many events, or bytes, and starts another
RUN_EVENTS = 1024
RUN_BYTES = 256 * 1024


@dataclass(frozen=True)
class Rejected(Numbered):
    """Messages the keeper will not run (it is stopping): the supervisor requeues them."""

    TAG = "rejected"
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Bye(Numbered):
    TAG = "bye"
    state: str
    reason: str


@dataclass(frozen=True)
class Delta(Message):
    """Text of the answer as Claude writes it: live only, never stored nor numbered (the
    complete text follows as an assistant_text event)."""

    TAG = "delta"
    message_id: int | None
    text: str


@dataclass(frozen=True)
class InterruptReport(Message):
    """What became of an ``Interrupt``: Claude confirmed it (its control_response), or
    why not. Live only, not numbered: a supervisor that does not get it in time replies
    "not confirmed" by itself."""

    TAG = "interrupt_report"
    confirmed: bool
    detail: str
    #: messages written during the turn that Claude had not taken: they become its next
    #: turn (wire 6)
    next: tuple[int, ...] = ()


@dataclass(frozen=True)
class Welcome(Message):
    """The supervisor takes the keeper on; it has stored its reports before ``resend_from``."""

    TAG = "welcome"
    resend_from: int


@dataclass(frozen=True)
class Ack(Message):
    TAG = "ack"
    upto: int


# supervisor -> keeper -----------------------------------------------------------------


@dataclass(frozen=True)
class Deliver(Message):
    TAG = "send"
    message: QueuedMessage


@dataclass(frozen=True)
class Interrupt(Message):
    TAG = "interrupt"


@dataclass(frozen=True)
class Suspend(Message):
    TAG = "suspend"
    reason: str


@dataclass(frozen=True)
class DropQueued(Message):
    """Report every message held for Claude but not started as not delivered (the user
    chose to drop them); the one Claude is answering goes on."""

    TAG = "drop_queued"


@dataclass(frozen=True)
class Stop(Message):
    TAG = "stop"
    reason: str


@dataclass(frozen=True)
class SetTimeout(Message):
    TAG = "timeout"
    seconds: float


@dataclass(frozen=True)
class SetModel(Message):
    TAG = "model"
    model: str


@dataclass(frozen=True)
class SetMode(Message):
    TAG = "mode"
    mode: str


@dataclass(frozen=True)
class SetRules(Message):
    """The session's always-allow rules, after the user removed one: Claude restarts
    with them (``--resume``) once no turn runs, since it keeps the old ones in-process."""

    TAG = "rules"
    rules: tuple[str, ...]


@dataclass(frozen=True)
class SetBudget(Message):
    """What the session may still spend today changed (a cap was set or raised): Claude
    restarts with it (``--max-budget-usd``, ``--resume``) once no turn runs."""

    TAG = "budget"
    usd: float | None


@dataclass(frozen=True)
class Permit(Message):
    """Answer a pending request: ``decision`` goes to Claude as it is, ``report`` into the
    permission_resolved event; ``rules`` (always-allow) and ``mode`` (a plan approved)
    are the keeper's to keep for the next Claude it starts."""

    TAG = "permit"
    request_id: str
    decision: dict[str, Any]
    report: dict[str, Any]
    rules: tuple[str, ...] = ()
    mode: str | None = None



_packb = msgpack.Packer(use_bin_type=True).pack


def pack_body(body: dict[str, Any]) -> bytes:
    """An event body as it travels and is stored: a msgpack map without the event's own
    fields (which it cannot hold: the store adds them when the event is read)."""
    if not EVENT_FIELDS.isdisjoint(body):
        body = {k: v for k, v in body.items() if k not in EVENT_FIELDS}
    packed: bytes = _packb(body)
    return packed


def _message_id(body: dict[str, Any]) -> int | None:
    message_id = body.get("message_id")
    return message_id if isinstance(message_id, int) else None
