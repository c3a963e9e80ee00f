"""The supervisord-claude wire protocol: ZeroMQ + msgpack over Unix-domain sockets.

Public surface only; see ``docs/protocol.md`` for the specification.
"""

from typing import TYPE_CHECKING, Any

from ._client import Client, check_running
from ._codec import decode, encode, encode_event, encode_events
from ._costs import CONVERSATION_COST, TURN_COST, conversation_cost, cost_fields, money, turn_cost, usd_text
from ._errors import (
    ConnectionFailed,
    FrameError,
    ProtocolError,
    RemoteError,
    ValidationError,
    VersionMismatch,
)
from ._hosts import (
    HOST_ENV,
    LOCAL,
    LOCAL_HOST,
    Host,
    HostConfigError,
    configured_hosts,
    host_named,
    hosts_from_table,
)
from ._humanize import TIMEOUT_RANGE_TEXT, counted, idle_note, relative_time, timeout_in_range
from ._logs import LOG_FORMATS, LOG_LEVELS, configure_logging, mask_secrets
from ._messages import (
    FILE_CHUNK_BYTES,
    HARD_MAX_FRAME_BYTES,
    MAX_FRAME_BYTES,
    MAX_INT,
    MAX_KV_KEYS,
    MAX_KV_VALUE_BYTES,
    MAX_LIST_ENTRIES,
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    MAX_TEXT_CHARS,
    MAX_TIMEOUT_MINUTES,
    MIN_TIMEOUT_MINUTES,
    PROTOCOL_VERSION,
    SESSION_NAME_RULE,
    ErrorCode,
    EventKind,
    Op,
    PermissionMode,
    Reason,
    SessionState,
)
from ._methods import AsyncOps, BlockingOps, OpMethod, OpMethods
from ._paths import (
    CONFIG_ENV,
    CONTROL_SOCKET,
    LOCK_FILE,
    OUTBOX_DIR,
    OUTBOX_SENT_DIR,
    RUNTIME_DIR_ENV,
    UPLOADS_DIR,
    ConfigFileError,
    configured_runtime_dir,
    control_endpoint,
    default_config_path,
    default_runtime_dir,
    instance_id,
    runtime_dir_problem,
    socket_problem,
)
from ._replies import (
    BudgetReport,
    BudgetRow,
    Diff,
    DiffFile,
    DiffSide,
    DirEntry,
    DirListing,
    FilePiece,
    FileWritten,
    ForkReply,
    Hello,
    InterruptReply,
    PendingRequest,
    QueueLimit,
    Reply,
    RuleAdded,
    RuleRemoved,
    Schedule,
    SendReply,
    SessionInfo,
    SessionStatus,
    SupervisorStatus,
    Terminal,
)
from ._transport import InProcessClient, InProcessServer
from ._validation import Request, is_session_name, request_id_of, validate_request
from ._version import __version__

__all__ = [
    "CONFIG_ENV",
    "CONTROL_SOCKET",
    "CONVERSATION_COST",
    "FILE_CHUNK_BYTES",
    "HARD_MAX_FRAME_BYTES",
    "HOST_ENV",
    "LOCAL",
    "LOCAL_HOST",
    "LOCK_FILE",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_FRAME_BYTES",
    "MAX_INT",
    "MAX_KV_KEYS",
    "MAX_KV_VALUE_BYTES",
    "MAX_LIST_ENTRIES",
    "MAX_SUBSCRIPTIONS_PER_CLIENT",
    "MAX_TEXT_CHARS",
    "MAX_TIMEOUT_MINUTES",
    "MIN_TIMEOUT_MINUTES",
    "OUTBOX_DIR",
    "OUTBOX_SENT_DIR",
    "PROTOCOL_VERSION",
    "RUNTIME_DIR_ENV",
    "SESSION_NAME_RULE",
    "TIMEOUT_RANGE_TEXT",
    "TURN_COST",
    "UPLOADS_DIR",
    "AsyncClient",
    "AsyncOps",
    "BlockingOps",
    "BudgetReport",
    "BudgetRow",
    "Client",
    "ConfigFileError",
    "ConnectionFailed",
    "Diff",
    "DiffFile",
    "DiffSide",
    "DirEntry",
    "DirListing",
    "ErrorCode",
    "EventKind",
    "FilePiece",
    "FileWritten",
    "ForkReply",
    "FrameError",
    "Hello",
    "Host",
    "HostConfigError",
    "InProcessClient",
    "InProcessServer",
    "InterruptReply",
    "LinkState",
    "Op",
    "OpMethod",
    "OpMethods",
    "PendingRequest",
    "PermissionMode",
    "ProtocolError",
    "QueueLimit",
    "Reason",
    "RemoteError",
    "Reply",
    "Request",
    "RuleAdded",
    "RuleRemoved",
    "Schedule",
    "SendReply",
    "SessionInfo",
    "SessionState",
    "SessionStatus",
    "SshLink",
    "Subscription",
    "SupervisorStatus",
    "Terminal",
    "ValidationError",
    "VersionMismatch",
    "__version__",
    "check_running",
    "configure_logging",
    "configured_hosts",
    "configured_runtime_dir",
    "control_endpoint",
    "conversation_cost",
    "cost_fields",
    "counted",
    "decode",
    "default_config_path",
    "default_runtime_dir",
    "encode",
    "encode_event",
    "encode_events",
    "host_named",
    "hosts_from_table",
    "idle_note",
    "instance_id",
    "is_session_name",
    "mask_secrets",
    "money",
    "relative_time",
    "request_id_of",
    "runtime_dir_problem",
    "socket_problem",
    "timeout_in_range",
    "turn_cost",
    "usd_text",
    "validate_request",
]

if TYPE_CHECKING:
    from ._aclient import AsyncClient, Subscription
    from ._ssh import LinkState, SshLink


def __getattr__(name: str) -> Any:
    # the asyncio client on first use: a blocking client (claudectl) never imports asyncio
    if name in ("AsyncClient", "Subscription"):
        from . import _aclient

        return getattr(_aclient, name)
    if name in ("LinkState", "SshLink"):  # (another host's link: loaded by who reaches one)
        from . import _ssh

        return getattr(_ssh, name)
    raise AttributeError(f"module 'protocol' has no attribute {name!r}")
