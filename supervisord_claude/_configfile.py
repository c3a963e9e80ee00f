"""The TOML file: read it and type-check every key, with an error that names the key.

``load_toml`` gives the values the file sets, already checked (ranges, enums, time
zones, hosts, personas, the ``[telegram]`` table the bot shares); ``_config`` places them
under the command line and the environment.
"""

from __future__ import annotations

import logging
import tomllib
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocol import HostConfigError, PermissionMode, hosts_from_table

from ._configkeys import MAX_INTERRUPT_TIMEOUT, Persona, TelegramConfig
from ._errors import ConfigError

log = logging.getLogger("supervisord_claude")


def _expect(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ConfigError(f"{where}{key}: expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "a number", float: "a number", str: "a string", list: "a list", dict: "a table", bool: "true/false"}
    return " or ".join(sorted({names.get(k, k.__name__) for k in kinds}))


_TOP_KEYS = {
    "idle_timeout",
    "model",
    "claude_bin",
    "sessions_dir",
    "runtime_dir",
    "state_dir",
    "claude_args",
    "permission_prompts",
    "permission_mode",
    "permission_timeout",
    "allow_bypass",
    "event_retention_days",
    "orphan_timeout",
    "keeper_start_timeout",
    "max_queued_messages",
    "max_queued_mib",
    "max_attachment_mib",
    "interrupt_timeout",
    "max_connections",
    "budget_session_usd",
    "budget_daily_usd",
    "timezone",
    "stall_after",
    "stall_cpu_percent",
    "remind_after",
    "personas",
    "telegram",
    "hosts",
}


def load_toml(path: Path) -> dict[str, Any]:
    """Read and type-check the TOML file; errors name the offending key."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{key}: unknown key in {path} (known: {', '.join(sorted(_TOP_KEYS))})")
    if "idle_timeout" in raw:
        value = _expect(raw, "idle_timeout", (int, float), "")
        if value <= 0:
            raise ConfigError("idle_timeout: must be a positive number of seconds")
        out["idle_timeout"] = float(value)
    for key in ("model", "claude_bin", "sessions_dir", "runtime_dir", "state_dir"):
        if key in raw:
            out[key] = _expect(raw, key, str, "")
    if "claude_args" in raw:
        args = _expect(raw, "claude_args", list, "")
        if not all(isinstance(a, str) for a in args):
            raise ConfigError("claude_args: every item must be a string")
        out["claude_args"] = tuple(args)
    if "event_retention_days" in raw:
        days = _expect(raw, "event_retention_days", (int, float), "")
        if days <= 0:
            raise ConfigError("event_retention_days: must be a positive number of days")
        out["event_retention_days"] = float(days)
    if "orphan_timeout" in raw:
        value = _expect(raw, "orphan_timeout", (int, float), "")
        if value <= 0:
            raise ConfigError("orphan_timeout: must be a positive number of seconds")
        out["orphan_timeout"] = float(value)
    if "keeper_start_timeout" in raw:
        value = _expect(raw, "keeper_start_timeout", (int, float), "")
        if value <= 0:
            raise ConfigError("keeper_start_timeout: must be a positive number of seconds")
        out["keeper_start_timeout"] = float(value)
    if "max_queued_messages" in raw:
        count = _expect(raw, "max_queued_messages", int, "")
        if count < 1:
            raise ConfigError("max_queued_messages: must be at least 1")
        out["max_queued_messages"] = count
    for key, unit in (("max_queued_mib", "MiB"), ("max_attachment_mib", "MiB"), ("interrupt_timeout", "seconds")):
        if key in raw:
            value = _expect(raw, key, (int, float), "")
            if value <= 0:
                raise ConfigError(f"{key}: must be a positive number of {unit}")
            out[key] = float(value)
    if out.get("interrupt_timeout", 0) > MAX_INTERRUPT_TIMEOUT:
        raise ConfigError(f"interrupt_timeout: at most {MAX_INTERRUPT_TIMEOUT:g} seconds (clients wait 10 s for"
                          " the reply)")
    if "max_connections" in raw:
        value = _expect(raw, "max_connections", int, "")
        if value < 1:
            raise ConfigError("max_connections: must be a positive number of connections")
        out["max_connections"] = value
    for key in ("budget_session_usd", "budget_daily_usd"):
        if key in raw:
            value = _expect(raw, key, (int, float), "")
            if value <= 0:
                raise ConfigError(f"{key}: must be a positive number of US dollars")
            out[key] = float(value)
    if "timezone" in raw:
        name = _expect(raw, "timezone", str, "")
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"timezone: {name!r} is not a time zone (an IANA name, e.g. Europe/Berlin)") from None
        out["timezone"] = name
    for key in ("stall_after", "remind_after"):
        if key in raw:
            value = _expect(raw, key, (int, float), "")
            if value < 0:
                raise ConfigError(f"{key}: must be a number of seconds (0 turns it off)")
            out[key] = float(value)
    if "stall_cpu_percent" in raw:
        value = _expect(raw, "stall_cpu_percent", (int, float), "")
        if not 0 < value <= 100:
            raise ConfigError("stall_cpu_percent: must be a percentage of one CPU, above 0 and at most 100")
        out["stall_cpu_percent"] = float(value)
    if "permission_prompts" in raw:  # of older versions: prompts are always on now
        _expect(raw, "permission_prompts", bool, "")
        log.warning("permission_prompts in %s is obsolete (Claude always asks now); remove it", path)
    if "allow_bypass" in raw:
        out["allow_bypass"] = _expect(raw, "allow_bypass", bool, "")
    if "permission_mode" in raw:
        mode = _expect(raw, "permission_mode", str, "")
        try:
            out["permission_mode"] = PermissionMode(mode)
        except ValueError:
            known = ", ".join(m.value for m in PermissionMode)
            raise ConfigError(f"permission_mode: {mode!r} is not one of {known}") from None
        if out["permission_mode"] is PermissionMode.BYPASS and not out.get("allow_bypass"):
            raise ConfigError("permission_mode: bypass needs allow_bypass = true")
    if "permission_timeout" in raw:
        value = _expect(raw, "permission_timeout", (int, float), "")
        if value <= 0:
            raise ConfigError("permission_timeout: must be a positive number of seconds")
        out["permission_timeout"] = float(value)
    if "hosts" in raw:
        try:  # (one reading for every program: protocol._hosts)
            out["hosts"] = hosts_from_table(raw["hosts"], str(path))
        except HostConfigError as exc:
            raise ConfigError(str(exc)) from None
    personas: dict[str, Persona] = {}
    for name, table in _expect(raw, "personas", dict, "").items() if "personas" in raw else []:
        where = f"personas.{name}."
        if not isinstance(table, dict):
            raise ConfigError(f"personas.{name}: expected a table")
        for key in table:
            if key not in ("prompt", "model"):
                raise ConfigError(f"{where}{key}: unknown key (known: prompt, model)")
        if "prompt" not in table:
            raise ConfigError(f"{where}prompt: missing")
        prompt = _expect(table, "prompt", str, where)
        model = _expect(table, "model", str, where) if "model" in table else None
        personas[name] = Persona(name=name, prompt=prompt, model=model)
    out["personas"] = personas
    if "telegram" in raw:
        tg = _expect(raw, "telegram", dict, "")
        for key in tg:
            if key not in ("token", "allowed_users", "api_url", "footer", "voice_command", "roots", "shared",
                           "merge_window", "while_busy"):
                raise ConfigError(f"telegram.{key}: unknown key (known: token, allowed_users, api_url, footer,"
                                  " voice_command, roots, shared, merge_window, while_busy)")
        if "roots" in tg:  # the bot's
            _expect(tg, "roots", list, "telegram.")
        if "voice_command" in tg:  # the bot's
            _expect(tg, "voice_command", (str, list), "telegram.")
        for key in ("footer", "shared"):  # the bot's
            if key in tg:
                _expect(tg, key, bool, "telegram.")
        token = _expect(tg, "token", str, "telegram.") if "token" in tg else None
        users: tuple[int, ...] = ()
        if "allowed_users" in tg:
            ids = _expect(tg, "allowed_users", list, "telegram.")
            if not all(isinstance(u, int) and not isinstance(u, bool) for u in ids):
                raise ConfigError("telegram.allowed_users: every item must be an integer user id")
            users = tuple(ids)
        api_url = _expect(tg, "api_url", str, "telegram.") if "api_url" in tg else None
        while_busy = _expect(tg, "while_busy", str, "telegram.") if "while_busy" in tg else None
        if while_busy not in (None, *WHILE_BUSY):
            raise ConfigError(f"telegram.while_busy: expected one of {', '.join(WHILE_BUSY)}, not {while_busy!r}")
        out["telegram"] = TelegramConfig(token=token, allowed_users=users, api_url=api_url, while_busy=while_busy)
    return out


#: ``[telegram] while_busy``: a message to a busy session steers its turn (the default) or
#: waits for a turn of its own
WHILE_BUSY = ("steer", "queue")
