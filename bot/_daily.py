"""The bot's daily-driver commands (issue #27), by name (``COMMANDS``): always-allow rules
(``/rules``: ``_rules``), budgets (``/budget``: ``_budget``), the user's time zone
(``/tz``: ``_zone``), the session's git changes (``/diff``: ``_diff``), schedules
(``/every``, ``/schedules``: ``_schedules``) and ``/fork``, here. Like ``_commands``:
independent of python-telegram-bot, each takes the supervisor link, the chat and the
arguments and returns what to show (a ``Reply``, or an ``Answer`` with documents);
``_app`` registers them, ``_buttons`` their buttons (each module lists its own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from protocol import RemoteError

from . import _commands as commands
from . import _render as render
from ._budget import KV_OVER_BUDGET, budget, hold_over_budget, raise_and_send
from ._commands import Link, Reply
from ._diff import diff, diff_answer
from ._reply import Answer, Document
from ._rules import remove_rule, rule_digest, rules, rules_reply
from ._schedules import every, schedule_button, schedules
from ._zone import KV_TZ, tz, user_zone

DailyCommand = Callable[[Link, int, list[str]], Awaitable[Reply | Answer]]


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
