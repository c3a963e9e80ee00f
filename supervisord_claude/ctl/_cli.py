"""``claudectl``: a scripting CLI over the supervisor protocol.

Human output by default; ``--json`` prints one JSON document (JSON lines for streams).
Exit status (README, "Exit status"): 0 success; 1 an error, a failed turn or a message not
delivered (the reason on stderr); 2 a usage error (bad flags: usage on stderr, a JSON
error under ``--json``); 124 ``send --wait`` gave up waiting (``--timeout``: the message
stays queued and is answered); 130 Ctrl-C; 141 the reader of the output went away
(``claudectl … | head``: quietly, as Unix tools do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
    Host,
    PermissionMode,
    ProtocolError,
    RemoteError,
    SessionState,
    VersionMismatch,
    __version__,
    configured_hosts,
    configured_runtime_dir,
    host_named,
    idle_note,
    money,
    relative_time,
    turn_cost,
    usd_text,
)

from ._attach import cmd_attach, cmd_conversations

MODES = tuple(m.value for m in PermissionMode)


def _print(args: argparse.Namespace, data: Any, human: str) -> None:
    if args.json:
        print(json.dumps(data))
    elif human:
        print(human)


def render_event(event: dict[str, Any]) -> str:
    """One line (or block) of human output for an event."""
    kind = event.get("kind")
    head = f"[{event.get('session')} #{event.get('seq')}]"
    if event.get("from") == "terminal":  # said in Claude Code's own terminal UI (claudectl attach)
        head += " 📟"
    if kind == "state":
        extra = idle_note(event.get("idle_for"))
        return f"{head} state {event.get('state')} ({event.get('reason')}){extra}"
    if kind == "user":
        return f"{head} > {event.get('text')}"
    if kind == "steered":
        return f"{head} >> {event.get('text')} (sent while message {event.get('turn')} was answered)"
    if kind == "taken":
        return f"{head} message {event.get('message_id')} joined the turn of message {event.get('turn')}"
    if kind == "assistant_text":
        return f"{head} {event.get('text')}"
    if kind == "tool_use":
        tool_input = json.dumps(event.get("input"))
        return f"{head} tool {event.get('name')}: {tool_input[:200]}"
    if kind == "tool_result":
        content = event.get("content")
        shown = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return f"{head} tool result: {shown[:200]}"
    if kind == "result":
        status = "interrupted" if event.get("interrupted") else "error" if event.get("is_error") else "done"
        # the turn's own cost, as the bot shows it (cost_usd is the conversation's total)
        return f"{head} {status} in {event.get('duration_ms')} ms, cost {usd_text(turn_cost(event))}"
    if kind == "message_failed":
        return f"{head} message {event.get('message_id')} not delivered: {event.get('reason')}"
    if kind == "error":
        return f"{head} error: {event.get('message')}"
    if kind == "permission_request":
        return f"{head} {request_text(event)} (id {event.get('request_id')})"
    if kind == "permission_resolved":
        verdict = "allowed" if event.get("allow") else "denied"
        if event.get("answers"):
            verdict = "answered " + json.dumps(event["answers"], ensure_ascii=False)
        elif event.get("always"):
            verdict = "always allowed " + ", ".join(event["always"])
        by = {"timeout": " (no answer in time)", "claude": f" ({event.get('message')})"}.get(event.get("by") or "", "")
        return f"{head} request {verdict}{by} ({event.get('request_id')})"
    if kind == "reminder":
        return (f"{head} reminder: Claude has waited {duration(round(event.get('waited') or 0))} for your answer to"
                f" {what_is_asked(event)} (id {event.get('request_id')}; denied in"
                f" {duration(round(event.get('denied_in') or 0))} unless answered)")
    if kind == "stalled":
        return (f"{head} stalled: no output for {duration(round(event.get('silent_for') or 0))} and almost no CPU"
                f" ({event.get('cpu_percent')}%) while {doing_text(event)}; claudectl interrupt"
                f" {event.get('session')} stops it")
    if kind == "settings":
        fields = ", ".join(f"{k.replace('_', ' ')} {v if isinstance(v, str) else json.dumps(v)}"
                           for k, v in event.items() if k not in ("id", "session", "seq", "ts", "kind"))
        return f"{head} settings: {fields}"
    return f"{head} {kind}"


def request_text(event: dict[str, Any]) -> str:
    """A permission request, question or plan, and how to answer it from a shell."""
    tool = event.get("tool_name")
    raw = event.get("input")
    tool_input: dict[str, Any] = raw if isinstance(raw, dict) else {}
    rid, name = event.get("request_id"), event.get("session")
    if tool == "AskUserQuestion":
        lines = ["Claude asks:"]
        for q in tool_input.get("questions") or []:
            options = " / ".join(str(o.get("label")) for o in q.get("options") or [] if isinstance(o, dict))
            many = " (pick any)" if q.get("multiSelect") else ""
            lines.append(f"  {q.get('question')}{many}: {options}")
        lines.append(f"  answer: claudectl answer {name} {rid} LABEL...")
        return "\n".join(lines)
    if tool == "ExitPlanMode":
        plan = tool_input.get("plan") or (event.get("tool_use_input") or {}).get("plan") or "(no plan text)"
        return (f"Claude's plan:\n{plan}\n  approve: claudectl permit {name} {rid} --allow [--mode accept-edits]"
                f"\n  keep planning: claudectl permit {name} {rid} --deny")
    return (f"Claude asks to use {tool}: {json.dumps(tool_input, ensure_ascii=False)[:200]}\n"
            f"  answer: claudectl permit {name} {rid} --allow|--deny [--always]")


def what_is_asked(fields: dict[str, Any]) -> str:
    """A prompt in a few words: "Bash (rm -rf build)", "a question (Pick a colour)"."""
    tool, detail = fields.get("tool_name"), fields.get("detail")
    what = {"AskUserQuestion": "a question", "ExitPlanMode": "a plan"}.get(str(tool), str(tool))
    return f"{what} ({detail})" if detail else what


def doing_text(fields: dict[str, Any]) -> str:
    """What a turn was doing (of a `stalled` event or a stalled activity)."""
    was = fields.get("was") or fields.get("doing")
    if was == "tool":
        detail = f" ({fields['detail']})" if fields.get("detail") else ""
        return f"running {fields.get('tool')}{detail}"
    return "writing"


def activity_text(activity: dict[str, Any] | None) -> str:
    """What the running turn does now and since when, in one line."""
    if not activity:
        return "no turn running"
    doing, seconds = activity.get("doing"), round(activity.get("seconds") or 0)
    since = f"since {time.strftime('%H:%M:%S', time.localtime(activity['since']))} ({duration(seconds)})" \
        if activity.get("since") else f"for {duration(seconds)}"
    cpu = f", CPU {activity['cpu_percent']:.0f}%" if isinstance(activity.get("cpu_percent"), (int, float)) else ""
    if doing == "waiting":
        more = f" and {activity['waiting'] - 1} more" if (activity.get("waiting") or 1) > 1 else ""
        return f"⏳ waiting for you {since}: {what_is_asked(activity)}{more} (id {activity.get('request_id')})"
    if doing == "stalled":
        return (f"STALLED {since}: no output and almost no CPU{cpu} while {doing_text(activity)};"
                f" interrupt it, or wait")
    if doing == "tool":
        detail = f" ({activity['detail']})" if activity.get("detail") else ""
        return f"running {activity.get('tool')}{detail} {since}{cpu}"
    return f"writing {since}{cpu}"


def activity_brief(activity: dict[str, Any] | None) -> str:
    """The same in a word or two, for a table: "waiting for you", "Bash 3 min"."""
    if not activity:
        return ""
    doing, seconds = activity.get("doing"), duration(round(activity.get("seconds") or 0))
    if doing == "waiting":
        return "waiting for you"
    if doing == "stalled":
        return f"stalled {seconds}"
    if doing == "tool":
        return f"{activity.get('tool')} {seconds}"
    return f"writing {seconds}"


def session_dot(session: dict[str, Any]) -> str:
    """⏳ Claude waits for your answer, 🟢 live (working or ready), 📟 open in a terminal,
    ⚪ not running."""
    if (session.get("activity") or {}).get("doing") == "waiting":
        return "⏳"
    return state_mark(session)


def duration(seconds: float) -> str:
    """"20 s", "5 min", "1.5 h": a length of time as a person reads it."""
    if seconds < 90:
        return f"{seconds:g} s"
    if seconds < 5400:
        return f"{seconds / 60:.4g} min"
    return f"{seconds / 3600:.3g} h"


def when(ts: float | None) -> str:
    """A time as "5m ago (2026-12-01 23:40:00)", or "never"."""
    if not ts:
        return "never"
    return f"{relative_time(ts)} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))})"


def shown_state(session: dict[str, Any]) -> str:
    """A session Claude never saw reads "new", not "suspended"; one open in a terminal says
    since when and which ("attached 5m ago, /dev/pts/3 pid 4242")."""
    if session.get("state") == SessionState.SUSPENDED.value and session.get("started") is False:
        return "new"
    terminal = session.get("terminal")
    if terminal:
        where = f"{terminal.get('tty') or 'no tty'} pid {terminal.get('pid')}"
        if not terminal.get("attached"):
            return f"{session.get('state')}, attaching ({where})"
        return f"attached {relative_time(terminal.get('since') or 0)}, {where}"
    return str(session.get("state"))


def state_mark(session: dict[str, Any]) -> str:
    """🟢 a Claude of ours runs, 📟 open in a terminal, ⚪ neither."""
    if session.get("state") == SessionState.ATTACHED.value:
        return "📟"
    return "🟢" if session.get("live") else "⚪"


def session_text(info: dict[str, Any]) -> str:
    pending = info.get("pending") or []
    lines = [
        f"session:      {info['name']}",
        f"state:        {shown_state(info)}" + (f" (keeper pid {info['keeper_pid']}, Claude pid {info['claude_pid']})"
                                                if info.get("keeper_pid") else ""),
        f"model:        {info.get('model') or 'default'}",
        f"mode:         {info.get('mode') or 'ask'}",
        f"persona:      {info.get('persona') or 'default'}",
        f"cwd:          {info['cwd']}",
        f"idle timeout: {duration(info['idle_timeout'])}",
        f"last active:  {when(info.get('last_active'))}",
        f"created:      {when(info.get('created'))}",
        f"cost so far:  ${info.get('cost_usd') or 0:.4f}",
        *([f"now:          {activity_text(info['activity'])}"] if info.get("activity") else []),
        queue_line(info),
        f"waiting for you: {len(pending)} request(s)" + "".join(
            f"\n  {p['tool_name']} (id {p['request_id']})" for p in pending),
        f"session id:   {info['session_id']}",
    ]
    if info.get("allowed_tools"):
        lines.insert(4, f"always allowed: {', '.join(info['allowed_tools'])}")
    return "\n".join(lines)


def queue_line(info: dict[str, Any]) -> str:
    """The messages Claude has not started on, against the queue's limit (when it is full,
    `send` is refused)."""
    queued, limit = info.get("queued", 0), info.get("queue_limit")
    if not limit:  # (an older supervisor)
        return f"queued:       {queued}"
    full = " (full: send is refused)" if queued >= limit["messages"] else ""
    return (f"queued:       {queued} of {limit['messages']} messages, {mib(info.get('queued_bytes') or 0)} of"
            f" {mib(limit['bytes'])}{full}")


#: a queue this full (of its count or its bytes) is shown as near its limit
NEAR_LIMIT = 0.8


def queues_near_limit(info: dict[str, Any]) -> str | None:
    """The sessions whose queue is near its limit (past it, `send` is refused), or None."""
    limit = info.get("queue_limit")
    if not limit:
        return None
    near = [f"{q['session']} {q['messages']} of {limit['messages']} messages, {mib(q['bytes'])} of"
            f" {mib(limit['bytes'])}" for q in info.get("queues") or []
            if q["messages"] >= NEAR_LIMIT * limit["messages"] or q["bytes"] >= NEAR_LIMIT * limit["bytes"]]
    return "queues near their limit: " + "; ".join(near) if near else None


def mib(size: int | None) -> str:
    return "?" if size is None else f"{size / 1048576:.0f} MiB"


#: a bounded thing this full is shown as near its limit
NEAR_LIMIT = 0.8


def limits_text(limits: dict[str, dict[str, Any]]) -> str:
    """One line: each bounded thing's use (``used/limit``, marked when near it), and the
    counts of what a bound already cost (shown when not 0)."""
    parts = []
    for name, use in limits.items():
        used, limit = use.get("used") or 0, use.get("limit")
        label = name.replace("_", " ")
        if limit:
            near = used >= NEAR_LIMIT * limit
            parts.append(f"{'⚠ ' if near else ''}{label} {used}/{limit}{' (near the limit)' if near else ''}")
        elif used:
            parts.append(f"{label} {used}")
    return "limits: " + (", ".join(parts) or "(none reported)")


def supervisor_text(info: dict[str, Any]) -> str:
    """The operator's view: what runs, what it costs, who waits, who is connected."""
    states = ", ".join(f"{n} {state}" for state, n in sorted((info.get("by_state") or {}).items()))
    lines = [
        f"supervisor pid {info['pid']} (instance {info['instance']}, v{info['version']}), "
        f"up {duration(round(info.get('uptime') or 0))}, {mib(info.get('memory'))}",
        f"sessions: {info['sessions']} ({info['live']} live)" + (f": {states}" if states else ""),
    ]
    processes = info.get("claude_processes") or []
    lines.append(f"Claude processes: {sum(1 for p in processes if p.get('claude_pid'))}")
    for p in processes:
        claude = f"Claude pid {p['claude_pid']} ({mib(p.get('claude_memory'))})" if p.get("claude_pid") else "no Claude"
        lines.append(f"  {p['session']}: keeper pid {p['keeper_pid']} ({mib(p.get('keeper_memory'))}), {claude}")
    lines.append(f"cost today: ${info.get('cost_today') or 0:.4f}")
    pending = info.get("pending_permissions") or []
    lines.append(f"waiting for an answer: {len(pending)}" + (
        " (" + ", ".join(f"{p['session']}: {p['tool_name']}" for p in pending) + ")" if pending else ""))
    turns = info.get("turns")
    if turns is not None:  # (what each running turn does: the watcher's)
        lines.append(f"running turns: {len(turns)}" + (
            " (" + ", ".join(f"{t['session']}: {activity_brief(t)}" for t in turns) + ")" if turns else ""))
    clients = info.get("clients") or []
    described = [(", ".join(c["consumers"]) or "anonymous") + f" ({c['subscriptions']} subscriptions,"
                 f" {c['unacked']} unacked)" for c in clients]
    lines.append(f"subscribed clients: {len(clients)}" + (": " + "; ".join(described) if described else ""))
    near = queues_near_limit(info)
    if near:
        lines.append(near)
    if info.get("limits") is not None:
        lines.append(limits_text(info["limits"]))
    if info.get("store_problem"):
        lines.append(f"STORE PROBLEM: {info['store_problem']}")
    lines += [f"runtime dir: {info['runtime_dir']}", f"state dir: {info['state_dir']}",
              f"default idle timeout: {duration(info['default_idle_timeout'])}"]
    return "\n".join(lines)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    if args.name:
        info = client.request("status", session=args.name)
        human = session_text(info)
    else:
        info = client.request("status")
        human = supervisor_text(info)
    _print(args, info, human)
    return 0


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    sessions = client.request("list", all=args.all)["sessions"]
    table = sessions_table(sessions)
    _print(args, sessions, table if sessions else "No sessions.")
    return 0


