"""Command-line entry point of the ``supervisord-claude`` daemon: ``run`` (the default),
``check-config``, ``install-units``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from protocol import configure_logging
from protocol._logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV

from .. import _config
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


def check_config(config: _config.Config) -> int:
    """Print the effective value of every key and where it came from (flag, environment,
    file, default); exit 1 naming the key if Claude cannot be found, the bot token does not
    look like one, or the bot would refuse its allowlist."""
    problems = []
    try:
        config = replace(config, claude_bin=_config.find_claude(config.claude_bin))
    except ConfigError as exc:
        problems.append(str(exc))
    problems += filter(None, (_config.token_problem(config.telegram.token), _config.users_problem(os.environ)))
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


def install_units(args: argparse.Namespace) -> int:
    dest = Path(args.dest).expanduser() if args.dest else _units.user_unit_dir()
    try:
        written = _units.install_units(dest, force=args.force)
    except (OSError, FileNotFoundError) as exc:
        print(f"supervisord-claude: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(_units.NEXT_STEPS, end="")
    return 0
