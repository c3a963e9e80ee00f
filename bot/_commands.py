"""The bot's commands by name (``COMMANDS``), with the few that belong to no area: /status,
/usage, /hosts; and Claude Code's own commands a chat may send.

The commands live by area — ``_sessions``, ``_settings``, ``_talk``, ``_dirs``, ``_desk``
— each independent of python-telegram-bot: a command takes the supervisor link, the
chat id and its arguments and returns the ``Reply`` to show (``_reply``); handlers in
``_messages`` and ``_buttons`` only translate Telegram to this.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from . import _hosts as hosts
from . import _render as render
from ._desk import attach_command, resume
from ._dirs import cd, clear, ls, pwd
from ._link import Link as Link  # ("X as X": what _daily reaches as commands.X, owned where it comes from)
from ._link import current_user as current_user
from ._link import origin_of as origin_of
from ._reply import Command
from ._reply import Reply as Reply
from ._reply import on_active_session as on_active_session
from ._sessions import archive, new_session, sessions, switch, unarchive
from ._sessions import same_but_case as same_but_case
from ._settings import mode, model, timeout
from ._talk import cancel
from ._talk import send as send


@on_active_session
async def status(link: Link, active: str, args: list[str]) -> Reply:
    [info] = await link.with_failures([await link.status(active)])
    return Reply(render.status_text(info))


#: Claude Code's own commands that work in stream-json mode (measured with the pinned
#: CLI, 2.1.331): passed to Claude as typed. /clear is ours (``clear``); /memory,
#: /release-notes and the like answer "isn't available in this environment".
CLAUDE_BUILTINS = ("compact", "context", "cost", "init", "review", "security-review")


def claude_commands(cwd: str | None) -> list[str]:
    """The slash commands Claude Code runs for a session in ``cwd``: its built-ins and the
    custom ones (``.claude/commands/<name>.md`` of the project and of the user); none
    that this bot answers itself."""
    names = set(CLAUDE_BUILTINS)
    for base in ([Path(cwd)] if cwd else []) + [Path.home()]:
        with contextlib.suppress(OSError):
            names.update(f.stem for f in (base / ".claude" / "commands").glob("*.md") if f.is_file())
    return sorted(n for n in names if n not in COMMANDS and n not in BOT_ONLY)


async def usage(link: Link, chat: int, args: list[str]) -> Reply:
    """What Claude cost: in this chat's session, in all of the user's sessions, and what
    those spent today; the machine's total today (every user's and claudectl's
    sessions) only under that label."""
    status = await link.supervisor_status()
    by_session = status.get("cost_today_by_session") or {}
    everything = [s for s in await link.list_sessions(all=True) if await link.visible(s["name"])]
    lines = []
    active = await link.active(chat)
    mine = next((s for s in everything if s["name"] == active), None)
    if mine is not None:
        lines.append(f"This session ({active}): ${mine.get('cost_usd') or 0:.4f}")
    lines.append(f"All your sessions: ${sum(s.get('cost_usd') or 0 for s in everything):.4f}")
    lines.append(f"Today, your sessions: ${sum(by_session.get(s['name'], 0.0) for s in everything):.4f}")
    lines.append(f"Today, all sessions on this machine (everyone's): ${status['cost_today']:.4f}")
    return Reply("\n".join(lines))


async def hosts_command(link: Link, chat: int, args: list[str]) -> Reply:
    """``/hosts``: this machine and every ``[hosts.*]`` one, their state and versions."""
    return Reply(await hosts.hosts_reply(link))


COMMANDS: dict[str, Command] = {
    "new": new_session,
    "switch": switch,
    "sessions": sessions,
    "timeout": timeout,
    "model": model,
    "mode": mode,
    "archive": archive,
    "cancel": cancel,
    "status": status,
    "usage": usage,
    "unarchive": unarchive,
    "pwd": pwd,
    "cd": cd,
    "ls": ls,
    "clear": clear,
    "attach": attach_command,
    "resume": resume,
    "hosts": hosts_command,
}
BOT_ONLY = ("help", "get", "start")  # the bot's commands handled outside COMMANDS
