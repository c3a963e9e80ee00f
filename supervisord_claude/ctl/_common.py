"""What every claudectl command shares: how its result and its errors are printed,
the exit statuses (README, "Exit status"), and paths as the supervisor must get them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

#: bad flags or arguments (argparse's)
EXIT_USAGE = 2
#: ``send --wait`` gave up waiting (as coreutils' timeout(1))
EXIT_TIMED_OUT = 124
#: Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 128 + 2
#: what a shell reports for a Unix tool that a closed pipe stopped (128 + SIGPIPE)
EXIT_READER_GONE = 128 + 13
#: the longest a request waits for the supervisor (less with a smaller --timeout)
CONNECT_TIMEOUT = 10.0


def show(args: argparse.Namespace, data: Any, human: str) -> None:
    """A command's result: ``data`` as one JSON document with --json, else ``human``."""
    if args.json:
        print(json.dumps(data))
    elif human:
        print(human)


def fail(args: argparse.Namespace, message: str, code: str) -> int:
    """One error: a line on stderr, or with --json a JSON document there; exit 1."""
    if args.json:
        print(json.dumps({"error": {"code": code, "message": message}}), file=sys.stderr)
    else:
        print(f"claudectl: {message}" + (f" ({code})" if code not in ("connection", "protocol") else ""),
              file=sys.stderr)
    return 1


class UsageError(Exception):
    """A command that cannot be carried out as given (exit 2)."""


def local_path(args: argparse.Namespace, path: str, what: str) -> str:
    """A path as the supervisor must get it: this machine's, made absolute from where
    claudectl runs (the supervisor has its own working directory); on a remote host, a
    path there, which must be absolute already (ours means nothing there)."""
    if args.on_host.is_local:
        return os.path.abspath(os.path.expanduser(path))
    if not path.startswith("/"):
        raise UsageError(f"{what} {path!r}: on host {args.on_host.name} give an absolute path (a directory"
                         " there)")
    return path
