"""Typed views of the main replies (``docs/protocol.md``, "Ops"): what a client reads most.

They are ``TypedDict``s, not dataclasses, on purpose: a reply stays the plain dict the
wire carried — nothing is converted or copied, ``json.dumps`` of it is what the
supervisor sent (claudectl's ``--json``), and a field a newer supervisor adds is still
in it — while mypy checks every key a caller reads and its type. Fields an older
supervisor may not send are ``NotRequired`` (read them with ``.get``). To read a field
not listed here, use ``request`` (the generic call), or the value as a ``Mapping``.

A session's ``state`` is a ``SessionState`` value (compare it with the enum, a ``str``).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class QueueLimit(TypedDict):
    """How many messages, and how many bytes of them, a session's queue takes."""

    messages: int
    bytes: int


class Terminal(TypedDict):
    """A session open in Claude Code's own terminal UI (``claudectl attach``)."""

    pid: int
    tty: str | None
    since: float
    attached: bool


class SessionInfo(TypedDict):
    """A session record (``create``, ``list``, ``fork``; ``status`` adds to it)."""

    name: str
    session_id: str
    cwd: str
    model: str | None
    persona: str | None
    #: seconds
    idle_timeout: float
    state: str
    live: bool
    #: Claude has seen a first message (a ``suspended`` session not started is new)
    started: bool
    created: float
    last_active: float
    suspended_at: float | None
    #: what this session has spent: the sum of its turns' costs (USD)
    cost_usd: float
    last_seq: int
    #: deprecated (v1): ``permission_mode`` (read either with ``permission_mode_of``)
    mode: str
    #: the permission mode (a ``PermissionMode`` value); not from an older supervisor
    permission_mode: NotRequired[str]
    allowed_tools: list[str]
    claude_model: NotRequired[str | None]
    #: what the running turn does now (``list`` and ``status``; None when no turn runs)
    activity: NotRequired[dict[str, Any] | None]
    terminal: NotRequired[Terminal | None]


class PendingRequest(TypedDict):
    """A request Claude waits on (a permission, a question, a plan)."""

    request_id: str
    tool_name: str
    questions: NotRequired[list[dict[str, Any]]]


class SessionStatus(SessionInfo):
    """``status`` of one session: its record and what runs for it now."""

    keeper_pid: int | None
    claude_pid: int | None
    queued: int
    queued_bytes: NotRequired[int]
    queue_limit: NotRequired[QueueLimit]
    pending: list[PendingRequest]


class SupervisorStatus(TypedDict):
    """``status`` without a session: the supervisor's own (the operator's view)."""

    pid: int
    version: str
    instance: str
    uptime: float
    runtime_dir: str
    state_dir: str
    sessions_dir: str
    claude_bin: str
    default_idle_timeout: float
    #: sessions not archived
    sessions: int
    live: int
    subscriptions: int
    last_event_id: int
    consumers: dict[str, int]
    personas: list[str]
    store_problem: str | None
    by_state: dict[str, int]
    claude_processes: list[dict[str, Any]]
    cost_today: float
    cost_today_by_session: dict[str, float]
    pending_permissions: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    memory: NotRequired[int | None]
    queue_limit: NotRequired[QueueLimit]
    queues: NotRequired[list[dict[str, Any]]]
    limits: NotRequired[dict[str, dict[str, Any]]]
    turns: NotRequired[list[dict[str, Any]]]


class SendReply(TypedDict):
    """``send``: the message is stored; where it stands."""

    message_id: int
    #: the session's last event sequence number when it was stored
    seq: int
    state: str
    #: a repeated ``idempotency_key``: the first message's id, nothing sent
    duplicate: bool
    #: how many of the session's messages Claude answers before this one
    ahead: int
    #: Claude is answering: the message goes to it now, to join that turn
    steering: bool
    budget_warning: NotRequired[str]
    terminal: NotRequired[Terminal]


class InterruptReply(TypedDict):
    """``interrupt``: whether Claude confirmed it, and why not."""

    confirmed: bool
    detail: str
    next: NotRequired[list[int]]


class ForkReply(SessionInfo):
    """``fork``: the new session's record, and whether a conversation was copied."""

    fork_of: str
    copied: bool


class Schedule(TypedDict):
    """A schedule (times are Unix seconds; ``next_run`` None while paused)."""

    id: int
    session: str
    cron: str
    tz: str | None
    prompt: str
    paused: bool
    next_run: float | None
    last_run: float | None
    origin: str | None
    created: float


class Hello(TypedDict):
    """``hello``: who answers."""

    server: str
    version: str
    protocol: int
    instance: str


# the files of a session's directory (issue #26) ------------------------------------------


class FileWritten(TypedDict):
    """``put_file``: bytes of the file so far; with its last piece, its ``path`` there
    (what ``send`` takes as an attachment)."""

    size: int
    path: NotRequired[str]


class FilePiece(TypedDict):
    """``read_file``: a piece of a file of the session's directory."""

    path: str
    name: str
    size: int
    mtime_ns: int
    offset: int
    data: bytes


class DirEntry(TypedDict):
    """An entry of a ``list_dir`` listing: ``kind`` is the entry itself (file, dir, link,
    other), ``dir`` whether it leads to a directory."""

    name: str
    kind: str
    dir: bool
    size: int
    mtime: float


class DirListing(TypedDict):
    """``list_dir``: at most ``MAX_LIST_ENTRIES`` entries; ``total`` counts them all."""

    path: str
    entries: list[DirEntry]
    total: int



# the daily driver's replies (issue #27): spend and caps, git changes, always-allow rules --


class BudgetRow(TypedDict):
    """One session's line of a ``budget`` reply (USD)."""

    session: str
    today: float
    month: float
    #: its daily cap (its own, else the config's ``budget_session_usd``); None: none
    cap: float | None
    #: today's allowance (``budget_allow``) on top of ``cap``, 0 if none
    extra: NotRequired[float]
    #: the zone the cap's day ends in (None: the supervisor's)
    tz: NotRequired[str | None]


class BudgetReport(TypedDict):
    """``budget`` (and ``set_budget``, ``budget_allow``): spend today and this month per
    session and for all sessions together, with the daily caps."""

    sessions: list[BudgetRow]
    today: float
    month: float
    #: the daily cap for all sessions together; None: none
    cap: float | None
    extra: NotRequired[float]
    tz: NotRequired[str | None]
    default_session_cap: float | None
    #: the share of a cap at which ``send`` warns (``budget_warning``)
    warn_at: float


class DiffFile(TypedDict):
    """A file of one side of a ``diff``: lines added and removed (0 for a binary one)."""

    path: str
    added: int
    removed: int
    binary: bool


class DiffSide(TypedDict):
    """The staged or the unstaged changes: per file, and the whole ``git diff``."""

    files: list[DiffFile]
    diff: str
    #: ``diff`` was cut (at 1 MiB)
    truncated: bool


class Diff(TypedDict):
    """``diff``: a session's git working-tree changes. Outside a git repository only
    ``repo`` (false) and ``cwd``."""

    repo: bool
    cwd: str
    root: NotRequired[str]
    staged: NotRequired[DiffSide]
    unstaged: NotRequired[DiffSide]
    #: up to 200 paths
    untracked: NotRequired[list[str]]


class RuleAdded(TypedDict):
    """``add_rule``: the rule as kept, and all the session's rules now."""

    added: str
    rules: list[str]


class RuleRemoved(TypedDict):
    """``remove_rule``: the rule forgotten, and the rules left."""

    removed: str
    rules: list[str]


#: a reply this library gives no typed view of (its fields: ``docs/protocol.md``)
Reply = dict[str, Any]
