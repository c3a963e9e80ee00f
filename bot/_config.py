"""The bot's configuration: token, allowlist and Bot API root from the environment or the
``[telegram]`` table of the shared TOML file (the rest of that file is the supervisor's
and is not read here), and the runtime dir of the supervisor to talk to."""

from __future__ import annotations

import argparse
import os
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from protocol import (
    LOCAL_HOST,
    LOG_FORMATS,
    LOG_LEVELS,
    RUNTIME_DIR_ENV,
    Host,
    HostConfigError,
    __version__,
    default_runtime_dir,
    hosts_from_table,
)

from ._errors import BotConfigError

DEFAULT_API_URL = "https://api.telegram.org"
#: Bot API servers in the cloud hand out files of at most 20 MB.
MAX_FILE_BYTES = 20 * 1024 * 1024
CONFIG_ENV = "SUPERVISORD_CLAUDE_CONFIG"
TELEGRAM_KEYS = ("token", "allowed_users", "api_url", "footer", "voice_command", "roots", "shared", "merge_window",
                 "while_busy")
#: what a message to a session whose turn runs does: "steer" joins that turn (Claude reads
#: it at its next step), "queue" waits for a turn of its own
WHILE_BUSY = ("steer", "queue")
#: how long (seconds) the bot waits for the next part of an album or of a long paste
DEFAULT_MERGE_WINDOW = 1.5
MAX_MERGE_WINDOW = 30.0


@dataclass(frozen=True)
class BotConfig:
    token: str
    allowed_users: frozenset[int]
    api_url: str
    runtime_dir: Path
    max_file_bytes: int = MAX_FILE_BYTES
    check_only: bool = False  # --check: validate the configuration and exit
    log_format: str | None = None
    log_level: str | None = None
    footer: bool = True  # a quiet line with cost, time and turns after each answer
    #: transcribes a voice note: the program and its arguments, the audio file's path is
    #: added last; it prints the text (e.g. whisper.cpp's CLI). None: voice is not set up
    voice_command: tuple[str, ...] | None = None
    #: where /new may put a session and /ls may look; () = the supervisor's sessions dir
    roots: tuple[Path, ...] = ()
    #: every allowlisted user sees every session (by default a session made from Telegram
    #: is its maker's)
    shared: bool = False
    #: the photos of one album, and the parts Telegram makes of one long paste, are one
    #: message to Claude: after such a part the bot waits this long for the next (0: never)
    merge_window: float = DEFAULT_MERGE_WINDOW
    #: the machines whose supervisors the bot drives: ``local`` and each ``[hosts.NAME]``
    hosts: Mapping[str, Host] = field(default_factory=lambda: {LOCAL_HOST.name: LOCAL_HOST})
    while_busy: str = "steer"  # one of WHILE_BUSY

    @property
    def base_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/file/bot"


