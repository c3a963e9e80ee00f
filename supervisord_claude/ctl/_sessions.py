"""claudectl's commands for sessions and the supervisor: ``status``, ``ls`` (of one host
or all), ``new``, ``cd``, the one-word ones (``suspend``, ``archive``, ...),
``interrupt``, ``timeout``, ``model``, ``mode``, ``consumers``, ``backup``, ``restart``,
``shutdown``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

from protocol import Client, Host, ProtocolError, RemoteError, Reply, permission_mode_of

from ._common import CONNECT_TIMEOUT, UsageError, fail, local_path, show
from ._views import session_text, sessions_table, supervisor_text, when

#: a command's function: what it does with a connected client, and its exit status
Command = Callable[[Client, argparse.Namespace], int]


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    if args.name:
        info = client.status(args.name)
        show(args, info, session_text(info))
    else:
        supervisor = client.supervisor_status()
        show(args, supervisor, supervisor_text(supervisor))
    return 0


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    sessions = client.list_sessions(all=args.all)
    table = sessions_table(sessions)
    show(args, sessions, table if sessions else "No sessions.")
    return 0


def ls_all_hosts(args: argparse.Namespace, hosts: dict[str, Host]) -> int:
    """``ls --all-hosts``: every host's sessions, asked at once (a host that is down costs
    its own line, not the others' time); an unreachable host is one line saying why."""
    from concurrent.futures import ThreadPoolExecutor

    def sessions_of(host: Host) -> list[dict[str, Any]]:
        with Client(args.runtime_dir, host=host, timeout=min(CONNECT_TIMEOUT, args.timeout)) as client:
            return [dict(session) for session in client.list_sessions(all=args.all)]

    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        futures = {name: pool.submit(sessions_of, host) for name, host in hosts.items()}
    sessions: list[dict[str, Any]] = []
    down: dict[str, str] = {}
    for name, future in futures.items():
        try:
            sessions += [{**s, "host": name} for s in future.result()]
        except ProtocolError as exc:
            down[name] = exc.message if isinstance(exc, RemoteError) else str(exc)
    sessions.sort(key=lambda s: -(s.get("last_active") or 0))
    lines = [sessions_table(sessions, host_column=True)] if sessions else ["No sessions."]
    lines += [f"{name}: unreachable: {why}" for name, why in down.items()]
    show(args, {"sessions": sessions, "unreachable": down}, "\n".join(lines))
    return 0


def cmd_new(client: Client, args: argparse.Namespace) -> int:
    cwd, conversation = args.cwd or None, args.conversation or None
    if conversation and not cwd:  # a conversation of the directory we are in
        if not args.on_host.is_local:
            raise UsageError(f"--conversation on host {args.on_host.name}: give --cwd (a directory there)")
        cwd = os.getcwd()
    if cwd:
        cwd = local_path(args, cwd, "--cwd")
    info = client.create(args.name, model=args.model or None, cwd=cwd, persona=args.persona or None,
                         permission_mode=args.mode or None, conversation=conversation, force=args.force)
    continues = f", continuing conversation {info['session_id']}" if conversation else ""
    show(args, info, f"created session '{info['name']}' in {info['cwd']}{continues}")
    return 0


def cmd_cd(client: Client, args: argparse.Namespace) -> int:
    """Move a session to another directory (``set_cwd``): Claude starts a fresh conversation
    there, as it keeps one per directory."""
    cwd = local_path(args, args.dir, "DIR")
    info = client.set_cwd(args.name, cwd)
    show(args, info, f"session '{args.name}' moved to {info['cwd']}; its next message starts a fresh conversation")
    return 0


def cmd_simple(method: Callable[[Client, str], Reply], done: str) -> Command:
    """A command that is one op on a session (``Client.suspend``), and what it says when
    done (``{name}`` and the reply's fields)."""

    def run(client: Client, args: argparse.Namespace) -> int:
        result = method(client, args.name)
        show(args, result, done.format(name=args.name, **result))
        return 0

    return run


def cmd_interrupt(client: Client, args: argparse.Namespace) -> int:
    """Exit 0 only if Claude confirmed the interrupt; otherwise say why not, exit 1."""
    result = client.interrupt(args.name)
    if result.get("confirmed") is False:
        return fail(args, f"interrupt of '{args.name}' not confirmed: {result.get('detail')}", "not_confirmed")
    show(args, result, f"interrupted '{args.name}': {result.get('detail') or 'sent'}")
    return 0


def cmd_timeout(client: Client, args: argparse.Namespace) -> int:
    if args.minutes is None:
        info = client.status(args.name)
        minutes = info["idle_timeout"] / 60
        show(args, {"idle_timeout": info["idle_timeout"]}, f"Idle timeout: {minutes:g} minutes")
        return 0
    result = client.set_timeout(args.name, args.minutes)
    show(args, result, f"Idle timeout set to {args.minutes} minutes for session '{args.name}'.")
    return 0


def _show_or_set(client: Client, args: argparse.Namespace, field: str, change: Callable[[Client, str, str], Reply],
                 label: str, read: Callable[[Mapping[str, Any]], Any] | None = None) -> Reply | None:
    """A setting of a session (``field`` of its status, or what ``read`` reads there):
    shown when no value is given (None returned), else set by ``change`` (its result
    returned for the caller to report). ``args``' attribute is named after the option."""
    value = getattr(args, field)
    if value is None:
        info: dict[str, Any] = dict(client.status(args.name))
        current = read(info) if read is not None else info[field]
        show(args, {field: current}, f"{label}: {current or 'default'}")
        return None
    return change(client, args.name, value)


def cmd_model(client: Client, args: argparse.Namespace) -> int:
    result = _show_or_set(client, args, "model", Client.set_model, "Model")
    if result is not None:
        show(args, result, f"Model set to {args.model} for session '{args.name}'.")
    return 0


def cmd_mode(client: Client, args: argparse.Namespace) -> int:
    result = _show_or_set(client, args, "mode", Client.set_mode, "Permission mode", permission_mode_of)
    if result is not None:
        text = f"Permission mode of '{args.name}': {permission_mode_of(result)}"
        show(args, result, text + ("" if result["changed"] else " (unchanged)"))
    return 0


def cmd_consumers(client: Client, args: argparse.Namespace) -> int:
    """The named consumers' cursors (e.g. the bot's), or remove one (``--remove``)."""
    if args.remove:
        result = client.remove_consumer(args.remove)
        show(args, result, f"removed consumer {args.remove}: it holds no events back")
        return 0
    result = client.consumers()
    rows = [f"{c['consumer']}  at event {c['position']}  moved {when(c['moved'])}"
            + ("  (stale: holds no events back)" if c["stale"] else "") for c in result["consumers"]]
    show(args, result, "\n".join(rows) or "no named consumers")
    return 0


def cmd_backup(client: Client, args: argparse.Namespace) -> int:
    """A consistent copy of the supervisor's store (SQLite's online backup, made by the
    supervisor while it runs), at FILE."""
    target = local_path(args, args.file, "backup FILE")  # (with --host: a file on that machine)
    result = client.backup(target, force=args.force)
    show(args, result, f"backed up the store to {result['path']} ({result['bytes'] / 2**20:.1f} MiB,"
                         f" {result['sessions']} sessions)")
    return 0


def cmd_restart(client: Client, args: argparse.Namespace) -> int:
    result = client.restart()
    show(args, result, f"supervisor (pid {result['pid']}) is restarting; sessions keep running")
    return 0


def cmd_shutdown(client: Client, args: argparse.Namespace) -> int:
    client.shutdown()
    show(args, {}, "supervisor is shutting down")
    return 0