def sessions_table(sessions: list[dict[str, Any]], host_column: bool = False) -> str:
    rows = [("", *(("HOST",) if host_column else ()), "NAME", "STATE", "MODE", "PERSONA", "MODEL", "LAST ACTIVE",
             "COST")]
    rows += [(session_dot(s), *((s["host"],) if host_column else ()), s["name"],
              shown_state(s) + (f" ({activity_brief(s['activity'])})" if s.get("activity") else ""),
              s.get("mode") or "ask", s["persona"] or "default", s.get("model") or "default",
              relative_time(s["last_active"]), f"${s.get('cost_usd') or 0:.4f}") for s in sessions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def ls_all_hosts(args: argparse.Namespace, hosts: dict[str, Host]) -> int:
    """``ls --all-hosts``: every host's sessions, asked at once (a host that is down costs
    its own line, not the others' time); an unreachable host is one line saying why."""
    from concurrent.futures import ThreadPoolExecutor

    def sessions_of(host: Host) -> list[dict[str, Any]]:
        with Client(args.runtime_dir, host=host, timeout=min(CONNECT_TIMEOUT, args.timeout)) as client:
            return list(client.request("list", all=args.all)["sessions"])

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
    _print(args, {"sessions": sessions, "unreachable": down}, "\n".join(lines))
    return 0


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


class UsageError(Exception):
    """A command that cannot be carried out as given (exit 2)."""


def cmd_new(client: Client, args: argparse.Namespace) -> int:
    fields = {k: getattr(args, k) for k in ("model", "cwd", "persona", "mode", "conversation", "force")
              if getattr(args, k, None)}
    if "conversation" in fields and "cwd" not in fields:  # a conversation of the directory we are in
        if not args.on_host.is_local:
            raise UsageError(f"--conversation on host {args.on_host.name}: give --cwd (a directory there)")
        fields["cwd"] = os.getcwd()
    if "cwd" in fields:
        fields["cwd"] = local_path(args, fields["cwd"], "--cwd")
    info = client.request("create", session=args.name, **fields)
    continues = f", continuing conversation {info['session_id']}" if "conversation" in fields else ""
    _print(args, info, f"created session '{info['name']}' in {info['cwd']}{continues}")
    return 0


def cmd_cd(client: Client, args: argparse.Namespace) -> int:
    """Move a session to another directory (``set_cwd``): Claude starts a fresh conversation
    there, as it keeps one per directory."""
    cwd = local_path(args, args.dir, "DIR")
    info = client.request("set_cwd", session=args.name, cwd=cwd)
    _print(args, info, f"session '{args.name}' moved to {info['cwd']}; its next message starts a fresh conversation")
    return 0


def _send_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"session": args.name, "text": args.text}
    if args.attach and not args.on_host.is_local:
        raise UsageError(f"--attach: the supervisor on {args.on_host.name} reads attachments from its own disk;"
                         " attaching a file of this machine to a remote session is not supported yet")
    if args.attach:
        # the file a link points to: the supervisor takes no link (it could be swapped)
        fields["attachments"] = [os.path.realpath(os.path.expanduser(p)) for p in args.attach]
    if args.queue:
        fields["queue"] = True
    return fields


