"""The daemon's internal wire: every message between the supervisor, the fork server and
the keepers, typed, with one ``encode`` and one ``decode``.

Not part of the public protocol (``protocol/``): these messages cross only processes of
one supervisor instance. Each is one msgpack map whose ``t`` field names its type.

    supervisor -> fork server   Spawn{token, spec: KeeperSpec}
    fork server -> supervisor   Spawned{token, pid} | SpawnFailed{token, error}
                                | Exited{pid, status}
    keeper -> supervisor        Hello{pid, version, session, claude_pid, state, current,
                                      queued, started, pending, steered}
                                | ClaudeStarted{pid} | ConversationStarted{session_id}
                                | KeeperEvents{n, e: [kind, m, b, ...]} (a run of events)
                                | KeeperEvent{kind, m, b} (one event: wire 6 and before)
                                | Rejected{ids} | Bye{state, reason}
                                | Delta{message_id, text}  (live text, not numbered)
                                | InterruptReport{confirmed, detail, next}  (not numbered)
    supervisor -> keeper        Welcome{resend_from} | Ack{upto}
                                | Deliver{message} | Interrupt{} | Suspend{reason} | DropQueued{}
                                | Stop{reason} | SetTimeout{seconds} | SetModel{model}
                                | SetMode{mode} | SetRules{rules} | SetBudget{usd}
                                | Permit{request_id, decision, report, rules, mode}

Everything a keeper sends after its Hello is numbered (``n``, from 1) and kept by the
keeper until the supervisor acks it (``Ack{upto}``, once stored). A run of events
(``KeeperEvents``: the events a keeper reported in one loop turn, as one message) takes
one number per event, its ``n`` the first's, so acks and resends count events whatever
message carried them. A keeper says Hello on
every connection — the first, and each one to a new supervisor after the old one died;
``Welcome{resend_from}`` names the first number that supervisor has not stored, and the
keeper sends everything from there, in order. So no event is lost or stored twice
across a supervisor crash or restart.

An upgrade is such a restart: the keepers that run on were forked by the previous
release and speak its wire. A supervisor adopts the keepers of every version in
``ADOPTABLE_WIRE_VERSIONS`` and reads their messages in this release's shapes (what an
older wire sends differently is translated on decode, below); the commands it sends are
the ones every adoptable version knows. Bumping ``WIRE_VERSION`` means keeping the
previous version adoptable, with its translation: ``tests/test_upgrade.py`` runs the
keepers of the releases CHANGELOG.md marks under this supervisor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgpack

from protocol import EventKind
from protocol._packedmap import is_map as is_packed_map

KEEPER_SOCKET = "keepers.sock"
#: bumped when a message changes shape (keepers say it in their Hello)
WIRE_VERSION = 7
#: the versions of the keepers a supervisor takes over at a restart: its own, and the
#: releases it upgrades from — 3: 0.2.0 (events carried their body as a map, a
#: tool_use its call's id as ``id``); 4: main after 0.2.0 (see CHANGELOG.md); 5: 0.3.0
#: (an Interrupt is answered with an InterruptReport); 6: a message may steer the running
#: turn (``QueuedMessage.steer``; Hello says the ones written and not taken); 7: a keeper
#: sends its events as runs (``KeeperEvents``; a keeper of 6 and before sends one
#: ``KeeperEvent`` a message, which the supervisor still reads). A keeper of another
#: version is reaped at start-up, and its turn reported not delivered.
ADOPTABLE_WIRE_VERSIONS = frozenset({3, 4, 5, 6, WIRE_VERSION})
#: keepers of an older wire never answer an Interrupt: the supervisor does not wait for it
INTERRUPT_REPORTS_SINCE = 5
#: keepers of an older wire ignore ``steer``: every message waits for its own turn there
STEERING_SINCE = 6
#: SIGTERM to Claude's process group, this long, then SIGKILL (the keeper does it; the
#: supervisor waits this long, plus its own margin, for a keeper to go)
STOP_GRACE = 5.0
#: why a message the user dropped was not delivered (the keeper says it; so do the ops
#: for messages still held by the supervisor)
DROPPED = "dropped at your request before Claude saw it"


def keeper_title(instance: str, session: str) -> str:
    """A keeper's process title: how the supervisor finds (and reaps) its keepers."""
    return f"supervisord-claude[{instance}]: keeper {session}"


class WireError(ValueError):
    """A frame that is not a well-formed internal message."""


