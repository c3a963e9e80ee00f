"""The bot's daily-driver commands (issue #27): always-allow rules (``/rules``), budgets
(``/budget``), the session's git changes (``/diff``), schedules (``/every``,
``/schedules``) and ``/fork``. Like ``_commands``: independent of python-telegram-bot,
each takes the supervisor link, the chat and the arguments and returns what to show;
``_app`` registers them and their buttons.

Buttons (callback data, at most 64 bytes):

    rr:<digest>:<session>     remove the always-allow rule whose digest this is
    bud:<token>               allow one more day's cap today to the cap that held a message, send it
    sch:<p|r|x>:<id>          pause, resume or remove schedule <id>
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from protocol import BudgetReport, Diff, DiffSide, RemoteError, Schedule, money

from . import _commands as commands
from . import _hosts as hosts
from . import _render as render
from ._commands import Link, Reply, on_active_session
from ._dirs import within_roots
from ._prompts import scope_text

#: Telegram's limit for a button's callback data, in bytes
CALLBACK_BYTES = 64


@dataclass
class Document:
    """A file to send after the reply (e.g. ``/diff``'s whole diff)."""

    filename: str
    data: bytes
    caption: str = ""


@dataclass
class Answer:
    """What a daily command shows: a reply, then any documents."""

    reply: Reply
    documents: list[Document]


DailyCommand = Callable[[Link, int, list[str]], Awaitable[Reply | Answer]]


def _button(prefix: str, session: str) -> str | None:
    """``prefix:session`` if it fits Telegram's 64 bytes, else None (no button)."""
    data = f"{prefix}:{session}"
    return data if len(data.encode()) <= CALLBACK_BYTES else None


# --- always-allow rules --------------------------------------------------------------------


def rule_digest(rule: str) -> str:
    """A short stable name for a rule on a button (the rule itself may be long)."""
    return hashlib.sha256(rule.encode()).hexdigest()[:10]


def rules_reply(session: str, rules: list[str]) -> Reply:
    if not rules:
        return Reply(f"'{session}' has no always-allow rules: Claude asks before anything its own settings do"
                     " not allow. \"Always allow\" under a request adds one.")
    lines = [f"♾ Always allowed in '{session}' (kept across restarts):"]
    lines += [f"{i}. {scope_text(rule)} — {rule}" for i, rule in enumerate(rules, 1)]
    buttons = []
    for i, rule in enumerate(rules, 1):
        data = _button(f"rr:{rule_digest(rule)}", session)
        if data is not None:
            buttons.append((f"🗑 Remove {i}. {scope_text(rule)}"[:60], data))
    return Reply("\n".join(lines), buttons=buttons)


RULES_ADD_USAGE = ("Usage: /rules add Edit <dir> — edits (Edit, Write) anywhere in that directory (relative to the"
                   " session's); /rules add Bash <command> — e.g. npm test; /rules add WebFetch <domain>")
#: the tools ``/rules add`` names, as the user may type them
_RULE_TOOLS = {t.lower(): t for t in ("Edit", "Write", "MultiEdit", "NotebookEdit", "Bash", "WebFetch")}


@on_active_session
async def rules(link: Link, session: str, args: list[str]) -> Reply:
    """``/rules``: the active session's always-allow rules, a button to remove each;
    ``/rules add <tool> <scope>``: one more."""
    if args and args[0].lower() == "add":
        return await add_rule(link, session, args[1:])
    return rules_reply(session, await link.rules(session))


async def add_rule(link: Link, session: str, args: list[str]) -> Reply:
    """``/rules add <tool> <scope>``: a file tool in a directory (inside the allowed
    roots), a Bash command prefix, WebFetch for a domain."""
    tool = _RULE_TOOLS.get(args[0].lower()) if args else None
    if tool is None or len(args) < 2:
        return Reply(RULES_ADD_USAGE)
    scope = " ".join(args[1:])
    if tool not in ("Bash", "WebFetch") and not hosts.is_remote(session):
        cwd = (await link.status(session))["cwd"]
        where = await within_roots(link, str(Path(cwd) / Path(scope).expanduser()))
        if isinstance(where, str):
            return Reply(f"⚠️ {where}")
        scope = str(where)
    added = await link.add_rule(session, tool, scope)
    listed = rules_reply(session, added["rules"])
    return Reply(f"♾ Always allowed in '{session}' from now on: {scope_text(added['added'])}.\n\n{listed.text}",
                 buttons=listed.buttons)


async def remove_rule(link: Link, data: str) -> Reply:
    """A /rules button (``<digest>:<session>``): forget that rule, show what is left."""
    digest, _, session = data.partition(":")
    await link.check_visible(session)
    known = await link.rules(session)
    rule = next((r for r in known if rule_digest(r) == digest), None)
    if rule is None:
        return Reply("That rule is no longer there (removed already).")
    result = await link.remove_rule(session, rule=rule)
    left = rules_reply(session, result["rules"])
    return Reply(f"🗑 Removed {scope_text(rule)}: Claude asks for it again.\n\n{left.text}", buttons=left.buttons)


# --- budgets ----------------------------------------------------------------------------------

BUDGET_USAGE = ("Usage: /budget — what Claude cost today and this month; /budget <usd> — this session's daily"
                " cap; /budget all <usd> — the daily cap for all sessions; 'off' instead of <usd> removes one")


def _line(name: str, today: float, month: float, cap: float | None, extra: float = 0.0) -> str:
    limit = (cap or 0.0) + extra
    more = f" + {money(extra)} today only" if extra else ""
    share = f" of {money(cap)} a day{more} ({today / limit:.0%}{' ⚠️' if today >= 0.8 * limit else ''})" \
        if cap else ""
    return f"{name}: today {money(today)}{share} · this month {money(month)}"


def budget_text(report: BudgetReport, active: str | None) -> str:
    lines = ["💰 What Claude cost"]
    for row in report["sessions"]:
        mark = "→ " if row["session"] == active else ""
        lines.append(mark + _line(row["session"], row["today"], row["month"], row["cap"], row.get("extra", 0.0)))
    lines.append(_line("All sessions (the whole machine)", report["today"], report["month"], report["cap"],
                       report.get("extra", 0.0)))
    if report["cap"] is None and report.get("default_session_cap") is None and not any(
            r["cap"] for r in report["sessions"]):
        lines.append("\nNo caps set. " + BUDGET_USAGE.split(";", 1)[1].strip())
    return "\n".join(lines)


def _usd_arg(text: str) -> float | str | None:
    """A cap typed by the user: a number (``5``, ``$0.50``), None for off, or the problem."""
    if text.lower() in ("off", "none"):
        return None
    try:
        value = float(text.removeprefix("$"))
    except ValueError:
        return f"'{text}' is not an amount in US dollars."
    return value if value > 0 else "A cap must be more than $0 ('off' removes it)."


async def budget(link: Link, chat: int, args: list[str]) -> Reply:
    """``/budget [all] [<usd>|off]``: spend and caps; or set this session's (or all sessions') daily cap."""
    active = await link.active(chat)
    scope_all = bool(args) and args[0].lower() == "all"
    amount = args[1:] if scope_all else args
    if len(amount) > 1:
        return Reply(BUDGET_USAGE)
    if amount:
        value = _usd_arg(amount[0])
        if isinstance(value, str):
            return Reply(f"{value}\n{BUDGET_USAGE}")
        if not scope_all and active is None:
            return Reply("No active session: /budget all <usd> sets the cap for all sessions.")
        # (the cap's day ends at this user's midnight, if they set a zone)
        await link.set_budget(value, session=None if scope_all else active, tz=await user_zone(link) or None)
        whose = "all sessions together" if scope_all else f"'{active}'"
        said = f"✅ Daily cap of {whose}: {money(value)}." if value is not None else f"✅ No daily cap for {whose}."
        return Reply(said)
    report = await link.budget()
    report["sessions"] = [r for r in report["sessions"] if await link.visible(r["session"])
                          and (r["month"] or r["cap"] or r["session"] == active)]
    return Reply(budget_text(report, active))


#: messages a daily cap held, per chat, until the button under them is pressed:
#: ``[token, session, text, attachments, idempotency key, message id]`` — kept in the
#: supervisor (kv), so a press after a bot restart sends it, and sends it once (the
#: message's own idempotency key)
KV_OVER_BUDGET = "telegram.overbudget.{chat}"
OVER_BUDGET_KEPT = 50


async def hold_over_budget(link: Link, chat: int, session: str | None, text: str, attachments: list[str] | None,
                           key: str, message_id: int | None, why: str) -> Reply:
    """A message a daily cap refused: say why, keep it, offer to raise the cap for today and send it."""
    session = session or await link.active(chat)
    token = secrets.randbelow(2**31)
    await link._keep(KV_OVER_BUDGET.format(chat=chat), [token, session, text, attachments, key, message_id],
                     OVER_BUDGET_KEPT)
    reached = await _reached_cap(link, session)
    label = f"🔼 Allow {money(reached[1])} more today and send it" if reached else "🔼 Send it"
    return Reply(f"💸 Held, not sent: {why.split('; nothing was sent')[0]}.", buttons=[(label, f"bud:{token}")])


async def _reached_cap(link: Link, session: str | None) -> tuple[str | None, float, str | None] | None:
    """(scope, one day's cap, its zone) of the cap that is reached — the session's
    (scope: its name) or all sessions' (None); None if none is reached."""
    report = await link.budget(session=session or None)
    for row in report["sessions"]:
        if row["cap"] is not None and row["today"] >= row["cap"] + row.get("extra", 0.0):
            return row["session"], row["cap"], row.get("tz")
    if report["cap"] is not None and report["today"] >= report["cap"] + report.get("extra", 0.0):
        return None, report["cap"], report.get("tz")
    return None


async def raise_and_send(link: Link, chat: int, token: str) -> Reply:
    """The held message's button: let the cap that held it be passed by one more day's
    cap, today only, and send the message (once, whoever pressed first)."""
    entry = await link._take(KV_OVER_BUDGET.format(chat=chat), int(token)) if token.isdigit() else None
    if entry is None or len(entry) != 6:
        return Reply("That message is no longer held (sent already, or too old): send it again if it still matters.")
    _, session, text, attachments, key, message_id = entry
    reached = await _reached_cap(link, session)
    said = "Sent."
    if reached is not None:
        scope, usd, tz = reached
        await link.budget_allow(usd, session=scope or None)
        zone_name = tz or "the supervisor's time zone"
        said = (f"✅ {f'{scope!r}' if scope else 'All sessions'} may spend {money(usd)} more today; the cap is back"
                f" at midnight ({zone_name}). Sent.")
    reply = await commands.send(link, chat, text, attachments, key, message_id=message_id, session=session)
    return Reply("\n".join(filter(None, [said, reply.text if reply else None])), quiet=True)


# --- the user's time zone -------------------------------------------------------------------

#: a Telegram user's time zone (an IANA name), by user id: their schedules run on its
#: clock and the caps they set count its day
KV_TZ = "telegram.tz.{user}"
TZ_USAGE = ("Usage: /tz — your time zone; /tz <zone> — set it (an IANA name: Europe/Berlin, America/New_York,"
            " Asia/Kolkata); /tz default — the supervisor's again")


async def user_zone(link: Link) -> str | None:
    """The current user's time zone, if they set one."""
    user = commands.current_user.get()
    stored = await link.kv_cached(KV_TZ.format(user=user)) if user is not None else None
    return stored if isinstance(stored, str) else None


async def tz(link: Link, chat: int, args: list[str]) -> Reply:
    """``/tz [<zone>|default]``: show or set the user's time zone."""
    user = commands.current_user.get()
    if len(args) > 1 or user is None:
        return Reply(TZ_USAGE)
    if not args:
        mine = await user_zone(link)
        now = datetime.datetime.now(zoneinfo.ZoneInfo(mine)).strftime("%a %H:%M") if mine else None
        return Reply(f"🕘 Your time zone: {mine} (now {now}). " if mine else
                     "🕘 You have no time zone of your own: the supervisor's is used (its config's timezone, else"
                     " the machine's). " + TZ_USAGE.split(";", 1)[1].strip())
    name = args[0]
    if name.lower() == "default":
        await link.kv_put(KV_TZ.format(user=user), None)
        return Reply("✅ Your schedules and caps use the supervisor's time zone again (for those you set from now on).")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return Reply(f"'{name}' is not a time zone. {TZ_USAGE}")
    await link.kv_put(KV_TZ.format(user=user), name)
    now = datetime.datetime.now(zoneinfo.ZoneInfo(name)).strftime("%a %H:%M")
    return Reply(f"✅ Your time zone: {name} (now {now}). Schedules you make run on its clock, and the daily caps you"
                 " set end their day at its midnight.")


# --- /diff --------------------------------------------------------------------------------

#: files listed per side in the chat (the document has them all)
DIFF_FILES_SHOWN = 15
MINUS = "\N{MINUS SIGN}"  # (lines removed, as git hosts show them)


def _side_lines(title: str, side: DiffSide) -> list[str]:
    files = side["files"]
    if not files:
        return []
    added, removed = sum(f["added"] for f in files), sum(f["removed"] for f in files)
    lines = [f"{title} ({len(files)} file{'s' if len(files) != 1 else ''}, +{added} {MINUS}{removed}):"]
    for f in files[:DIFF_FILES_SHOWN]:
        lines.append(f"  {f['path']}  " + ("binary" if f["binary"] else f"+{f['added']} {MINUS}{f['removed']}"))
    if len(files) > DIFF_FILES_SHOWN:
        lines.append(f"  … and {len(files) - DIFF_FILES_SHOWN} more (in the document)")
    return lines


def diff_answer(session: str, result: Diff) -> Answer:
    """The summary for the chat and the whole diff as a ``.diff`` document."""
    if not result["repo"]:
        return Answer(Reply(f"📝 '{session}' works in {result['cwd']}, which is not in a git repository: there are"
                            " no changes to show."), [])
    staged, unstaged, untracked = result["staged"], result["unstaged"], result["untracked"]
    lines = [f"📝 Changes in '{session}' ({result['root']})"]
    lines += _side_lines("Staged", staged) + _side_lines("Not staged", unstaged)
    if untracked:
        shown = ", ".join(untracked[:DIFF_FILES_SHOWN]) + (" …" if len(untracked) > DIFF_FILES_SHOWN else "")
        lines.append(f"Untracked ({len(untracked)}): {shown}")
    if len(lines) == 1:
        return Answer(Reply(lines[0] + "\nNo changes: the working tree matches the last commit."), [])
    parts = []
    for title, side in (("staged", staged), ("not staged", unstaged)):
        if side["diff"]:
            cut = "\n# … cut here: longer than the supervisor sends\n" if side["truncated"] else ""
            parts.append(f"# {title}\n{side['diff']}{cut}")
    documents = [Document(f"{session}.diff", "\n".join(parts).encode(), "The whole diff, staged first")] \
        if parts else []
    return Answer(Reply("\n".join(lines)), documents)


async def diff(link: Link, chat: int, args: list[str]) -> Reply | Answer:
    """``/diff [path]``: the active session's git working-tree changes."""
    active = await link.active(chat)
    if active is None:
        return Reply(render.NO_ACTIVE)
    return diff_answer(active, await link.diff(active, path=" ".join(args) or None))


# --- schedules ----------------------------------------------------------------------------

EVERY_USAGE = ("Usage: /every <when> <prompt> — when: weekdays 9:00, daily 18:30, mon,thu 8am, weekends 10:00,"
               " hourly, every 15m, every 2h, or a cron expression (0 9 * * 1-5). Each time, the prompt is sent to"
               " this session as a message; its answer comes here.")


def _next_text(schedule: Schedule) -> str:
    next_run, zone = schedule["next_run"], schedule.get("tz")
    if schedule["paused"]:
        return "paused"
    if next_run is None:  # (only while paused, the supervisor says)
        return "no next run"
    shown = datetime.datetime.fromtimestamp(next_run, zoneinfo.ZoneInfo(zone) if zone else None)
    return f"next {shown.strftime('%a %d %b %H:%M')}" + (f" ({zone})" if zone else "")


async def every(link: Link, chat: int, args: list[str]) -> Reply:
    """``/every <when> <prompt>``: a schedule for the active session, answered in this chat."""
    session = await link.active(chat)
    if session is None:
        return Reply(render.NO_ACTIVE)
    if not args:
        return Reply(EVERY_USAGE)
    # (it runs on this user's clock, if they set a zone)
    made = await link.schedule_add(session, " ".join(args), origin=commands.origin_of(chat),
                                   tz=await user_zone(link) or None)
    return Reply(f"⏰ Schedule {made['id']}: '{made['prompt']}' to '{session}' at {made['cron']} —"
                 f" {_next_text(made)}. /schedules lists, pauses and removes them.")


def schedules_reply(listed: list[Schedule]) -> Reply:
    if not listed:
        return Reply("No schedules. " + EVERY_USAGE)
    lines, buttons = ["⏰ Schedules"], []
    for s in listed:
        lines.append(f"{s['id']}. [{s['session']}] {s['cron']}: {s['prompt'][:80]} — {_next_text(s)}")
        pause = ("▶️ Resume", "r") if s["paused"] else ("⏸ Pause", "p")
        buttons += [(f"{pause[0]} {s['id']}", f"sch:{pause[1]}:{s['id']}"), (f"🗑 Remove {s['id']}", f"sch:x:{s['id']}")]
    return Reply("\n".join(lines), buttons=buttons)


async def schedules(link: Link, chat: int, args: list[str]) -> Reply:
    """``/schedules``: every schedule of the user's sessions, with pause/resume/remove."""
    listed = await link.schedules()
    return schedules_reply([s for s in listed if await link.visible(s["session"])])


async def schedule_button(link: Link, data: str) -> Reply:
    """A /schedules button (``<p|r|x>:<id>``); then the list as it is now."""
    action, _, raw = data.partition(":")
    schedule_id = int(raw) if raw.isdigit() else 0
    known = {s["id"]: s for s in await link.schedules()}
    if schedule_id not in known:
        return Reply("That schedule is gone (removed already).")
    await link.check_visible(known[schedule_id]["session"])
    if action == "x":
        await link.schedule_remove(schedule_id)
        said = f"🗑 Schedule {schedule_id} removed."
    else:
        await link.schedule_set(schedule_id, action == "p")
        said = f"⏸ Schedule {schedule_id} paused." if action == "p" else f"▶️ Schedule {schedule_id} resumed."
    listed = await link.schedules()
    now = schedules_reply([s for s in listed if await link.visible(s["session"])])
    return Reply(f"{said}\n\n{now.text}", buttons=now.buttons)


# --- /fork --------------------------------------------------------------------------------


async def fork(link: Link, chat: int, args: list[str]) -> Reply:
    """``/fork <name>``: a new session continuing a copy of the active one's conversation;
    it becomes this chat's session, the original is untouched."""
    active = await link.active(chat)
    if active is None:
        return Reply(render.NO_ACTIVE)
    if len(args) != 1:
        return Reply("Usage: /fork <name> — a new session that continues a copy of this conversation (try an idea"
                     " without touching the original)")
    name = args[0]
    twin = await commands.same_but_case(link, name)
    if twin is not None:
        return Reply(f"Session '{twin}' exists already. Pick another name.")
    try:
        made = await link.fork(active, name)
    except RemoteError as exc:
        if exc.code == "exists":
            return Reply(render.name_taken_text(name))
        raise
    await link.set_owner(name)
    await link.set_active(chat, name)
    what = "continues a copy of its conversation" if made["copied"] else \
        f"starts afresh ('{active}' had no conversation yet)"
    return Reply(f"🍴 '{name}' is a fork of '{active}': it {what} and is now active here. The original is"
                 f" untouched (/switch {active}).")


COMMANDS: dict[str, DailyCommand] = {
    "fork": fork,
    "every": every,
    "schedules": schedules,
    "rules": rules,
    "budget": budget,
    "diff": diff,
    "tz": tz,
}

__all__ = [
    "COMMANDS",
    "KV_OVER_BUDGET",
    "KV_TZ",
    "Answer",
    "Document",
    "budget",
    "diff",
    "diff_answer",
    "every",
    "fork",
    "hold_over_budget",
    "raise_and_send",
    "remove_rule",
    "rule_digest",
    "rules_reply",
    "schedule_button",
    "schedules",
    "tz",
    "user_zone",
]