def print_live(shown: str, event: dict[str, Any]) -> str:
    """Print the new part of an answer being written; return what is shown now.

    Only what continues what is shown is printed. The text so far comes again after a
    reconnect (skipped); a supervisor that restarted mid-answer holds only what was
    written since, so its pieces do not line up with what is shown — nothing more is
    printed live then, and the stored answer completes it (``_send_and_wait``)."""
    offset, text = int(event.get("offset") or 0), str(event.get("text") or "")
    if offset > len(shown):  # a gap: what came between was lost
        return shown
    so_far = shown[:offset] + text
    if not so_far.startswith(shown):  # the text so far again, or pieces of another base
        return shown
    print(so_far[len(shown):], end="", flush=True)
    return so_far


async def _send_and_wait(client_dir: Any, args: argparse.Namespace, timeout: float) -> int:
    from protocol import AsyncClient  # (asyncio only for the commands that wait)

    async with AsyncClient(client_dir, host=args.on_host) as client:
        status = await client.request("status", session=args.name)
        stream = bool(getattr(args, "stream", False)) and not args.json
        sub = await client.subscribe(args.name, after=status["last_seq"], live=stream)
        sent = await client.request("send", **_send_fields(args))
        message_id = sent["message_id"]
        if sent.get("terminal") and not args.json:
            print(terminal_note(args.name, sent["terminal"]), file=sys.stderr)
        # the turn that answers it: its own, or the running one it joined (steered, taken)
        turn = message_id
        deadline = time.monotonic() + timeout
        streamed = ""  # what of the answer has been printed as it was written
        while True:
            event = await sub.next(timeout=max(0.1, deadline - time.monotonic()))
            if event is None:
                print(f"claudectl: no answer within {timeout:g}s (--timeout); the message stays queued and"
                      " will be answered (claudectl tail shows it)", file=sys.stderr)
                return EXIT_TIMED_OUT
            if "id" not in event:  # live text of the answer
                if event.get("message_id") == turn:
                    streamed = print_live(streamed, event)
                continue
            if event.get("kind") == "taken" and event.get("message_id") == message_id \
                    and isinstance(event.get("turn"), int):
                turn = event["turn"]
                if not args.json:
                    print(f"claudectl: Claude took the message into the running turn (message {turn})",
                          file=sys.stderr, flush=True)
            await sub.ack(event["id"])  # releases the window; a long turn never stalls
            if args.json:
                print(json.dumps(event), flush=True)
            elif event.get("kind") == "state" and event.get("state") == SessionState.RESUMING.value:
                print(f"Resuming session{idle_note(event.get('idle_for'))}...", file=sys.stderr)
            if event.get("message_id") != turn and event.get("kind") != "message_failed":
                continue
            if event.get("kind") == "message_failed" and event.get("message_id") not in (message_id, turn):
                continue
            if event.get("kind") == "permission_request" and not args.json:
                print(request_text(event), file=sys.stderr, flush=True)
            if event.get("kind") in ("reminder", "stalled") and not args.json:  # (the watcher's: once each)
                print(f"claudectl: {render_event(event)}", file=sys.stderr, flush=True)
            if event.get("kind") == "assistant_text" and streamed:
                print(event["text"][len(streamed):] if event["text"].startswith(streamed) else
                      "\n" + event["text"], end="", flush=True)
                streamed = event["text"]
            if event.get("kind") == "result":
                if not args.json:
                    final = event.get("text", "")
                    print(final[len(streamed):] if streamed and final.startswith(streamed) else
                          ("\n" if streamed else "") + final)
                    streamed = ""
                ending = turn_ending(event)
                if ending is not None:
                    if not args.json:
                        print(f"claudectl: {ending}", file=sys.stderr)
                    return 1
                return 0
            if event.get("kind") == "message_failed":
                what = "message" if event.get("message_id") == message_id else "the turn it joined was"
                print(f"claudectl: {what} not delivered: {event.get('reason')}", file=sys.stderr)
                return 1


