"""Configuration: command-line options, ``SUPERVISORD_CLAUDE_*`` env vars and the TOML file.

Precedence: command line, then environment, then the TOML file, then built-in defaults
(the same for every program: README, "Configuration"). ``Config.origins`` says where each
key's value came from, for ``check-config``. The keys' defaults and the ``Config`` record
are ``_configkeys``'s; reading and checking the file is ``_configfile``'s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import platformdirs

from protocol import (
    LOCAL_HOST,
    PermissionMode,
    default_config_path,
    default_runtime_dir,
)

from ._configfile import load_toml
from ._configkeys import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_INTERRUPT_TIMEOUT,
    DEFAULT_KEEPER_START_TIMEOUT,
    DEFAULT_MAX_ATTACHMENT_MIB,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_QUEUED_MESSAGES,
    DEFAULT_MAX_QUEUED_MIB,
    DEFAULT_ORPHAN_TIMEOUT,
    DEFAULT_PERMISSION_TIMEOUT,
    DEFAULT_REMIND_AFTER,
    DEFAULT_STALL_AFTER,
    DEFAULT_STALL_CPU_PERCENT,
    MIB,
    Config,
    TelegramConfig,
)
from ._errors import ConfigError

APP = "supervisord-claude"
ENV_PREFIX = "SUPERVISORD_CLAUDE_"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime-dir", help="directory of the sockets and the lock")
    parser.add_argument("--state-dir", help="directory of the SQLite store and session dirs")
    parser.add_argument("--claude-bin", help="the Claude Code executable (default: claude on PATH)")
    parser.add_argument("--idle-timeout", help="default idle timeout in seconds (default 600)")
    parser.add_argument("--orphan-timeout",
                        help="seconds keepers wait for a new supervisor after theirs died (default 300)")
    parser.add_argument("--config", help="TOML config file (default: XDG config dir)")


def _option(args: argparse.Namespace, env: Mapping[str, str], name: str) -> str | None:
    value = getattr(args, name, None)
    if value is not None:
        return str(value)
    return env.get(ENV_PREFIX + name.upper())


def _seconds(name: str, raw: Any, default: float) -> float:
    """A positive number of seconds from an option, env var or file value, or ``default``."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None
    if not value > 0:
        raise ConfigError(f"{name}: must be a positive number of seconds")
    return value


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """Build the effective configuration; raise ``ConfigError`` with a clear message."""
    env = os.environ if env is None else env
    config_opt = _option(args, env, "config")
    config_path = Path(config_opt) if config_opt else default_config_path()
    file_values: dict[str, Any] = {}
    if config_opt or config_path.exists():
        file_values = load_toml(config_path)

    origins: dict[str, str] = {}

    def pick(name: str) -> Any:
        """The value of a key that may come from a flag, the environment or the file."""
        flag = getattr(args, name, None)
        if flag is not None:
            origins[name] = f"flag --{name.replace('_', '-')}"
            return str(flag)
        if env.get(ENV_PREFIX + name.upper()):
            origins[name] = f"environment {ENV_PREFIX + name.upper()}"
            return env[ENV_PREFIX + name.upper()]
        return file_value(name, None)

    def file_value(name: str, default: Any) -> Any:
        """The value of a key only the file sets."""
        # (load_toml always gives "personas", an empty table when the file has none)
        origins[name] = "file" if name in file_values and file_values[name] != {} else "default"
        return file_values.get(name, default)

    runtime_dir = Path(pick("runtime_dir") or default_runtime_dir()).expanduser()
    state_dir = Path(pick("state_dir") or platformdirs.user_state_path(APP)).expanduser()
    idle_timeout = _seconds("idle_timeout", pick("idle_timeout"), DEFAULT_IDLE_TIMEOUT)
    orphan_timeout = _seconds("orphan_timeout", pick("orphan_timeout"), DEFAULT_ORPHAN_TIMEOUT)
    claude_bin = str(pick("claude_bin") or "claude")
    sessions_dir = file_value("sessions_dir", None)
    config = Config(
        runtime_dir=runtime_dir.absolute(),
        state_dir=state_dir.absolute(),
        claude_bin=claude_bin,
        idle_timeout=idle_timeout,
        model=file_value("model", None),
        sessions_dir=Path(sessions_dir).expanduser().absolute() if sessions_dir else None,
        personas=file_value("personas", {}),
        claude_args=file_value("claude_args", ()),
        keeper_start_timeout=file_value("keeper_start_timeout", DEFAULT_KEEPER_START_TIMEOUT),
        permission_mode=file_value("permission_mode", PermissionMode.ASK),
        allow_bypass=file_value("allow_bypass", False),
        permission_timeout=file_value("permission_timeout", DEFAULT_PERMISSION_TIMEOUT),
        event_retention_days=file_value("event_retention_days", 30.0),
        orphan_timeout=orphan_timeout,
        max_queued_messages=file_value("max_queued_messages", DEFAULT_MAX_QUEUED_MESSAGES),
        max_queued_bytes=int(file_value("max_queued_mib", DEFAULT_MAX_QUEUED_MIB) * MIB),
        max_attachment_bytes=int(file_value("max_attachment_mib", DEFAULT_MAX_ATTACHMENT_MIB) * MIB),
        interrupt_timeout=file_value("interrupt_timeout", DEFAULT_INTERRUPT_TIMEOUT),
        max_connections=file_value("max_connections", DEFAULT_MAX_CONNECTIONS),
        budget_session_usd=file_value("budget_session_usd", None),
        budget_daily_usd=file_value("budget_daily_usd", None),
        timezone=file_value("timezone", None),
        stall_after=file_value("stall_after", DEFAULT_STALL_AFTER),
        stall_cpu_percent=file_value("stall_cpu_percent", DEFAULT_STALL_CPU_PERCENT),
        remind_after=file_value("remind_after", DEFAULT_REMIND_AFTER),
        telegram=file_values.get("telegram", TelegramConfig()),
        hosts=file_value("hosts", {LOCAL_HOST.name: LOCAL_HOST}),
        config_path=config_path if file_values else None,
    )
    return _with_telegram_environment(config, file_values.get("telegram", TelegramConfig()), env, origins)


