"""The configuration's keys: their built-in defaults and bounds, and the records every
part of the daemon is given (``Config``, ``Persona``, ``TelegramConfig``).

Plain data: reading the file is ``_configfile``'s, and where each value comes from
(command line, environment, file, default) is ``_config``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from protocol import LOCAL_HOST, Host, PermissionMode

DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_ORPHAN_TIMEOUT = 300.0
DEFAULT_PERMISSION_TIMEOUT = 600.0
DEFAULT_KEEPER_START_TIMEOUT = 30.0
#: a session's queue (messages Claude has not started on): how many, and how much text and
#: attachment copies they hold together
DEFAULT_MAX_QUEUED_MESSAGES = 100
DEFAULT_MAX_QUEUED_MIB = 64.0
#: the largest file one attachment may be (it is copied into the state dir at send)
DEFAULT_MAX_ATTACHMENT_MIB = 32.0
#: how long `interrupt` waits for Claude to confirm it (under a client's request timeout)
DEFAULT_INTERRUPT_TIMEOUT = 5.0
MAX_INTERRUPT_TIMEOUT = 8.0
MIB = 1024 * 1024
#: clients connected to the control socket at once; more wait until some leave
DEFAULT_MAX_CONNECTIONS = 1000
#: the watcher (supervisor/_watch.py): a turn with no output this long while Claude's
#: process tree used less than this share of a CPU is stalled; a prompt unanswered this
#: long gets one reminder (0 turns either off)
DEFAULT_STALL_AFTER = 300.0
DEFAULT_STALL_CPU_PERCENT = 5.0
DEFAULT_REMIND_AFTER = 600.0


@dataclass(frozen=True)
class Persona:
    name: str
    prompt: str
    model: str | None = None


@dataclass(frozen=True)
class TelegramConfig:
    token: str | None = None
    allowed_users: tuple[int, ...] = ()
    api_url: str | None = None
    #: what a message to a session whose turn runs does: joins the turn, or waits its own
    while_busy: str | None = None


@dataclass(frozen=True)
class Config:
    runtime_dir: Path
    state_dir: Path
    claude_bin: str
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    model: str | None = None
    sessions_dir: Path | None = None
    personas: Mapping[str, Persona] = field(default_factory=dict)
    claude_args: tuple[str, ...] = ()
    #: the permission mode of a new session (``create`` may name another)
    permission_mode: PermissionMode = PermissionMode.ASK
    #: sessions may use mode "bypass" (nothing is asked) only if this is set
    allow_bypass: bool = False
    #: an unanswered permission request (or question) is denied after this long
    permission_timeout: float = DEFAULT_PERMISSION_TIMEOUT
    event_retention_days: float = 30.0
    #: a keeper that has not connected this long after its fork is killed
    keeper_start_timeout: float = DEFAULT_KEEPER_START_TIMEOUT
    #: how long keepers keep Claude running after their supervisor died, waiting for the next
    orphan_timeout: float = DEFAULT_ORPHAN_TIMEOUT
    #: beyond these, `send` is refused with queue_full
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES
    max_queued_bytes: int = int(DEFAULT_MAX_QUEUED_MIB * MIB)
    #: a larger attachment is refused at `send` (too_large)
    max_attachment_bytes: int = int(DEFAULT_MAX_ATTACHMENT_MIB * MIB)
    #: `interrupt` replies "not confirmed" if Claude has not confirmed it within this long
    interrupt_timeout: float = DEFAULT_INTERRUPT_TIMEOUT
    #: clients connected at once (fewer if the open-files limit leaves less room)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: daily spending caps in USD (None: none): each session's, and all sessions' together;
    #: ``set_budget`` (``/budget``, ``claudectl budget``) overrides them
    budget_session_usd: float | None = None
    budget_daily_usd: float | None = None
    #: the IANA time zone schedules are read in (None: the machine's)
    timezone: str | None = None
    #: a running turn with no output for this long, whose Claude used less than
    #: ``stall_cpu_percent`` of a CPU meanwhile, is stalled (0: never)
    stall_after: float = DEFAULT_STALL_AFTER
    stall_cpu_percent: float = DEFAULT_STALL_CPU_PERCENT
    #: a permission request or question unanswered this long gets one reminder (0: never)
    remind_after: float = DEFAULT_REMIND_AFTER
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    #: the machines clients reach: ``local`` (this one) and each ``[hosts.NAME]`` (ssh)
    hosts: Mapping[str, Host] = field(default_factory=lambda: {LOCAL_HOST.name: LOCAL_HOST})
    config_path: Path | None = None
    #: key -> where its value came from: "flag --x", "environment NAME", "file", "default"
    origins: Mapping[str, str] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "supervisor.sqlite3"

    @property
    def base_cwd(self) -> Path:
        return self.sessions_dir or (self.state_dir / "sessions")