def keeper_endpoint(runtime_dir: Path | str) -> str:
    """Where keepers connect to their supervisor (inside the private runtime dir)."""
    return f"ipc://{Path(runtime_dir) / KEEPER_SOCKET}"


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
    #: (``resumed`` in a keeper of wire 7 and before, which the decoder still reads)
    started: bool = False
    #: permission requests Claude waits on (their permission_request event bodies)
    pending: tuple[dict[str, Any], ...] = ()
    #: messages written to Claude during its turn that it has not taken yet (wire 6)
    steered: tuple[int, ...] = ()


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


_TYPES: dict[str, type[Message]] = {
    cls.TAG: cls
    for cls in (Spawn, Spawned, SpawnFailed, Exited, Hello, ClaudeStarted, ConversationStarted,
                KeeperEvent, KeeperEvents, Rejected, Bye, Delta, InterruptReport, Welcome, Ack, Deliver, Interrupt, Suspend, DropQueued, Stop,
                SetTimeout,
                SetModel, SetMode, SetRules, SetBudget, Permit)
}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


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


def _event_frame(kind: str, message_id: int | None, packed_body: bytes, n: int) -> bytes:
    frame: bytes = _packb({"t": "event", "kind": kind, "m": message_id, "b": packed_body, "n": n})
    return frame


def encode_event(kind: str, body: dict[str, Any], n: int) -> bytes:
    """``encode(KeeperEvent.of(kind, body), n)`` without making the object: the hot path,
    every line of Claude's output is one."""
    return _event_frame(kind, _message_id(body), pack_body(body), n)


def run_item(kind: str, body: dict[str, Any]) -> bytes:
    """One event as it goes in a run (``KeeperEvents.events``): its kind, message id and
    packed body, packed back to back (a run is their concatenation; see ``encode_run``)."""
    return run_item_packed(kind, _message_id(body), pack_body(body))


def run_item_packed(kind: str, message_id: int | None, packed_body: bytes) -> bytes:
    # a fixarray of 3 packs as one header byte, then its items: the items are the rest
    item: bytes = _packb((kind, message_id, packed_body))
    return item[1:]


_RUN_HEAD = b"\x83" + _packb("t") + _packb(KeeperEvents.TAG) + _packb("n")
_array_header = msgpack.Packer().pack_array_header


def encode_run(first_n: int, items: list[bytes]) -> bytes:
    """A ``KeeperEvents`` of the events packed by ``run_item``, numbered from ``first_n``,
    without unpacking or packing them again."""
    return b"".join((_RUN_HEAD, _packb(first_n), _packb("e"), _array_header(3 * len(items)), *items))


def encode(msg: Message, n: int | None = None) -> bytes:
    """One message as a frame; ``n`` numbers a report (instead of its own ``n``)."""
    if type(msg) is KeeperEvent:
        return _event_frame(msg.kind, msg.message_id, msg.packed, msg.n if n is None else n)
    if type(msg) is KeeperEvents:
        flat = msg.events
        return encode_run(msg.n if n is None else n,
                          [run_item_packed(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)])
    fields = _plain(msg)
    assert isinstance(fields, dict)
    if n is not None:
        fields["n"] = n
    packed = msgpack.packb({"t": msg.TAG, **fields}, use_bin_type=True)
    return packed


def _queued(raw: Any) -> QueuedMessage:
    if not isinstance(raw, dict):
        raise WireError("a queued message is a map")
    return QueuedMessage(int(raw["id"]), str(raw["text"]), tuple(str(a) for a in raw.get("attachments") or ()),
                         raw.get("steer") is True)


def spec_from(raw: Any) -> KeeperSpec:
    if not isinstance(raw, dict):
        raise WireError("a keeper spec is a map")
    known = {f.name for f in dataclasses.fields(KeeperSpec)}
    unknown = set(raw) - known
    if unknown:
        raise WireError(f"unknown keeper spec fields {sorted(unknown)}")
    values = dict(raw)
    values["extra_args"] = tuple(values.get("extra_args") or ())
    values["allowed_tools"] = tuple(values.get("allowed_tools") or ())
    values["messages"] = tuple(_queued(m) for m in values.get("messages") or ())
    return KeeperSpec(**values)


def decode(data: bytes) -> Message:
    """The message in one frame; ``WireError`` for anything else."""
    try:
        raw = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise WireError(f"undecodable frame: {exc}") from None
    return _message(raw)