#: the bot's environment variables (bot/_config.py reads them the same way: they win
#: over the file's [telegram] table)
TELEGRAM_ENV = {"token": "TELEGRAM_BOT_TOKEN", "allowed_users": "TELEGRAM_ALLOWED_USERS",
                "api_url": "TELEGRAM_API_URL"}
#: what @BotFather hands out: the bot's numeric id, a colon, then the secret
TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]+")


def _with_telegram_environment(config: Config, from_file: TelegramConfig, env: Mapping[str, str],
                               origins: dict[str, str]) -> Config:
    """The ``[telegram]`` values the bot will use: its environment variables over the file."""
    values: dict[str, Any] = {}
    for key, name in TELEGRAM_ENV.items():
        raw = env.get(name)
        # (an empty TELEGRAM_ALLOWED_USERS is an empty allowlist, as the bot reads it)
        if raw or (raw is not None and key == "allowed_users"):
            origins[f"telegram.{key}"] = f"environment {name}"
            values[key] = raw
        else:
            origins[f"telegram.{key}"] = "file" if getattr(from_file, key) not in (None, ()) else "default"
    if "allowed_users" in values:  # (one that is not a number: see users_problem)
        parts = (part.strip() for part in values["allowed_users"].split(","))
        values["allowed_users"] = tuple(int(part) for part in parts if part.isdecimal())
    return replace(config, telegram=replace(from_file, **values), origins=origins)


def users_problem(env: Mapping[str, str]) -> str | None:
    """Why the bot would refuse ``TELEGRAM_ALLOWED_USERS``, or None."""
    for part in env.get(TELEGRAM_ENV["allowed_users"], "").split(","):
        if part.strip() and not part.strip().isdecimal():
            return f"TELEGRAM_ALLOWED_USERS: {part.strip()!r} is not a numeric Telegram user id"
    return None


def token_problem(token: str | None) -> str | None:
    """Why ``token`` cannot be a bot token, or None (Telegram alone can say it is valid)."""
    if token is None or TOKEN_SHAPE.fullmatch(token):
        return None
    return ("telegram.token: not a bot token (expected <bot id>:<secret> as @BotFather gives it, like"
            " 123456789:AAH…)")


def find_claude(claude_bin: str, search: str | None = None) -> str:
    """Absolute path of the Claude binary, or ``ConfigError``; ``search``: the PATH to look
    in (default this process's)."""
    if os.sep in claude_bin:
        path = Path(claude_bin).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.absolute())
        raise ConfigError(f"claude_bin: {claude_bin} is not an executable file")
    found = shutil.which(claude_bin, path=search)
    if not found:
        raise ConfigError(
            f"claude_bin: '{claude_bin}' was not found on PATH; install Claude Code or pass --claude-bin"
        )
    return str(Path(found).absolute())


#: what --help lists
ENVIRONMENT = {
    **{f"{ENV_PREFIX}{option.upper()}": f"--{option.replace('_', '-')}" for option in (
        "runtime_dir", "state_dir", "claude_bin", "idle_timeout", "orphan_timeout", "config", "log_format",
        "log_level")},
    "TELEGRAM_BOT_TOKEN": "[telegram] token (the bot's; shown by check-config)",
    "TELEGRAM_ALLOWED_USERS": "[telegram] allowed_users, comma-separated",
    "TELEGRAM_API_URL": "[telegram] api_url",
}

