"""The desk (issue #25): what is said in Claude Code's own terminal UI while a session is
open there (``claudectl attach``), shown in the chat, marked as from the desk (read-only):
events ``from: "terminal"``, and the session going to the terminal and coming back; and
the commands that go there and back: /attach, /resume.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from telegram.ext import Application

from protocol import default_runtime_dir, relative_time

from . import _activity as activity
from . import _markdown as markdown
from . import _render as render
from ._dirs import within_roots
from ._link import Link, current_thread, parse_origin
from ._reply import Reply, on_active_session
from ._sessions import all_names, free_name


async def deliver(app: Application[Any, Any, Any, Any, Any, Any], event: dict[str, Any], place: str | None,
                  send_chunk: Callable[..., Awaitable[int]]) -> None:
    """One event said in a terminal (``from: "terminal"``), or a session going to or
    coming back from one, shown quietly where the session was last used (``place``)."""
    origin = parse_origin(place)
    if origin is None:
        return
    chat = origin[0]
    current_thread.set(origin[2])
    session = str(event.get("session"))
    kind = event.get("kind")
    if kind == "state":
        if event.get("state") == "attached":
            text = (f"{activity.DESK} '{session}' is open in a terminal now ({activity.terminal_where(event)}): what is"
                    " said there shows here; what you send waits until it closes.")
        else:
            text = f"{activity.DESK} '{session}' is back from the terminal."
        await app.bot.send_message(chat, text, disable_notification=True)
    elif kind == "user":
        await app.bot.send_message(chat, f"{activity.DESK} [{session}] at the desk:\n{event.get('text', '')}",
                                   disable_notification=True)
    elif kind == "assistant_text":
        for chunk in markdown.answer_parts(f"{activity.DESK} _[{session}] Claude, at the desk:_\n\n{event.get('text', '')}"):
            await send_chunk(app, chat, chunk, quiet=True)
    elif kind == "tool_use":
        line = render.tool_line(event.get("name"), event.get("input"))
        await app.bot.send_message(chat, f"{activity.DESK} [{session}] {line}", disable_notification=True)


def is_desk_event(event: dict[str, Any]) -> bool:
    """Said in a terminal, or the session going there or coming back."""
    if event.get("from") == "terminal":
        return True
    return event.get("kind") == "state" and (event.get("state") == "attached" or event.get("reason") == "detached")


#: conversations offered by one /resume at most (one button each)
RESUME_OFFERED = 8
RESUMES_KEPT = 200


@on_active_session
async def attach_command(link: Link, active: str, args: list[str]) -> Reply:
    """The exact command that opens the chat's session at the desk."""
    info = await link.request("status", session=active)
    argv = ["claudectl"]
    runtime_dir = (await link.request("status")).get("runtime_dir")
    if runtime_dir and Path(runtime_dir) != default_runtime_dir():
        argv += ["--runtime-dir", runtime_dir]
    argv += ["attach", active]
    command = shlex.join(argv)
    terminal = info.get("terminal")
    if terminal:
        return Reply(f"{activity.DESK} '{active}' is open in a terminal already ({activity.terminal_where(terminal)})."
                     " What is said there shows here; /exit there hands it back.")
    return Reply(
        f"To go on with '{active}' at your desk, run there:\n\n`{command}`\n\nClaude Code opens on this"
        f" conversation (in `{info['cwd']}`). What you say there shows here; messages you send here meanwhile"
        " wait and are answered once you /exit.", markdown=True)


def _session_name(taken: set[str], directory: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "-", Path(directory).name).strip("-_")[:40] or "desk"
    if not base[0].isalnum():
        base = "desk"
    return free_name(taken, base)


async def resume(link: Link, chat: int, args: list[str]) -> Reply:
    """Claude Code's conversations of a directory (the active session's, or the one
    given, within the allowed roots), each a button that makes a session continuing it."""
    if args:
        where = await within_roots(link, " ".join(args))
        if isinstance(where, str):
            return Reply(f"⚠️ {where}.")
        directory = str(where)
    else:
        active = await link.active(chat)
        if active is None:
            return Reply("Usage: /resume <dir> (or make a session active: its directory is used)")
        directory = (await link.request("status", session=active))["cwd"]
    found = [c for c in (await link.request("conversations", cwd=directory))["conversations"] if not c.get("held_by")]
    if not found:
        return Reply(f"No Claude Code conversation in {directory} that a session does not continue already.")
    lines = [f"Claude Code conversations in {directory} (newest first):"]
    buttons = []
    for i, c in enumerate(found[:RESUME_OFFERED], 1):
        about = " ".join((c.get("summary") or c.get("first_prompt") or "(no prompt)").split())[:70]
        open_now = f" — open in a terminal (pid {c['open_pid']})" if c.get("open_pid") else ""
        lines.append(f"{i}. {about} · {c['messages']} messages · {relative_time(c['last_active'])}{open_now}")
        link.pending_resumes[c["session_id"]] = directory
        while len(link.pending_resumes) > RESUMES_KEPT:  # (offers never pressed)
            del link.pending_resumes[next(iter(link.pending_resumes))]
        buttons.append((f"{i}. Continue: {about[:40]}", f"resume:{c['session_id']}"))
    return Reply("\n".join(lines), buttons=buttons)


async def continue_conversation(link: Link, chat: int, conversation: str) -> Reply:
    """A /resume button: a new session continuing that conversation, made active."""
    directory = link.pending_resumes.pop(conversation, None)
    if directory is None:
        return Reply("This list is from before the bot restarted: send /resume again.")
    name = _session_name(await all_names(link), directory)
    await link.request("create", session=name, cwd=directory, conversation=conversation)
    await link.set_owner(name)
    await link.set_active(chat, name)
    return Reply(f"Session '{name}' continues that conversation (in {directory}) and is active. Send a"
                          " message to go on.")
