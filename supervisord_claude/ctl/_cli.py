"""``claudectl``: a scripting CLI over the supervisor protocol — its parser and ``main``.

Human output by default; ``--json`` prints one JSON document (JSON lines for streams).
Exit status (README, "Exit status"): 0 success; 1 an error, a failed turn or a message not
delivered (the reason on stderr); 2 a usage error (bad flags: usage on stderr, a JSON
error under ``--json``); 124 ``send --wait`` gave up waiting (``--timeout``: the message
stays queued and is answered); 130 Ctrl-C; 141 the reader of the output went away
(``claudectl … | head``: quietly, as Unix tools do).

The commands live by what they own: ``_sessions`` (sessions and the supervisor),
``_messages`` (send, tail, permit, answer), ``_daily`` (rules, budget, diff, schedule,
fork), ``_attach`` (a session in Claude Code's terminal UI); their text is ``_views``'
and ``_events``'; what they share, ``_common``'s.

A command makes one connection to the supervisor (on another host: one ssh): ``main``'s
``Client``, or for a command that waits (``send --wait``, ``tail``) its own asyncio
client instead, and for ``--host NAME attach`` none (its ``ssh -t`` is the one). On
another host that ssh is a session on the connection the commands share (``protocol._hosts``:
ControlMaster), so only the first command in ``control_persist`` seconds pays ssh's
handshake; ``--host NAME shutdown`` ends that shared connection too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from protocol import (
    CONFIG_ENV,
    HOST_ENV,
    LOCAL,
    RUNTIME_DIR_ENV,
    TIMEOUT_RANGE_TEXT,
    Client,
    ConfigFileError,
    ConnectionFailed,
    PermissionMode,
    ProtocolError,
    RemoteError,
    VersionMismatch,
    __version__,
    configured_hosts,
    configured_runtime_dir,
    host_named,
)

from ._attach import attach_elsewhere, cmd_attach, cmd_conversations
from ._common import (
    CONNECT_TIMEOUT,
    EXIT_INTERRUPTED,
    EXIT_READER_GONE,
    EXIT_USAGE,
    UsageError,
    fail,
)
from ._daily import add_daily_parsers
from ._messages import cmd_answer, cmd_permit, cmd_send, cmd_tail, waits
from ._sessions import (
    cmd_backup,
    cmd_cd,
    cmd_consumers,
    cmd_interrupt,
    cmd_ls,
    cmd_mode,
    cmd_model,
    cmd_new,
    cmd_restart,
    cmd_shutdown,
    cmd_simple,
    cmd_status,
    cmd_timeout,
    ls_all_hosts,
)

MODES = tuple(m.value for m in PermissionMode)


def _count(text: str) -> int:
    """A number of things: 0 or more (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as a JSON document on stderr under ``--json`` (exit 2
    either way): a script reads every error the same way."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            print(json.dumps({"error": {"code": "usage", "message": f"{self.prog}: {message}"}}), file=sys.stderr)
            raise SystemExit(EXIT_USAGE)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="claudectl", description="Control supervisord-claude sessions",
        epilog=f"environment:\n  {RUNTIME_DIR_ENV:32} the runtime dir (under --runtime-dir, over the config file's)"
               f"\n  {CONFIG_ENV:32} the config file (under --config); its runtime_dir and [hosts.*] are read"
               f"\n  {HOST_ENV:32} the host (under --host): local, or a [hosts.NAME] of the config file",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"claudectl {__version__}")
    add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("status", help="supervisor or session status")
    s.add_argument("name", nargs="?")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("ls", help="list sessions, most recently active first")
    s.add_argument("--all", action="store_true", help="include archived sessions")
    s.add_argument("--all-hosts", action="store_true", help="every configured host's sessions, with a HOST column")
    s.set_defaults(func=cmd_ls)
    s = sub.add_parser("new", help="create a session")
    s.add_argument("name")
    s.add_argument("--model")
    s.add_argument("--cwd")
    s.add_argument("--persona")
    s.add_argument("--mode", choices=MODES, help="permission mode (default: ask, or the config's)")
    s.add_argument("--conversation", metavar="ID|latest",
                   help="continue this Claude Code conversation of --cwd (claudectl conversations lists them)")
    s.add_argument("--force", action="store_true",
                   help="with --conversation: even while a running claude has it open")
    s.set_defaults(func=cmd_new)
    s = sub.add_parser("attach", help="open a session in Claude Code's own terminal UI here (its exit status is"
                       " claudectl's); /exit hands it back")
    s.add_argument("name")
    s.add_argument("--now", action="store_true", help="stop its running answer instead of waiting for it")
    s.set_defaults(func=cmd_attach)
    s = sub.add_parser("conversations", help="Claude Code's conversations on disk for a directory")
    s.add_argument("--cwd", help="the directory (default: this one)")
    s.set_defaults(func=cmd_conversations)
    s = sub.add_parser("cd", help="move a session to another directory (a fresh conversation starts there)")
    s.add_argument("name")
    s.add_argument("dir")
    s.set_defaults(func=cmd_cd)
    s = sub.add_parser("send", help="send a message to a session")
    s.add_argument("name")
    s.add_argument("text", help="the message; - reads it from stdin")
    s.add_argument("--attach", action="append", help="absolute path of a file to attach")
    s.add_argument("--wait", action="store_true", help="wait and print the final reply")
    s.add_argument("--stream", action="store_true", help="with --wait: print the reply as it is written")
    s.add_argument("--queue", action="store_true",
                   help="if Claude is answering, wait for a turn of its own (by default the message joins the"
                        " running turn: Claude reads it at its next step)")
    s.set_defaults(func=cmd_send)
    s = sub.add_parser("tail", help="print a session's events")
    s.add_argument("name")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--from", dest="from_seq", type=int, help="start after this sequence number")
    where.add_argument("--lines", "-n", type=_count, metavar="N", help="only the last N events (then --follow goes on)")
    s.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    s.add_argument("--stream", action="store_true", help="with --follow: print answers as they are written")
    s.set_defaults(func=cmd_tail)
    for name, method, done, help_text in (
        ("drop-queued", Client.drop_queued, "dropped what was queued for '{name}' (each reported not delivered)",
         "drop the messages Claude has not started on"),
        ("suspend", Client.suspend, "session '{name}': {state}", "suspend a session now"),
        ("archive", Client.archive, "session '{name}' archived: Claude stopped, hidden from ls (unarchive brings it"
         " back)", "stop and hide a session"),
        ("unarchive", Client.unarchive, "session '{name}': {state} (back in ls)", "bring an archived session back"),
        ("new-conversation", Client.new_conversation, "session '{name}': a fresh conversation starts with the next"
         " message", "start a fresh conversation in a session (e.g. after a failed resume)"),
    ):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("name")
        s.set_defaults(func=cmd_simple(method, done))
    s = sub.add_parser("interrupt", help="interrupt the running turn (exit 1 unless Claude confirmed it)")
    s.add_argument("name")
    s.set_defaults(func=cmd_interrupt)
    s = sub.add_parser("timeout", help=f"show or set a session's idle timeout ({TIMEOUT_RANGE_TEXT} minutes)")
    s.add_argument("name")
    s.add_argument("minutes", nargs="?", type=int)
    s.set_defaults(func=cmd_timeout)
    s = sub.add_parser("model", help="show or change a session's model (restarts Claude with history)")
    s.add_argument("name")
    s.add_argument("model", nargs="?")
    s.set_defaults(func=cmd_model)
    s = sub.add_parser("mode", help=f"show or change a session's permission mode ({', '.join(MODES)});"
                       " restarts Claude with history")
    s.add_argument("name")
    s.add_argument("mode", nargs="?", choices=MODES)
    s.set_defaults(func=cmd_mode)
    s = sub.add_parser("permit", help="answer Claude's permission request, or approve its plan")
    s.add_argument("name")
    s.add_argument("request_id")
    decision = s.add_mutually_exclusive_group(required=True)
    decision.add_argument("--allow", dest="allow", action="store_true")
    decision.add_argument("--deny", dest="allow", action="store_false")
    s.add_argument("--always", action="store_true",
                   help="with --allow: also allow this tool (Bash: this command) for the rest of the session")
    s.add_argument("--mode", choices=("ask", "accept-edits"), help="approving a plan: the mode to go on in")
    s.add_argument("--message", help="why (sent to Claude with --deny)")
    s.set_defaults(func=cmd_permit)
    s = sub.add_parser("answer", help="answer Claude's question (AskUserQuestion) with option labels")
    s.add_argument("name")
    s.add_argument("request_id")
    s.add_argument("labels", nargs="+", metavar="LABEL",
                   help="the option(s) picked, or your own words; one per question if it asked several")
    s.set_defaults(func=cmd_answer)
    s = sub.add_parser("consumers", help="the named consumers' cursors (e.g. the bot's); --remove NAME forgets one")
    s.add_argument("--remove", metavar="NAME", help="forget this consumer's cursor")
    s.set_defaults(func=cmd_consumers)
    add_daily_parsers(sub)
    s = sub.add_parser("backup", help="copy the supervisor's store to FILE while it runs (consistent, unlike cp)")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--force", action="store_true", help="replace FILE if it exists")
    s.set_defaults(func=cmd_backup)
    s = sub.add_parser("completion", help="print a shell completion script: eval \"$(claudectl completion bash)\"")
    s.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    s.set_defaults(func=None)
    s = sub.add_parser("shutdown", help="stop the supervisor gracefully")
    s.set_defaults(func=cmd_shutdown)
    s = sub.add_parser("restart", help="restart the supervisor in place; running turns go on")
    s.set_defaults(func=cmd_restart)
    for command in sub.choices.values():  # the global options work after the command too
        add_global_options(command, argparse.SUPPRESS)
    return p