COMMANDS = {
    "run": "run the supervisor in the foreground (the default)",
    "check-config": "validate the configuration and print the effective values (secrets masked)",
    "install-units": "write systemd user units for the supervisor and the bot",
    "dial-stdio": "relay stdin/stdout to this machine's control socket (what clients elsewhere run over ssh)",
}


def build_parser() -> argparse.ArgumentParser:
    from protocol import LOG_FORMATS, LOG_LEVELS, __version__

    parser = argparse.ArgumentParser(
        prog=APP, description="Supervisor of long-lived Claude Code sessions.",
        epilog="commands:\n" + "\n".join(f"  {name:14} {text}" for name, text in COMMANDS.items())
               + "\n\nenvironment (an option wins over its variable, a variable over the config file):\n"
               + "\n".join(f"  {name:38} {text}" for name, text in ENVIRONMENT.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=list(COMMANDS), metavar="COMMAND",
                        help="run (default), check-config, install-units, dial-stdio")
    add_arguments(parser)
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json, one line per record")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    parser.add_argument("--dest", help="install-units: where to write them (default ~/.config/systemd/user)")
    parser.add_argument("--force", action="store_true", help="install-units: replace units that differ")
    parser.add_argument("--for-service", action="store_true",
                        help="check-config: check what the installed systemd unit will see (its command line,"
                             " the user manager's environment and PATH), not this shell's")
    parser.add_argument("--version", action="version", version=f"{APP} {__version__}")
    return parser


def parse(argv: Sequence[str] | None = None) -> Config:
    return resolve(build_parser().parse_args(argv))


def mask(secret: str | None) -> str:
    """How a secret is shown: enough to recognise it, not enough to use it."""
    if not secret:
        return "(not set)"
    return f"{secret[:4]}…({len(secret)} characters, masked)"


def describe(config: Config) -> list[tuple[str, str, str]]:
    """The effective configuration as (key, value, where it came from) lines, secrets
    masked."""
    personas = ", ".join(sorted(config.personas)) or "(none)"
    lines = [
        ("config file", str(config.config_path) if config.config_path else "(none: built-in defaults)"),
        ("runtime_dir", str(config.runtime_dir)),
        ("state_dir", str(config.state_dir)),
        ("store", str(config.db_path)),
        ("sessions_dir", str(config.base_cwd)),
        ("claude_bin", config.claude_bin),
        ("model", config.model or "(Claude's default)"),
        ("idle_timeout", f"{config.idle_timeout:g} s"),
        ("permission_mode", config.permission_mode.value),
        ("allow_bypass", str(config.allow_bypass).lower()),
        ("permission_timeout", f"{config.permission_timeout:g} s"),
        ("orphan_timeout", f"{config.orphan_timeout:g} s"),
        ("keeper_start_timeout", f"{config.keeper_start_timeout:g} s"),
        ("max_queued_messages", str(config.max_queued_messages)),
        ("max_queued_mib", f"{config.max_queued_bytes / MIB:g} MiB"),
        ("max_attachment_mib", f"{config.max_attachment_bytes / MIB:g} MiB"),
        ("interrupt_timeout", f"{config.interrupt_timeout:g} s"),
        ("event_retention_days", f"{config.event_retention_days:g}"),
        ("max_connections", str(config.max_connections)),
        ("budget_session_usd", f"${config.budget_session_usd:g} a day" if config.budget_session_usd else "(none)"),
        ("timezone", config.timezone or "(the machine's)"),
        ("budget_daily_usd", f"${config.budget_daily_usd:g} a day" if config.budget_daily_usd else "(none)"),
        ("stall_after", f"{config.stall_after:g} s" if config.stall_after else "0 (off)"),
        ("stall_cpu_percent", f"{config.stall_cpu_percent:g} %"),
        ("remind_after", f"{config.remind_after:g} s" if config.remind_after else "0 (off)"),
        ("claude_args", " ".join(config.claude_args) or "(none)"),
        ("personas", personas),
        ("telegram.token", mask(config.telegram.token)),
        ("telegram.allowed_users", ", ".join(map(str, config.telegram.allowed_users)) or "(none: the bot refuses everyone)"),
        ("telegram.api_url", config.telegram.api_url or "(Telegram's)"),
        ("telegram.while_busy", config.telegram.while_busy or "steer"),
        *((f"hosts.{name}", host.describe()) for name, host in config.hosts.items()),
    ]
    derived = {"store": "state_dir", **{f"hosts.{name}": "hosts" for name in config.hosts}}  # (shown, not set)
    return [(key, value, config.origins.get(derived.get(key, key), "")) for key, value in lines]
