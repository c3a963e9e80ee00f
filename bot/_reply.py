"""What a command answers (``Reply``), and the shape of a command: the link, the chat id
and its arguments in, a ``Reply`` out (``on_active_session``: on the chat's session).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from protocol import ConnectionFailed, RemoteError

from . import _hosts as hosts
from . import _render as render
from ._link import Link


@dataclass
class Reply:
    text: str
    markdown: bool = False
    buttons: list[tuple[str, str]] = field(default_factory=list)
    quiet: bool = False  # sent without a notification (a by-the-way, not an answer)


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


def error_reply(exc: Exception) -> Reply:
    if isinstance(exc, RemoteError):
        return Reply(f"⚠️ {exc.message}")
    if isinstance(exc, hosts.HostUnreachable):
        return Reply(f"⚠️ {exc}")
    if isinstance(exc, ConnectionFailed):
        # a request that got no answer may still be carried out when the supervisor is back
        return Reply("⚠️ The supervisor did not answer in time; it may still do this when it is back."
                     " Check with /status or /sessions before trying again.")
    return Reply(f"⚠️ {exc}")


Command = Callable[["Link", int, list[str]], Awaitable[Reply]]


def on_active_session(fn: Callable[[Link, str, list[str]], Awaitable[Reply]]) -> Command:
    """Run a command on the chat's active session, or hint how to get one."""

    async def command(link: Link, chat: int, args: list[str]) -> Reply:
        active = await link.active(chat)
        if active is None:
            return Reply(render.NO_ACTIVE)
        return await fn(link, active, args)

    return command
