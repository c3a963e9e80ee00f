"""claudectl's text for the things the supervisor reports: a session (``status NAME``),
the supervisor (``status``), the sessions table (``ls``), what a running turn does, a
prompt Claude waits on, lengths of time and sizes; text measured in a terminal's columns
(a wide character, CJK or emoji, takes two). Pure functions of a reply's fields
(``Mapping``s: a typed reply or a plain dict alike); events are ``_events``'."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from protocol import SessionState, permission_mode_of, relative_time

#: a queue (of its count or its bytes), or another bounded thing, this full is shown as near its limit
NEAR_LIMIT = 0.8


#: what joins two emoji into one picture (👩‍💻), and what asks for a character's emoji form (❤️)
_ZERO_WIDTH_JOINER = "\u200d"
_EMOJI_FORM = "\ufe0f"
#: the skin tones, which colour the emoji before them
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)


def _glyphs(text: str) -> Iterator[tuple[str, int]]:
    """``text`` as a terminal draws it: each character with what it carries (accents, a
    joined emoji, a skin tone, an emoji-form selector), and the columns it takes."""
    glyph, width, joining = "", 0, False
    for ch in text:
        if glyph and (joining or ch == _ZERO_WIDTH_JOINER or ord(ch) in _EMOJI_MODIFIERS
                      or unicodedata.category(ch) in ("Mn", "Me", "Cf")):
            glyph, joining = glyph + ch, ch == _ZERO_WIDTH_JOINER
            if ch == _EMOJI_FORM:
                width = 2
            continue
        if glyph:
            yield glyph, width
        glyph, joining = ch, False
        width = 0 if unicodedata.category(ch) in ("Mn", "Me", "Cf") else (
            2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1)
    if glyph:
        yield glyph, width


def columns(text: str) -> int:
    """How many columns of a terminal ``text`` takes (``len`` counts a wide character once)."""
    return sum(width for _, width in _glyphs(text))


def pad(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` columns (``str.ljust`` by columns)."""
    return text + " " * (width - columns(text))


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: if longer, what fits before a "…" (never half
    a wide character, never a letter without its accent)."""
    if columns(text) <= width:
        return text
    kept, used = [], 0
    for glyph, glyph_width in _glyphs(text):
        if used + glyph_width > width - 1:
            break
        kept.append(glyph)
        used += glyph_width
    return "".join(kept) + "…"


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


def mib(size: int | None) -> str:
    return "?" if size is None else f"{size / 1048576:.0f} MiB"


def what_is_asked(fields: Mapping[str, Any]) -> str:
    """A prompt in a few words: "Bash (rm -rf build)", "a question (Pick a colour)"."""
    tool, detail = fields.get("tool_name"), fields.get("detail")
    what = {"AskUserQuestion": "a question", "ExitPlanMode": "a plan"}.get(str(tool), str(tool))
    return f"{what} ({detail})" if detail else what


def doing_text(fields: Mapping[str, Any]) -> str:
    """What a turn was doing (of a `stalled` event or a stalled activity)."""
    was = fields.get("was") or fields.get("doing")
    if was == "tool":
        detail = f" ({fields['detail']})" if fields.get("detail") else ""
        return f"running {fields.get('tool')}{detail}"
    return "writing"


def request_text(event: Mapping[str, Any]) -> str:
    """A permission request, question or plan, and how to answer it from a shell."""
    tool = event.get("tool_name")
    raw = event.get("input")
    tool_input: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
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


def activity_text(activity: Mapping[str, Any] | None) -> str:
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


def activity_brief(activity: Mapping[str, Any] | None) -> str:
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


def session_dot(session: Mapping[str, Any]) -> str:
    """⏳ Claude waits for your answer, 🟢 live (working or ready), 📟 open in a terminal,
    ⚪ not running."""
    if (session.get("activity") or {}).get("doing") == "waiting":
        return "⏳"
    return state_mark(session)


def shown_state(session: Mapping[str, Any]) -> str:
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


def state_mark(session: Mapping[str, Any]) -> str:
    """🟢 a Claude of ours runs, 📟 open in a terminal, ⚪ neither."""
    if session.get("state") == SessionState.ATTACHED.value:
        return "📟"
    return "🟢" if session.get("live") else "⚪"


def session_text(info: Mapping[str, Any]) -> str:
    pending = info.get("pending") or []
    lines = [
        f"session:      {info['name']}",
        f"state:        {shown_state(info)}" + (f" (keeper pid {info['keeper_pid']}, Claude pid {info['claude_pid']})"
                                                if info.get("keeper_pid") else ""),
        f"model:        {info.get('model') or 'default'}",
        f"mode:         {permission_mode_of(info) or 'ask'}",
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


def queue_line(info: Mapping[str, Any]) -> str:
    """The messages Claude has not started on, against the queue's limit (when it is full,
    `send` is refused)."""
    queued, limit = info.get("queued", 0), info.get("queue_limit")
    if not limit:  # (an older supervisor)
        return f"queued:       {queued}"
    full = " (full: send is refused)" if queued >= limit["messages"] else ""
    return (f"queued:       {queued} of {limit['messages']} messages, {mib(info.get('queued_bytes') or 0)} of"
            f" {mib(limit['bytes'])}{full}")


def queues_near_limit(info: Mapping[str, Any]) -> str | None:
    """The sessions whose queue is near its limit (past it, `send` is refused), or None."""
    limit = info.get("queue_limit")
    if not limit:
        return None
    near = [f"{q['session']} {q['messages']} of {limit['messages']} messages, {mib(q['bytes'])} of"
            f" {mib(limit['bytes'])}" for q in info.get("queues") or []
            if q["messages"] >= NEAR_LIMIT * limit["messages"] or q["bytes"] >= NEAR_LIMIT * limit["bytes"]]
    return "queues near their limit: " + "; ".join(near) if near else None


def limits_text(limits: Mapping[str, Mapping[str, Any]]) -> str:
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


def supervisor_text(info: Mapping[str, Any]) -> str:
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


def sessions_table(sessions: Sequence[Mapping[str, Any]], host_column: bool = False) -> str:
    rows = [("", *(("HOST",) if host_column else ()), "NAME", "STATE", "MODE", "PERSONA", "MODEL", "LAST ACTIVE",
             "COST")]
    rows += [(session_dot(s), *((s["host"],) if host_column else ()), s["name"],
              shown_state(s) + (f" ({activity_brief(s['activity'])})" if s.get("activity") else ""),
              permission_mode_of(s) or "ask", s["persona"] or "default", s.get("model") or "default",
              relative_time(s["last_active"]), f"${s.get('cost_usd') or 0:.4f}") for s in sessions]
    widths = [max(columns(r[i]) for r in rows) for i in range(len(rows[0]))]  # (a terminal's columns)
    return "\n".join("  ".join(pad(cell, w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def terminal_note(name: str, terminal: Mapping[str, Any]) -> str:
    """What a sender is told of a session open in a terminal (its message waits)."""
    return (f"'{name}' is open in a terminal ({terminal.get('tty') or 'no tty'}, pid {terminal.get('pid')}): the"
            " message waits and is answered when that Claude exits")

