"""The desk (issue #25): what is said in Claude Code's own terminal UI while a session is
open there (``claudectl attach``), shown in the chat, marked as from the desk (read-only):
events ``from: "terminal"``, and the session going to the terminal and coming back; and
the commands that go there and back: /attach, /resume.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from telegram.ext import Application

from protocol import (
    AssistantTextEvent,
    EventKind,
    StateEvent,
    ToolUseEvent,
    UserEvent,
    default_runtime_dir,
    relative_time,
)

from . import _activity as activity
from . import _markdown as markdown
from . import _render as render
from ._dirs import within_roots
from ._kinds import KindTable
from ._link import Link, current_thread, parse_origin
from ._reply import Reply, on_active_session
from ._sessions import all_names, free_name

#: the event a handler takes: its kind's TypedDict (``protocol._events``)
E = TypeVar("E", bound=Mapping[str, Any])


@dataclass(frozen=True)
class Said(Generic[E]):
    """An event of the desk on its way to the chat where its session was last used
    (``Said[UserEvent]``: a ``user``)."""

    app: Application[Any, Any, Any, Any, Any, Any]
    chat: int
    session: str
    event: E
    send_chunk: Callable[..., Awaitable[int]]


async def show_state(said: Said[StateEvent]) -> None:
    """The session went to a terminal, or came back from one."""
    if said.event.get("state") == "attached":
        text = (f"{activity.DESK} '{said.session}' is open in a terminal now ({activity.terminal_where(said.event)}):"
                " what is said there shows here; what you send waits until it closes.")
    else:
        text = f"{activity.DESK} '{said.session}' is back from the terminal."
    await said.app.bot.send_message(said.chat, text, disable_notification=True)


async def show_user(said: Said[UserEvent]) -> None:
    await said.app.bot.send_message(said.chat, f"{activity.DESK} [{said.session}] at the desk:\n"
                                    f"{said.event.get('text', '')}", disable_notification=True)


async def show_answer(said: Said[AssistantTextEvent]) -> None:
    for chunk in markdown.answer_parts(f"{activity.DESK} _[{said.session}] Claude, at the desk:_\n\n"
                                       f"{said.event.get('text', '')}"):
        await said.send_chunk(said.app, said.chat, chunk, quiet=True)


async def show_tool_use(said: Said[ToolUseEvent]) -> None:
    line = render.tool_line(said.event.get("name"), said.event.get("input"))
    await said.app.bot.send_message(said.chat, f"{activity.DESK} [{said.session}] {line}", disable_notification=True)


#: (the supervisor tails only the user's messages, Claude's text, its tool calls and their
#: results from the terminal's transcript; the session going there and back is a state)
_NEVER_AT_THE_DESK = "never said at the desk: the terminal's transcript gives only user, assistant_text, tool_use" \
    " and tool_result"
#: how each kind of event said at the desk reaches the chat (``IGNORED``: not at all)
HANDLERS: dict[EventKind, Callable[[Said[Any]], Awaitable[None]]] = {
    EventKind.STATE: show_state,
    EventKind.USER: show_user,
    EventKind.ASSISTANT_TEXT: show_answer,
    EventKind.TOOL_USE: show_tool_use,
}
IGNORED: dict[EventKind, str] = {
    EventKind.TOOL_RESULT: "the tool's line says what ran; its output stays at the desk",
    **{kind: _NEVER_AT_THE_DESK for kind in (
        EventKind.STEERED, EventKind.TAKEN, EventKind.RESULT, EventKind.ERROR, EventKind.MESSAGE_FAILED,
        EventKind.SETTINGS, EventKind.PERMISSION_REQUEST, EventKind.PERMISSION_RESOLVED, EventKind.REMINDER,
        EventKind.STALLED)},
}
KINDS = KindTable(HANDLERS, IGNORED)


async def deliver(app: Application[Any, Any, Any, Any, Any, Any], event: dict[str, Any], place: str | None,
                  send_chunk: Callable[..., Awaitable[int]]) -> None:
    """One event said in a terminal (``from: "terminal"``), or a session going to or
    coming back from one, shown quietly where the session was last used (``place``), as
    ``KINDS`` says for its kind."""
    origin = parse_origin(place)
    handler = KINDS.handler(event.get("kind"))
    if origin is None or handler is None:
        return
    current_thread.set(origin[2])
    await handler(Said(app, origin[0], str(event.get("session")), event, send_chunk))


def is_desk_event(event: dict[str, Any]) -> bool:
    """Said in a terminal, or the session going there or coming back."""
    if event.get("from") == "terminal":
        return True
    return event.get("kind") == "state" and (event.get("state") == "attached" or event.get("reason") == "detached")


#: conversations offered by one /resume at most (one button each)
RESUME_OFFERED = 8


@on_active_session
async def attach_command(link: Link, active: str, args: list[str]) -> Reply:
    """The exact command that opens the chat's session at the desk."""
    info = await link.status(active)
    argv = ["claudectl"]
    runtime_dir = (await link.supervisor_status()).get("runtime_dir")
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
        directory = (await link.status(active))["cwd"]
    found = [c for c in await link.conversations(cwd=directory) if not c.get("held_by")]
    if not found:
        return Reply(f"No Claude Code conversation in {directory} that a session does not continue already.")
    lines = [f"Claude Code conversations in {directory} (newest first):"]
    buttons = []
    for i, c in enumerate(found[:RESUME_OFFERED], 1):
        about = " ".join((c.get("summary") or c.get("first_prompt") or "(no prompt)").split())[:70]
        open_now = f" — open in a terminal (pid {c['open_pid']})" if c.get("open_pid") else ""
        lines.append(f"{i}. {about} · {c['messages']} messages · {relative_time(c['last_active'])}{open_now}")
        # (the button carries the directory: as a token kept in the supervisor, so the
        # press works after a bot restart too)
        buttons.append((f"{i}. Continue: {about[:40]}", f"resume:{c['session_id']} {directory}"))
    return Reply("\n".join(lines), buttons=buttons)


async def may_resume_in(link: Link, directory: str) -> bool:
    """Whether /resume may offer ``directory``'s conversations: one within the roots, or
    the directory of a session the user sees (a bare /resume's)."""
    if not isinstance(await within_roots(link, directory), str):
        return True
    for session in await link.list_sessions(all=True):
        if session["cwd"] == directory and await link.visible(session["name"]):
            return True
    return False


async def continue_conversation(link: Link, chat: int, conversation: str) -> Reply:
    """A /resume button: a new session continuing that conversation, made active."""
    conversation, _, directory = conversation.partition(" ")
    if not directory:  # (a button of a release that kept the list in memory)
        return Reply("This list is from before the bot restarted: send /resume again.")
    if not await may_resume_in(link, directory):  # (a forged button)
        return Reply(f"⚠️ {directory} is outside the allowed directories. Nothing was made.")
    name = _session_name(await all_names(link), directory)
    await link.create(name, cwd=directory, conversation=conversation)
    await link.set_owner(name)
    await link.set_active(chat, name)
    return Reply(f"Session '{name}' continues that conversation (in {directory}) and is active. Send a"
                          " message to go on.")