def parse_user_ids(raw: str) -> frozenset[int]:
    ids = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ids.add(int(part))
        except ValueError:
            raise BotConfigError(
                f"TELEGRAM_ALLOWED_USERS: {part!r} is not a numeric Telegram user id"
            ) from None
    return frozenset(ids)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="claude-telegram-bot", description="Telegram front end of supervisord-claude",
        epilog="environment (over the config file; an option over both):\n"
               "  TELEGRAM_BOT_TOKEN             [telegram] token\n"
               "  TELEGRAM_ALLOWED_USERS         [telegram] allowed_users, comma-separated\n"
               "  TELEGRAM_API_URL               [telegram] api_url\n"
               "  TELEGRAM_FOOTER                [telegram] footer (on/off)\n"
               f"  {RUNTIME_DIR_ENV:30} --runtime-dir\n"
               f"  {CONFIG_ENV:30} --config\n"
               "  SUPERVISORD_CLAUDE_LOG_FORMAT  --log-format\n"
               "  SUPERVISORD_CLAUDE_LOG_LEVEL   --log-level",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime-dir", help="the supervisor's runtime dir (default: as the supervisor's)")
    p.add_argument("--config", help="TOML config file; only its [telegram] table and runtime_dir are read")
    p.add_argument("--check", action="store_true", help="only check the configuration, then exit")
    p.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json, one line per record")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    p.add_argument("--version", action="version", version=f"claude-telegram-bot {__version__}")
    return p


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise BotConfigError(f"config file {path} does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise BotConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    try:  # (read as every program reads them: protocol._hosts)
        out["hosts"] = hosts_from_table(raw.get("hosts"), str(path))
    except HostConfigError as exc:
        raise BotConfigError(str(exc)) from None
    if "runtime_dir" in raw:
        if not isinstance(raw["runtime_dir"], str):
            raise BotConfigError("runtime_dir: expected a string")
        out["runtime_dir"] = raw["runtime_dir"]
    table = raw.get("telegram", {})
    if not isinstance(table, dict):
        raise BotConfigError("telegram: expected a table")
    for key in table:
        if key not in TELEGRAM_KEYS:
            raise BotConfigError(f"telegram.{key}: unknown key (known: {', '.join(TELEGRAM_KEYS)})")
    for key in ("token", "api_url"):
        if key in table and not isinstance(table[key], str):
            raise BotConfigError(f"telegram.{key}: expected a string")
    if "voice_command" in table:
        command = table["voice_command"]
        if isinstance(command, str):
            command = shlex.split(command)  # (split like a shell would, never run by one)
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            raise BotConfigError("telegram.voice_command: expected a command line or a list of strings")
        table = {**table, "voice_command": tuple(command)}
    if "roots" in table:
        roots = table["roots"]
        if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
            raise BotConfigError("telegram.roots: expected a list of directories")
        table = {**table, "roots": tuple(Path(r).expanduser().absolute() for r in roots)}
    for key in ("footer", "shared"):
        if key in table and not isinstance(table[key], bool):
            raise BotConfigError(f"telegram.{key}: expected true or false")
    if "while_busy" in table and table["while_busy"] not in WHILE_BUSY:
        raise BotConfigError(f"telegram.while_busy: expected one of {', '.join(WHILE_BUSY)},"
                             f" not {table['while_busy']!r}")
    if "merge_window" in table:
        window = table["merge_window"]
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 <= window <= MAX_MERGE_WINDOW:
            raise BotConfigError(f"telegram.merge_window: expected seconds from 0 to {MAX_MERGE_WINDOW:g}")
        table = {**table, "merge_window": float(window)}
    users = table.get("allowed_users", [])
    if not isinstance(users, list) or not all(isinstance(u, int) and not isinstance(u, bool) for u in users):
        raise BotConfigError("telegram.allowed_users: expected a list of integer user ids")
    out.update({k: table[k] for k in TELEGRAM_KEYS if k in table})
    return out


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> BotConfig:
    env = os.environ if env is None else env
    args = parser().parse_args(argv)
    explicit = args.config or env.get(CONFIG_ENV)
    path = Path(explicit).expanduser() if explicit else platformdirs.user_config_path("supervisord-claude") / "config.toml"
    values = _read_file(path, bool(explicit))
    token = env.get("TELEGRAM_BOT_TOKEN") or values.get("token")
    if not token:
        raise BotConfigError(
            f"no Telegram bot token: set TELEGRAM_BOT_TOKEN or [telegram] token in {path} (get one from @BotFather)"
        )
    raw_users = env.get("TELEGRAM_ALLOWED_USERS")
    users = parse_user_ids(raw_users) if raw_users is not None else frozenset(values.get("allowed_users", ()))
    api_url = env.get("TELEGRAM_API_URL") or values.get("api_url") or DEFAULT_API_URL
    runtime = args.runtime_dir or env.get(RUNTIME_DIR_ENV) or values.get("runtime_dir")
    runtime_dir = Path(runtime).expanduser().absolute() if runtime else default_runtime_dir()
    raw_footer = env.get("TELEGRAM_FOOTER")
    if raw_footer is not None and raw_footer.lower() not in ("0", "1", "true", "false", "on", "off"):
        raise BotConfigError(f"TELEGRAM_FOOTER: {raw_footer!r} is not on/off")
    footer = raw_footer.lower() in ("1", "true", "on") if raw_footer is not None else values.get("footer", True)
    return BotConfig(token=token, allowed_users=users, api_url=api_url, runtime_dir=runtime_dir,
                     check_only=args.check, log_format=args.log_format, log_level=args.log_level,
                     footer=footer, voice_command=values.get("voice_command"), roots=values.get("roots", ()),
                     shared=values.get("shared", False),
                     merge_window=values.get("merge_window", DEFAULT_MERGE_WINDOW),
                     hosts=values.get("hosts", {LOCAL_HOST.name: LOCAL_HOST}),
                     while_busy=values.get("while_busy", "steer"))