def add_global_options(p: argparse.ArgumentParser, default: Any = None) -> None:
    """``--runtime-dir``, ``--json``, ``--timeout`` (after a command: SUPPRESS, so a value
    given before the command is not reset)."""
    p.add_argument("--runtime-dir", default=default,
                   help=f"the supervisor's runtime dir (else ${RUNTIME_DIR_ENV}, else the config file's runtime_dir,"
                        " else the default: as the supervisor)")
    p.add_argument("--config", default=default,
                   help=f"the config file whose runtime_dir is used (else ${CONFIG_ENV}, else the default one)")
    p.add_argument("--host", default=default,
                   help=f"the machine whose supervisor to talk to: local (default) or a [hosts.NAME] of the config"
                        f" file, reached through ssh (else ${HOST_ENV})")
    p.add_argument("--json", action="store_true", default=False if default is None else default,
                   help="machine-readable output (errors as JSON on stderr)")
    p.add_argument("--timeout", type=float, default=600.0 if default is None else default,
                   help="seconds to wait at most: for the supervisor (at most 10), and for the answer with"
                        " send --wait (default 600; past it exit 124, the message stays queued)")


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in raw[: raw.index("--")] if "--" in raw else "--json" in raw
    args = build_parser().parse_args(raw)
    if args.command == "completion":  # (needs no supervisor)
        import shtab

        print(shtab.complete(build_parser(), shell=args.shell))
        return 0
    try:  # (every program picks the runtime dir the same way: protocol.configured_runtime_dir)
        args.runtime_dir = configured_runtime_dir(args.runtime_dir, args.config)
        hosts = configured_hosts(args.config)
        args.on_host = host_named(hosts, args.host or os.environ.get(HOST_ENV) or LOCAL)
    except ConfigFileError as exc:
        return fail(args, str(exc), "config")
    if getattr(args, "all_hosts", False):
        return ls_all_hosts(args, hosts)
    if args.command == "attach" and not args.on_host.is_local:  # (one ssh: the terminal's)
        return attach_elsewhere(args)
    try:  # (a command that waits connects on its own: one connection, on another host one ssh)
        client = None if waits(args) else Client(args.runtime_dir, timeout=min(CONNECT_TIMEOUT, args.timeout),
                                                 host=args.on_host)
    except VersionMismatch as exc:
        return fail(args, str(exc), "version")
    except ConnectionFailed as exc:
        return fail(args, str(exc), "connection")
    try:
        code: int = args.func(client, args)
        sys.stdout.flush()  # (what is still buffered meets a closed pipe here, not at exit)
        return code
    except RemoteError as exc:
        return fail(args, exc.message, exc.code)
    except UsageError as exc:
        fail(args, str(exc), "usage")
        return 2
    except VersionMismatch as exc:  # (of a command that waits: its connection is made here)
        return fail(args, str(exc), "version")
    except ConnectionFailed as exc:
        return fail(args, str(exc), "connection")
    except ProtocolError as exc:
        return fail(args, str(exc), "protocol")
    except KeyboardInterrupt:
        print("\nclaudectl: stopped by Ctrl-C (a message already sent stays queued and is answered)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _reader_gone()
    finally:
        try:
            if client is not None:
                client.close()
        except Exception:
            pass
        if args.command == "shutdown" and not args.on_host.is_local:
            # nothing is left to talk to there: its shared ssh connection need not wait out control_persist
            from protocol import stop_shared_connection

            stop_shared_connection(args.on_host)


def _reader_gone() -> int:
    """Whoever read our output stopped (``| head``): stop quietly. What is still buffered
    goes to /dev/null, or Python would report the broken pipe again when it exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_READER_GONE

