"""Vocabulary of the supervisor protocol: versions, ops, states, reasons, event kinds, limits.

Everything a client needs to name things on the wire lives here, so the codec, the
validation and the documentation (`docs/protocol.md`) agree on one list.
"""

from __future__ import annotations

import enum
import re

PROTOCOL_VERSION = 1

#: A frame larger than this gets a ``too_large`` error reply (it is still read).
MAX_FRAME_BYTES = 1024 * 1024
#: libzmq drops the connection of a peer that sends more than this (memory guard).
HARD_MAX_FRAME_BYTES = 8 * MAX_FRAME_BYTES
#: Longest text one ``send`` may carry.
MAX_TEXT_CHARS = 200_000
MAX_ATTACHMENTS = 10
#: The largest integer a field may carry (the store's INTEGER is a signed 64-bit number).
MAX_INT = 2**63 - 1
#: Bytes of a file carried by one ``put_file`` request or ``read_file`` reply: a file
#: larger than this crosses in pieces (two of them fit what waits for a client to read).
FILE_CHUNK_BYTES = 512 * 1024
#: Entries one ``list_dir`` reply names at most (directories first, then by name).
MAX_LIST_ENTRIES = 1000
#: Bounds of what one client may hold in the supervisor.
MAX_SUBSCRIPTIONS_PER_CLIENT = 64
#: The longest a subscriber may ask its coalesced live text to wait (``live_every``, ms).
MAX_LIVE_EVERY_MS = 10_000
MAX_KV_KEYS = 10_000
MAX_KV_VALUE_BYTES = 64 * 1024

#: Session names: letters of any script (with their combining marks), digits, ``_`` and
#: ``-``, starting with a letter or digit; at most 64 characters and 255 bytes in UTF-8
#: (a directory's name), in NFC form (so one name has one spelling). Safe as a path
#: component, a process title word and a Telegram command argument; no spaces, no
#: punctuation, no symbols (emoji included: hard to type at a shell and to tell apart).
SESSION_NAME_MAX_CHARS = 64
SESSION_NAME_MAX_BYTES = 255
SESSION_NAME_RULE = ("1-64 letters (any script), digits, '_' or '-', starting with a letter or digit;"
                     " no spaces, punctuation or emoji")
#: Consumer names (claudectl's and the bot's cursors): ASCII only.
CONSUMER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
CONSUMER_NAME_RE = re.compile(rf"\A{CONSUMER_NAME_PATTERN}\Z")

#: Bounds for a user-set idle timeout (the supervisor-wide default may be any positive number).
MIN_TIMEOUT_MINUTES = 1
MAX_TIMEOUT_MINUTES = 120


class SessionState(enum.StrEnum):
    """Where a session is in its life. Only STARTING..SUSPENDING have processes."""

    STARTING = "starting"
    RESUMING = "resuming"
    IDLE = "idle"
    BUSY = "busy"
    QUEUE_FULL = "queue_full"  # `send`: the session's queue is at its limit
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    FAILED = "failed"
    ARCHIVED = "archived"
    #: open in Claude Code's interactive terminal UI (``claudectl attach``): no process of
    #: ours; messages wait until the terminal closes
    ATTACHED = "attached"

    @property
    def live(self) -> bool:
        """True while a Claude process exists (or is being started) for the session."""
        return self in _LIVE_STATES


_LIVE_STATES = frozenset(
    {
        SessionState.STARTING,
        SessionState.RESUMING,
        SessionState.IDLE,
        SessionState.BUSY,
        SessionState.SUSPENDING,
    }
)


class PermissionMode(enum.StrEnum):
    """How a session's Claude treats tool calls its own rules do not settle."""

    ASK = "ask"  # the default: the user is asked (Claude Code's "default" mode)
    ACCEPT_EDITS = "accept-edits"  # file edits run without asking; the rest is asked
    PLAN = "plan"  # Claude only plans; ExitPlanMode asks the user to approve the plan
    BYPASS = "bypass"  # nothing is asked; only where the config allows it (allow_bypass)