def turn_ending(result: dict[str, Any]) -> str | None:
    """What went wrong with a turn, as a sentence; None if it simply ended."""
    if result.get("interrupted"):
        return "interrupted"
    denied = result.get("permission_denials") or []
    if result.get("is_error"):
        if result.get("terminal_reason") == "api_error" or result.get("api_error_status"):
            status = result.get("api_error_status")
            return f"Claude's API call failed{f' (HTTP {status})' if status else ''}: {result.get('text') or ''}".strip()
        detail = "; ".join(result.get("errors") or []) or result.get("text") or result.get("subtype")
        return f"the turn failed: {detail}"
    if denied:
        tools = ", ".join(str(d.get("tool_name")) for d in denied if isinstance(d, dict))
        return f"Claude was not allowed to use: {tools} (see claudectl mode, and Claude's settings.json rules)"
    return None


def cmd_send(client: Client, args: argparse.Namespace) -> int:
    if args.text == "-":  # the message from stdin, as Unix tools take a file
        args.text = sys.stdin.read()
    if args.wait:
        client.close()
        import asyncio

        return asyncio.run(_send_and_wait(args.runtime_dir, args, args.timeout))
    result = client.request("send", **_send_fields(args))
    note = f"\n{terminal_note(args.name, result['terminal'])}" if result.get("terminal") else ""
    _print(args, result, (f"message {result['message_id']} added to the running turn" if result.get("steering")
                          else f"queued message {result['message_id']}") + note)
    return 0


