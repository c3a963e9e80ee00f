"""What is said in Claude Code's own terminal UI while a session is open there
(``claudectl attach``), shown in the chat, marked as from the desk (read-only): events
``from: "terminal"``, and the session going to the terminal and coming back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from telegram.ext import Application

from . import _activity as activity
from . import _commands as commands
from . import _markdown as markdown
from . import _render as render


async def deliver(app: Application[Any, Any, Any, Any, Any, Any], event: dict[str, Any], place: str | None,
                  send_chunk: Callable[..., Awaitable[int]]) -> None:
    """One event said in a terminal (``from: "terminal"``), or a session going to or
    coming back from one, shown quietly where the session was last used (``place``)."""
    origin = commands.parse_origin(place)
    if origin is None:
        return
    chat = origin[0]
    commands.current_thread.set(origin[2])
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
