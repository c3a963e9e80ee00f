"""Command-line entry point of the ``supervisord-claude`` daemon: ``run`` (the default),
``check-config``, ``install-units``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from protocol import configure_logging
from protocol._logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV

from .. import _config, _configkeys
from .._errors import ConfigError, StartupRefused, StoreError
from . import _units


def main(argv: list[str] | None = None) -> int:
    args = _config.build_parser().parse_args(argv)
    if args.command == "dial-stdio":  # (stdout is the link: nothing else may be written there)
        from .. import _dial_stdio

        return _dial_stdio.main(args.runtime_dir, args.config)
    if args.log_format:  # keepers, forked later, log the same way
        os.environ[LOG_FORMAT_ENV] = args.log_format
    if args.log_level:
        os.environ[LOG_LEVEL_ENV] = args.log_level
    # (the secrets the environment holds are masked by the log handler itself)
    configure_logging("supervisord-claude", args.log_format, args.log_level)
    try:
        if args.command == "install-units":
            return install_units(args)
        if args.command == "check-config" and args.for_service:
            return check_service_config(args)
        config = _config.resolve(args)
        configure_logging("supervisord-claude", args.log_format, args.log_level,
                          (config.telegram.token or "",))
        if args.command == "check-config":
            return check_config(config)
        from ._startup import run

        return run(config)
    except (ConfigError, StartupRefused, StoreError) as exc:
        print(f"supervisord-claude: {exc}", file=sys.stderr)
        return 1


def check_config(config: _configkeys.Config, env: Mapping[str, str] | None = None) -> int:
    """Print the effective value of every key and where it came from (flag, environment,
    file, default); exit 1 naming the key if Claude cannot be found, the bot token does not
    look like one, or the bot would refuse its allowlist. ``env``: the environment to judge
    by (default this process's)."""
    env = os.environ if env is None else env
    problems = []
    try:
        config = replace(config, claude_bin=_config.find_claude(config.claude_bin, env.get("PATH", "")))
    except ConfigError as exc:
        problems.append(str(exc))
    problems += filter(None, (_config.token_problem(config.telegram.token), _config.users_problem(env)))
    lines = _config.describe(config)
    key_width = max(len(key) for key, _, _ in lines)
    value_width = min(60, max(len(value) for _, value, _ in lines))
    for key, value, origin in lines:
        print(f"{key:<{key_width}}  {value:<{value_width}}  {origin}".rstrip())
    for problem in problems:
        print(f"supervisord-claude: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("the configuration is valid")
    return 0


def check_service_config(args: argparse.Namespace) -> int:
    """``check-config --for-service``: the configuration as the installed supervisor unit
    will see it — its ExecStart's flags and the user manager's environment (no shell PATH,
    none of this shell's variables) — so what works in a terminal and not under systemd
    shows here."""
    dest = Path(args.dest).expanduser() if args.dest else _units.user_unit_dir()
    try:
        flags = _units.installed_arguments(dest)
    except FileNotFoundError:
        print(f"supervisord-claude: no unit installed in {dest}; run `supervisord-claude install-units` first",
              file=sys.stderr)
        return 1
    env = _units.service_environment()
    print(f"as the service will see it: flags {' '.join(flags) or '(none)'}; PATH={env['PATH']}")
    return check_config(_config.resolve(_config.build_parser().parse_args(["check-config", *flags]), env), env)


def install_units(args: argparse.Namespace) -> int:
    """Write the units with what the service cannot find by itself: Claude's absolute path
    (systemd's user manager does not read the shell's PATH, where ``~/.local/bin`` or an
    nvm directory put it) and the directories and config file this shell chose."""
    dest = Path(args.dest).expanduser() if args.dest else _units.user_unit_dir()
    config = _config.resolve(args)
    try:
        claude = _config.find_claude(config.claude_bin)
    except ConfigError as exc:
        print(f"supervisord-claude: install-units: {exc}.\nThe service would not find it either (systemd's user"
              " manager does not read your shell's PATH): install Claude Code, then run install-units again,"
              " or run `supervisord-claude install-units --claude-bin /absolute/path/to/claude`.", file=sys.stderr)
        return 1
    origins = dict(config.origins)
    if args.config:
        origins["config"] = "flag"
    elif os.environ.get(_config.ENV_PREFIX + "CONFIG"):
        origins["config"] = "environment"
    values = {"config": config.config_path.absolute() if config.config_path else None,
              "runtime_dir": config.runtime_dir, "state_dir": config.state_dir,
              "idle_timeout": config.idle_timeout, "orphan_timeout": config.orphan_timeout}
    try:
        written = _units.install_units(dest, force=args.force,
                                       supervisor_args=_units.service_arguments(origins, values, claude))
    except (OSError, FileNotFoundError) as exc:
        print(f"supervisord-claude: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(f"claude: {claude} (written into the unit: the service does not see your shell's PATH)")
    print(_units.NEXT_STEPS, end="")
    return 0