def terminal_note(name: str, terminal: dict[str, Any]) -> str:
    """What a sender is told of a session open in a terminal (its message waits)."""
    return (f"'{name}' is open in a terminal ({terminal.get('tty') or 'no tty'}, pid {terminal.get('pid')}): the"
            " message waits and is answered when that Claude exits")


TAIL_STALL = 30.0


async def _tail(args: argparse.Namespace, last_seq: int) -> int:
    """Print the session's events; without ``--follow``, up to ``last_seq`` (the last one
    when the command started) and no further."""
    after = args.from_seq if args.from_seq is not None else 0
    if not args.follow and after >= last_seq:
        return 0
    from protocol import AsyncClient

    async with AsyncClient(args.runtime_dir, host=args.on_host) as client:
        stream = bool(getattr(args, "stream", False)) and args.follow and not args.json
        sub = await client.subscribe(args.name, after=after, live=stream)
        shown: dict[Any, str] = {}
        while True:
            event = await sub.next(timeout=None if args.follow else TAIL_STALL)
            if event is None:
                print(f"claudectl: the events stopped before sequence number {last_seq}", file=sys.stderr)
                return 1
            if "id" not in event:  # live text
                key = event.get("message_id")
                if key not in shown:
                    print(f"[{args.name}] ", end="")
                shown[key] = print_live(shown.get(key, ""), event)
                continue
            if event["kind"] == "assistant_text" and event.get("message_id") in shown:
                print()  # it was shown as it was written
                del shown[event.get("message_id")]
                await sub.ack(event["id"])
                continue
            await sub.ack(event["id"])
            print(json.dumps(event) if args.json else render_event(event), flush=True)
            if not args.follow and event["seq"] >= last_seq:
                return 0


