"""The bot's daily-driver commands (issue #27): always-allow rules (``/rules``), budgets
(``/budget``), the session's git changes (``/diff``), schedules (``/every``,
``/schedules``) and ``/fork``. Like ``_commands``: independent of python-telegram-bot,
each takes the supervisor link, the chat and the arguments and returns what to show;
``_app`` registers them and their buttons.

Buttons (callback data, at most 64 bytes):

    rr:<digest>:<session>     remove the always-allow rule whose digest this is
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ._commands import Link, Reply, on_active_session
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


@on_active_session
async def rules(link: Link, session: str, args: list[str]) -> Reply:
    """``/rules``: the active session's always-allow rules, a button to remove each."""
    return rules_reply(session, (await link.request("rules", session=session))["rules"])


async def remove_rule(link: Link, data: str) -> Reply:
    """A /rules button (``<digest>:<session>``): forget that rule, show what is left."""
    digest, _, session = data.partition(":")
    await link.check_visible(session)
    known = (await link.request("rules", session=session))["rules"]
    rule = next((r for r in known if rule_digest(r) == digest), None)
    if rule is None:
        return Reply("That rule is no longer there (removed already).")
    result = await link.request("remove_rule", session=session, rule=rule)
    left = rules_reply(session, result["rules"])
    return Reply(f"🗑 Removed {scope_text(rule)}: Claude asks for it again.\n\n{left.text}", buttons=left.buttons)


COMMANDS: dict[str, DailyCommand] = {
    "rules": rules,
}

__all__ = ["COMMANDS", "Answer", "Document", "remove_rule", "rule_digest", "rules_reply"]