def decode_all(data: bytes) -> list[Message | WireError]:
    """The messages of a frame that holds one or more back to back (a keeper sends what
    it reported in one loop turn as one frame), each decoded or the error it raised; a
    frame that cannot be read past some point ends in one WireError."""
    out: list[Message | WireError] = []
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        for raw in unpacker:
            try:
                out.append(_message(raw))
            except WireError as exc:
                out.append(exc)
    except (ValueError, msgpack.UnpackException) as exc:
        out.append(WireError(f"undecodable frame: {exc}"))
    if not out:
        out.append(WireError("empty frame"))
    return out


def _event(raw: dict[str, Any]) -> KeeperEvent:
    """A KeeperEvent, the hot path (one per line of Claude's output): checked, then made
    without the frozen dataclass's __init__ (several times slower, per field). The body
    is checked to be a packed map by its first byte, not parsed: the keeper socket is
    private to the instance (0700 runtime dir), and its keepers are trusted as they are
    with everything else they report."""
    kind, packed, message_id, n = raw.get("kind"), raw.get("b"), raw.get("m"), raw.get("n", 0)
    if len(raw) != 5 or type(kind) is not str or type(packed) is not bytes or type(n) is not int \
            or not (message_id is None or type(message_id) is int) or not packed or not is_packed_map(packed[0]):
        if "body" in raw:
            return _event_of_wire_3(raw)
        raise WireError("malformed event message")
    event = object.__new__(KeeperEvent)
    event.__dict__.update(kind=kind, packed=packed, message_id=message_id, n=n)
    return event


def _events(raw: dict[str, Any]) -> KeeperEvents:
    """A KeeperEvents, checked as ``_event`` checks one event, an item type at a time
    over the whole run (the hot path of a burst)."""
    n, flat = raw.get("n"), raw.get("e")
    if len(raw) != 3 or type(n) is not int or type(flat) is not list or not flat or len(flat) % 3:
        raise WireError("malformed events message")
    kinds, message_ids, bodies = flat[0::3], flat[1::3], flat[2::3]
    if not all(type(k) is str for k in kinds) \
            or not all(m is None or type(m) is int for m in message_ids) \
            or not all(type(b) is bytes and b and is_packed_map(b[0]) for b in bodies):
        raise WireError("malformed event in an events message")
    events = object.__new__(KeeperEvents)
    events.__dict__.update(events=flat, n=n)
    return events


def _event_of_wire_3(raw: dict[str, Any]) -> KeeperEvent:
    """A KeeperEvent as a keeper of wire version 3 (0.2.0) sends it: ``{kind, body, n}``,
    the body a map, and a tool_use's call id under ``id`` (an event's own field now, so
    it travels as ``tool_use_id``)."""
    kind, body, n = raw.get("kind"), raw.get("body"), raw.get("n", 0)
    if len(raw) != 4 or type(kind) is not str or not isinstance(body, dict) or type(n) is not int:
        raise WireError("malformed event message")
    if kind == EventKind.TOOL_USE.value and "id" in body and "tool_use_id" not in body:
        body = {**body, "tool_use_id": body["id"]}
    return KeeperEvent.of(kind, body, n=n)


def _message(raw: Any) -> Message:
    if not isinstance(raw, dict):
        raise WireError("a message is a map")
    tag = raw.get("t")
    if tag == "events":
        return _events(raw)
    if tag == "event":
        return _event(raw)
    cls = _TYPES.get(raw.pop("t", None))
    if cls is None:
        raise WireError("unknown message type")
    try:
        if cls is Spawn:
            return Spawn(int(raw["token"]), spec_from(raw["spec"]))
        if cls is Deliver:
            return Deliver(_queued(raw["message"]))
        if cls is Rejected:
            return Rejected(tuple(int(i) for i in raw["ids"]), n=int(raw.get("n", 0)))
        if cls is Hello:
            if "resumed" in raw:  # (its name in a keeper of an earlier release)
                raw.setdefault("started", raw.pop("resumed"))
            raw["queued"] = tuple(int(i) for i in raw.get("queued") or ())
            raw["pending"] = tuple(p for p in raw.get("pending") or () if isinstance(p, dict))
            raw["steered"] = tuple(int(i) for i in raw.get("steered") or ())
        if cls is InterruptReport:
            raw["next"] = tuple(int(i) for i in raw.get("next") or ())
        if cls is Permit:
            raw["rules"] = tuple(str(r) for r in raw.get("rules") or ())
        return cls(**raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed {cls.TAG} message: {exc}") from None