def cmd_tail(client: Client, args: argparse.Namespace) -> int:
    last_seq = int(client.request("status", session=args.name)["last_seq"])  # also: a clear error
    client.close()
    if args.lines is not None:
        args.from_seq = max(0, last_seq - args.lines)
    try:
        import asyncio

        return asyncio.run(_tail(args, last_seq))
    except KeyboardInterrupt:  # (how tail --follow is ended: quietly, with the status Ctrl-C gives)
        return EXIT_INTERRUPTED


def cmd_simple(op: str, done: str) -> Any:
    def run(client: Client, args: argparse.Namespace) -> int:
        result = client.request(op, session=args.name)
        _print(args, result, done.format(name=args.name, **result))
        return 0

    return run


def cmd_interrupt(client: Client, args: argparse.Namespace) -> int:
    """Exit 0 only if Claude confirmed the interrupt; otherwise say why not, exit 1."""
    result = client.request("interrupt", session=args.name)
    if result.get("confirmed") is False:
        return fail(args, f"interrupt of '{args.name}' not confirmed: {result.get('detail')}", "not_confirmed")
    _print(args, result, f"interrupted '{args.name}': {result.get('detail') or 'sent'}")
    return 0


def cmd_timeout(client: Client, args: argparse.Namespace) -> int:
    if args.minutes is None:
        info = client.request("status", session=args.name)
        minutes = info["idle_timeout"] / 60
        _print(args, {"idle_timeout": info["idle_timeout"]}, f"Idle timeout: {minutes:g} minutes")
        return 0
    result = client.request("set_timeout", session=args.name, minutes=args.minutes)
    _print(args, result, f"Idle timeout set to {args.minutes} minutes for session '{args.name}'.")
    return 0


def _show_or_set(client: Client, args: argparse.Namespace, field: str, op: str, label: str) -> dict[str, Any] | None:
    """A setting of a session: shown when no value is given (None returned), else set
    (the op's result returned for the caller to report)."""
    value = getattr(args, field)
    if value is None:
        info = client.request("status", session=args.name)
        _print(args, {field: info[field]}, f"{label}: {info[field] or 'default'}")
        return None
    return client.request(op, session=args.name, **{field: value})


def cmd_model(client: Client, args: argparse.Namespace) -> int:
    result = _show_or_set(client, args, "model", "set_model", "Model")
    if result is not None:
        _print(args, result, f"Model set to {args.model} for session '{args.name}'.")
    return 0


def cmd_permit(client: Client, args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"session": args.name, "request_id": args.request_id, "allow": args.allow}
    if args.message:
        fields["message"] = args.message
    if args.always:
        fields["always"] = True
    if args.mode:
        fields["mode"] = args.mode
    result = client.request("permit", **fields)
    done = "allowed" if args.allow else "denied"
    if result.get("always"):
        done = f"always allowed ({', '.join(result['always'])})"
    if result.get("mode"):
        done += f"; mode {result['mode']}"
    _print(args, result, f"{done}: {args.request_id}")
    return 0


def cmd_answer(client: Client, args: argparse.Namespace) -> int:
    info = client.request("status", session=args.name)
    pending = {p["request_id"]: p for p in info.get("pending") or []}
    questions = (pending.get(args.request_id) or {}).get("questions") or []
    labels: list[str] = args.labels
    if len(questions) > 1:
        if len(labels) != len(questions):
            print(f"claudectl: request {args.request_id} has {len(questions)} questions: give one LABEL each"
                  " (several options of a multi-select one as A,B)", file=sys.stderr)
            return 2
        answers = [[part.strip() for part in label.split(",")] if q.get("multiSelect") else [label]
                   for q, label in zip(questions, labels, strict=True)]
    else:  # one question (or the supervisor says what is wrong)
        answers = [labels]
    result = client.request("answer", session=args.name, request_id=args.request_id, answers=answers)
    shown = "; ".join(f"{q} = {a}" for q, a in result["answers"].items())
    _print(args, result, f"answered: {shown}")
    return 0


def cmd_mode(client: Client, args: argparse.Namespace) -> int:
    result = _show_or_set(client, args, "mode", "set_mode", "Permission mode")
    if result is not None:
        text = f"Permission mode of '{args.name}': {result['mode']}"
        _print(args, result, text + ("" if result["changed"] else " (unchanged)"))
    return 0