class Reason(enum.StrEnum):
    """Why a state transition happened."""

    REQUESTED = "requested"
    IDLE_TIMEOUT = "idle-timeout"
    CRASHED = "crashed"
    KILLED = "killed"
    SHUTDOWN = "shutdown"
    RESUME_FAILED = "resume-failed"
    MESSAGE = "message"
    TURN = "turn"
    MODEL_CHANGE = "model-change"
    MODE_CHANGE = "mode-change"
    RULES_CHANGE = "rules-change"  # the always-allow rules were changed (not by answering a request)
    BUDGET_CHANGE = "budget-change"  # a new daily cap: a running Claude has the old limit
    INTERNAL_ERROR = "internal-error"  # a bug in the keeper: the session failed rather than hang
    STARTUP = "startup"
    ATTACHED = "attached"  # the conversation was opened in a terminal (claudectl attach)
    DETACHED = "detached"  # the terminal holding it closed


class EventKind(enum.StrEnum):
    """Kinds of session events. Every event is stored before it is published. Each kind's
    fields: its ``TypedDict`` in ``_events`` (``EVENT_TYPES``)."""

    STATE = "state"
    USER = "user"  # a message was handed to Claude
    STEERED = "steered"  # written to Claude while another message's turn runs
    TAKEN = "taken"  # Claude took a steered message into that turn
    ASSISTANT_TEXT = "assistant_text"
    TOOL_USE = "tool_use"
    TOOL_RESULT = "tool_result"
    RESULT = "result"  # a turn's end
    ERROR = "error"
    MESSAGE_FAILED = "message_failed"
    SETTINGS = "settings"
    PERMISSION_REQUEST = "permission_request"
    PERMISSION_RESOLVED = "permission_resolved"
    #: the watcher's, once per occurrence: a prompt has waited ``remind_after``
    REMINDER = "reminder"
    #: the watcher's: no output for ``stall_after`` while Claude used almost no CPU
    STALLED = "stalled"


class Op(enum.StrEnum):
    """Request operations a client may send."""

    HELLO = "hello"
    STATUS = "status"
    LIST = "list"
    CREATE = "create"
    SEND = "send"
    INTERRUPT = "interrupt"
    DROP_QUEUED = "drop_queued"
    SUSPEND = "suspend"
    SET_TIMEOUT = "set_timeout"
    SET_MODEL = "set_model"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"
    NEW_CONVERSATION = "new_conversation"
    SET_CWD = "set_cwd"
    SUBSCRIBE = "subscribe"
    ACK = "ack"
    UNSUBSCRIBE = "unsubscribe"
    PING = "ping"
    PERMIT = "permit"
    ANSWER = "answer"
    SET_MODE = "set_mode"
    KV_GET = "kv_get"
    KV_SET = "kv_set"
    KV_DELETE = "kv_delete"
    CONSUMERS = "consumers"
    REMOVE_CONSUMER = "remove_consumer"
    BACKUP = "backup"
    RESTART = "restart"
    SHUTDOWN = "shutdown"
    RULES = "rules"
    REMOVE_RULE = "remove_rule"
    BUDGET = "budget"
    SET_BUDGET = "set_budget"
    DIFF = "diff"
    FORK = "fork"
    SCHEDULE_ADD = "schedule_add"
    SCHEDULES = "schedules"
    SCHEDULE_SET = "schedule_set"
    SCHEDULE_REMOVE = "schedule_remove"
    ATTACH = "attach"
    CONVERSATIONS = "conversations"
    # files of a session's directory, for clients on other machines (issue #26)
    PUT_FILE = "put_file"
    READ_FILE = "read_file"
    LIST_DIR = "list_dir"
    OUTBOX_SENT = "outbox_sent"
    BUDGET_ALLOW = "budget_allow"
    ADD_RULE = "add_rule"


class ErrorCode(enum.StrEnum):
    """Machine-readable error codes carried in ``error.code`` of a reply."""

    BAD_FRAME = "bad_frame"  # not a msgpack map / garbage bytes
    TOO_LARGE = "too_large"
    BAD_VERSION = "bad_version"
    UNKNOWN_OP = "unknown_op"
    BAD_REQUEST = "bad_request"  # missing field, wrong type, out of range
    BAD_NAME = "bad_name"
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    ARCHIVED = "archived"
    BUSY = "busy"
    QUEUE_FULL = "queue_full"  # `send`: the session's queue is at its limit
    NOT_BUSY = "not_busy"
    NO_SUBSCRIPTION = "no_subscription"
    STORAGE = "storage"  # disk full, database unavailable
    SHUTTING_DOWN = "shutting_down"
    RESTART_REFUSED = "restart_refused"  # the code installed now would not start
    INTERNAL = "internal"
    BUDGET_EXCEEDED = "budget_exceeded"  # `send`: a daily spending cap is reached; nothing queued
