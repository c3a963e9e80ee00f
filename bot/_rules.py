"""The always-allow rules of the chat's session (issue #27): ``/rules`` lists them with a
button to remove each, ``/rules add <tool> <scope>`` adds one. Part of the daily
commands (``_daily``).

Buttons (callback data, at most 64 bytes):

    rr:<digest>:<session>     remove the always-allow rule whose digest this is
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import _hosts as hosts
from ._commands import Link, Reply, on_active_session
from ._dirs import within_roots
from ._prompts import scope_text

#: Telegram's limit for a button's callback data, in bytes
CALLBACK_BYTES = 64


def _button(prefix: str, session: str) -> str | None:
    """``prefix:session`` if it fits Telegram's 64 bytes, else None (no button)."""
    data = f"{prefix}:{session}"
    return data if len(data.encode()) <= CALLBACK_BYTES else None


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


__all__ = [
    "CALLBACK_BYTES",
    "RULES_ADD_USAGE",
    "add_rule",
    "remove_rule",
    "rule_digest",
    "rules",
    "rules_reply",
]