def cmd_consumers(client: Client, args: argparse.Namespace) -> int:
    """The named consumers' cursors (e.g. the bot's), or remove one (``--remove``)."""
    if args.remove:
        result = client.request("remove_consumer", consumer=args.remove)
        _print(args, result, f"removed consumer {args.remove}: it holds no events back")
        return 0
    result = client.request("consumers")
    rows = [f"{c['consumer']}  at event {c['position']}  moved {when(c['moved'])}"
            + ("  (stale: holds no events back)" if c["stale"] else "") for c in result["consumers"]]
    _print(args, result, "\n".join(rows) or "no named consumers")
    return 0


# --- the daily driver (issue #27): rules, budgets, schedules, diff, fork -------------------


def cmd_rules(client: Client, args: argparse.Namespace) -> int:
    """A session's always-allow rules, numbered; ``--remove N`` forgets rule N."""
    if args.remove is not None:
        result = client.request("remove_rule", session=args.name, index=args.remove)
        _print(args, result, f"removed {result['removed']} from '{args.name}'"
               f" ({len(result['rules'])} rule(s) left; a running Claude restarts with them after its turn)")
        return 0
    result = client.request("rules", session=args.name)
    rows = [f"{i}. {rule}" for i, rule in enumerate(result["rules"], 1)]
    _print(args, result, "\n".join(rows) or f"'{args.name}' has no always-allow rules")
    return 0


def budget_lines(report: dict[str, Any]) -> list[str]:
    """Spend today and this month, per session and in total, against the daily caps."""
    def share(spent: float, cap: float | None) -> str:
        return f" of {money(cap)} ({spent / cap:.0%})" if cap else ""

    lines = [f"{r['session']}: today {money(r['today'])}{share(r['today'], r['cap'])}, this month"
             f" {money(r['month'])}{'' if r['cap'] else ' (no daily cap)'}" for r in report["sessions"]]
    lines.append(f"all sessions: today {money(report['today'])}{share(report['today'], report['cap'])}, this month"
                 f" {money(report['month'])}{'' if report['cap'] else ' (no daily cap)'}")
    return lines


def cmd_budget(client: Client, args: argparse.Namespace) -> int:
    """What Claude cost today and this month, per session and in total, with the daily
    caps; ``--cap USD`` (or ``none``) sets one: the session's with ``--session``, else the
    daily cap for all sessions."""
    if args.cap is not None:
        fields: dict[str, Any] = {"usd": None if args.cap == "none" else args.cap}
        if args.session:
            fields["session"] = args.session
        client.request("set_budget", **fields)
        whose = f"session '{args.session}'" if args.session else "all sessions"
        print_done = f"daily cap of {whose}: {money(fields['usd'])}"
        result = client.request("budget", **({"session": args.session} if args.session else {}))
        _print(args, result, print_done + "\n" + "\n".join(budget_lines(result)))
        return 0
    result = client.request("budget", **({"session": args.session} if args.session else {}))
    _print(args, result, "\n".join(budget_lines(result)))
    return 0


def cap_arg(text: str) -> float | str:
    """``--cap``: US dollars (``5``, ``$0.50``), or ``none``."""
    if text.lower() == "none":
        return "none"
    try:
        return float(text.removeprefix("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of US dollars or 'none', not {text!r}") from None


def cmd_diff(client: Client, args: argparse.Namespace) -> int:
    """The session's git working-tree changes: staged, then not staged (the whole diffs),
    then untracked files."""
    result = client.request("diff", session=args.name, **({"path": args.path} if args.path else {}))
    if not result["repo"]:
        _print(args, result, f"{result['cwd']} is not in a git repository: no changes to show")
        return 0
    out = []
    for title, side in (("staged", result["staged"]), ("not staged", result["unstaged"])):
        if side["files"]:
            out.append(f"# {title}: " + ", ".join(f"{f['path']} +{f['added']} -{f['removed']}" for f in side["files"]))
            out.append(side["diff"].rstrip("\n") + ("\n# (cut)" if side["truncated"] else ""))
    if result["untracked"]:
        out.append("# untracked: " + ", ".join(result["untracked"]))
    _print(args, result, "\n".join(out) or "no changes: the working tree matches the last commit")
    return 0


def schedule_line(s: dict[str, Any]) -> str:
    state = "paused" if s["paused"] else f"next {time.strftime('%Y-%m-%d %H:%M', time.localtime(s['next_run']))}"
    return f"{s['id']}. {s['session']}: {s['cron']}{' (' + s['tz'] + ')' if s['tz'] else ''} {s['prompt']!r}  {state}"


def cmd_schedule(client: Client, args: argparse.Namespace) -> int:
    """Schedules (kept and run by the supervisor): add, ls, pause, resume, rm."""
    if args.action == "add":
        fields: dict[str, Any] = {"session": args.name, "when": args.when, "prompt": args.prompt}
        if args.tz:
            fields["tz"] = args.tz
        made = client.request("schedule_add", **fields)
        _print(args, made, f"added: {schedule_line(made)}")
    elif args.action == "ls":
        result = client.request("schedules", **({"session": args.name} if args.name else {}))
        _print(args, result, "\n".join(schedule_line(s) for s in result["schedules"]) or "no schedules")
    elif args.action == "rm":
        removed = client.request("schedule_remove", schedule=args.id)
        _print(args, removed, f"removed: {schedule_line(removed)}")
    else:
        changed = client.request("schedule_set", schedule=args.id, paused=args.action == "pause")
        _print(args, changed, schedule_line(changed))
    return 0


def cmd_fork(client: Client, args: argparse.Namespace) -> int:
    """A new session that continues a copy of this one's conversation."""
    made = client.request("fork", session=args.name, name=args.new)
    copied = "continues a copy of its conversation" if made["copied"] else "starts afresh (it had no conversation)"
    _print(args, made, f"session '{args.new}' forked from '{args.name}': {copied}; the original is untouched")
    return 0


def add_daily_parsers(sub: Any) -> None:
    s = sub.add_parser("rules", help="a session's always-allow rules; --remove N forgets rule N")
    s.add_argument("name")
    s.add_argument("--remove", type=int, metavar="N", help="forget rule N (as numbered by the list)")
    s.set_defaults(func=cmd_rules)
    s = sub.add_parser("budget", help="spend today and this month per session and in total; --cap sets a daily cap")
    s.add_argument("--session", metavar="NAME", help="one session (with --cap: its own daily cap)")
    s.add_argument("--cap", metavar="USD", type=cap_arg, help="set the daily cap in US dollars ('none' removes it)")
    s.set_defaults(func=cmd_budget)
    s = sub.add_parser("diff", help="a session's git working-tree changes (staged and not staged)")
    s.add_argument("name")
    s.add_argument("path", nargs="?", help="only changes under this path (relative to the session's directory)")
    s.set_defaults(func=cmd_diff)
    s = sub.add_parser("fork", help="a new session that continues a copy of a session's conversation")
    s.add_argument("name")
    s.add_argument("new", help="the new session's name")
    s.set_defaults(func=cmd_fork)
    s = sub.add_parser("schedule", help="prompts sent to a session at set times (kept and run by the supervisor)")
    actions = s.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="add one: WHEN is a cron expression or e.g. 'weekdays 9:00', 'every 15m'")
    a.add_argument("name")
    a.add_argument("when")
    a.add_argument("prompt")
    a.add_argument("--tz", help="an IANA time zone (default: the supervisor's timezone, else the machine's)")
    a = actions.add_parser("ls", help="list them (of one session)")
    a.add_argument("name", nargs="?")
    for action, text in (("pause", "pause one"), ("resume", "resume one (from now on)"), ("rm", "remove one")):
        a = actions.add_parser(action, help=text)
        a.add_argument("id", type=int)
    s.set_defaults(func=cmd_schedule)


def cmd_backup(client: Client, args: argparse.Namespace) -> int:
    """A consistent copy of the supervisor's store (SQLite's online backup, made by the
    supervisor while it runs), at FILE."""
    target = local_path(args, args.file, "backup FILE")  # (with --host: a file on that machine)
    result = client.request("backup", path=target, force=args.force)
    _print(args, result, f"backed up the store to {result['path']} ({result['bytes'] / 2**20:.1f} MiB,"
                         f" {result['sessions']} sessions)")
    return 0


def cmd_restart(client: Client, args: argparse.Namespace) -> int:
    result = client.request("restart")
    _print(args, result, f"supervisor (pid {result['pid']}) is restarting; sessions keep running")
    return 0


def cmd_shutdown(client: Client, args: argparse.Namespace) -> int:
    client.request("shutdown")
    _print(args, {}, "supervisor is shutting down")
    return 0


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
    for name, op, done, help_text in (
        ("drop-queued", "drop_queued", "dropped what was queued for '{name}' (each reported not delivered)",
         "drop the messages Claude has not started on"),
        ("suspend", "suspend", "session '{name}': {state}", "suspend a session now"),
        ("archive", "archive", "session '{name}' archived: Claude stopped, hidden from ls (unarchive brings it"
         " back)", "stop and hide a session"),
        ("unarchive", "unarchive", "session '{name}': {state} (back in ls)", "bring an archived session back"),
        ("new-conversation", "new_conversation", "session '{name}': a fresh conversation starts with the next"
         " message", "start a fresh conversation in a session (e.g. after a failed resume)"),
    ):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("name")
        s.set_defaults(func=cmd_simple(op, done))
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


def fail(args: argparse.Namespace, message: str, code: str) -> int:
    """One error: a line on stderr, or with --json a JSON document there; exit 1."""
    if args.json:
        print(json.dumps({"error": {"code": code, "message": message}}), file=sys.stderr)
    else:
        print(f"claudectl: {message}" + (f" ({code})" if code not in ("connection", "protocol") else ""),
              file=sys.stderr)
    return 1


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
    try:
        client = Client(args.runtime_dir, timeout=min(CONNECT_TIMEOUT, args.timeout), host=args.on_host)
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
            client.close()
        except Exception:
            pass


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


def _reader_gone() -> int:
    """Whoever read our output stopped (``| head``): stop quietly. What is still buffered
    goes to /dev/null, or Python would report the broken pipe again when it exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_READER_GONE

