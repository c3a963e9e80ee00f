"""Commands on sessions: /new, /switch, /sessions (paged), /archive, /unarchive, and the
session a first message offers to create. Like every command module: independent of
python-telegram-bot, each takes the link, the chat id and the arguments and returns the
``Reply`` to show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol import RemoteError

from . import _hosts as hosts
from . import _render as render
from ._dirs import within_roots
from ._link import Link
from ._reply import Reply

NEW_USAGE = "Usage: /new <name> [dir] [persona] (dir: a path under an allowed root, e.g. ~/src/app)"


def _looks_like_path(arg: str) -> bool:
    return "/" in arg or arg.startswith(("~", "."))


async def new_session(link: Link, chat: int, args: list[str]) -> Reply:
    if args and hosts.is_remote(args[0]):
        return await new_remote(link, chat, args)
    dirs = [a for a in args[1:] if _looks_like_path(a)]
    personas = [a for a in args[1:] if not _looks_like_path(a)]
    if not args or len(dirs) > 1 or len(personas) > 1:
        return Reply(NEW_USAGE)
    fields: dict[str, Any] = {"session": args[0]}
    if personas:
        known = (await link.supervisor_status()).get("personas") or []
        if personas[0] not in known:  # more likely a name with a space in it
            return Reply(f"'{personas[0]}' is not a persona here ({', '.join(known) or 'none configured'}),"
                         f" and a session name is one word. {NEW_USAGE}")
        fields["persona"] = personas[0]
    twin = await same_but_case(link, args[0])
    if twin is not None and twin != args[0]:
        return Reply(f"Session '{twin}' exists (names differ only in case). Use /switch {twin}, or another name.")
    if dirs:
        where = await within_roots(link, dirs[0], create=True)
        if isinstance(where, str):
            return Reply(f"⚠️ {where}. Nothing was created.")
        fields["cwd"] = str(where)
    try:
        await link.create(**fields)
        await link.set_owner(args[0])
    except RemoteError as exc:
        if exc.code == "exists":
            if not await link.visible(args[0]):  # another user's: say nothing about it
                return Reply(render.name_taken_text(args[0]))
            if (await link.status(args[0]))["state"] == "archived":
                return Reply(f"Session '{args[0]}' exists but is archived: /unarchive {args[0]} brings it back.")
            return Reply(f"Session '{args[0]}' already exists. Use /switch {args[0]}.")
        raise
    await link.set_active(chat, args[0])
    persona = f" with persona '{personas[0]}'" if personas else ""
    where = f" in {fields['cwd']}" if "cwd" in fields else ""
    return Reply(f"Session '{args[0]}' created{persona}{where} and active. Send a message to start.")


async def new_remote(link: Link, chat: int, args: list[str]) -> Reply:
    """``/new name@host [dir]``: a session on another machine (its directory is a path
    there: absolute, or by default that supervisor's own)."""
    host = hosts.split(args[0])[1]
    fields: dict[str, Any] = {"session": args[0]}
    rest = args[1:]
    if len(rest) > 1 or (rest and not rest[0].startswith("/")):
        return Reply("Usage: /new <name>@<host> [dir] (dir: an absolute path on that machine)")
    if rest:
        fields["cwd"] = rest[0]
    try:
        info = await link.create(**fields)
    except RemoteError as exc:
        if exc.code == "exists":
            return Reply(f"Session '{args[0]}' already exists. Use /switch {args[0]}.")
        raise
    await link.set_owner(args[0])
    await link.set_active(chat, args[0])
    return Reply(f"Session '{args[0]}' created on {host} in {info['cwd']} and active. Send a message to start.")


async def same_but_case(link: Link, name: str) -> str | None:
    """The user's session whose name is ``name`` but for case (``work`` for ``WORK``)."""
    for session in await link.list_sessions(all=True):
        if session["name"].casefold() == name.casefold() and await link.visible(session["name"]):
            return str(session["name"])
    return None


async def switch(link: Link, chat: int, args: list[str]) -> Reply:
    if len(args) != 1:
        active = await link.active(chat)
        others = [s["name"] for s in await link.list_sessions()
                  if s["name"] != active and await link.visible(s["name"])]
        return Reply("Usage: /switch <name>" + (", or pick one:" if others else ""),
                     buttons=[(f"Switch to {name}", f"switch:{name}") for name in others])
    name = args[0]
    if not hosts.is_remote(name) and name not in {s["name"] for s in await link.list_sessions(all=True)}:
        name = await same_but_case(link, name) or name  # /switch WORK finds 'work'
    await link.check_visible(name)
    info = await link.status(name)
    if info["state"] == "archived":
        return Reply(f"Session '{name}' is archived.")
    await link.set_active(chat, name)
    return Reply(f"Switched to session '{name}'.")


#: sessions on one /sessions page: a line and a button each, so a page stays far under
#: Telegram's 4,096 characters and 100 buttons however many sessions there are
SESSIONS_PAGE = 20


async def sessions(link: Link, chat: int, args: list[str], showing: str | None = None) -> Reply:
    """The sessions, a page at a time (``/sessions 3``; the page holding ``showing`` if
    given), newest first, with a button to switch to each and buttons to the pages
    before and after. With other hosts configured: every host's sessions, grouped by
    host (not paged)."""
    if link.remotes is not None and link.remotes.hosts:  # grouped by host
        active = await link.active(chat)
        text, names = await hosts.sessions_by_host(link, active)
        return Reply(text, markdown=True,
                     buttons=[(f"Switch to {name}", f"switch:{name}") for name in names if name != active])
    listing = [s for s in await link.list_sessions() if await link.visible(s["name"])]
    if not listing:
        return Reply(render.NO_SESSIONS)
    pages = -(-len(listing) // SESSIONS_PAGE)
    page = int(args[0]) if args and args[0].isdigit() else 1
    if showing is not None:
        page = next((i // SESSIONS_PAGE + 1 for i, s in enumerate(listing) if s["name"] == showing), page)
    page = min(max(page, 1), pages)
    shown: list[Mapping[str, Any]] = await link.with_failures(listing[(page - 1) * SESSIONS_PAGE:page * SESSIONS_PAGE])
    for i, session in enumerate(shown):  # does Claude wait for the user's answer there (⏳)?
        if session.get("live") and "activity" not in session:  # (a supervisor before #29's `activity`: ask)
            shown[i] = {**session, "pending": (await link.status(session["name"])).get("pending")}
    active = await link.active(chat)
    buttons = [(f"Switch to {s['name']}", f"switch:{s['name']}") for s in shown if s["name"] != active]
    if page > 1:
        buttons.append((render.page_button(page - 1, before=True), f"sessions:{page - 1}"))
    if page < pages:
        buttons.append((render.page_button(page + 1, before=False), f"sessions:{page + 1}"))
    text = render.sessions_markdown(shown, active)
    if pages > 1:
        text += "\n\n" + render.page_text(page, pages, len(listing))
    return Reply(text, markdown=True, buttons=buttons)


async def archive(link: Link, chat: int, args: list[str]) -> Reply:
    """Archive a session; one that is answering, or has messages waiting, is asked about
    first (archiving stops the answer and drops what waits)."""
    if len(args) != 1:
        return Reply("Usage: /archive <name>")
    name = args[0]
    await link.check_visible(name)
    info = await link.status(name)
    answering, waiting = info["state"] == "busy", int(info.get("queued") or 0)
    if answering or waiting:
        lost = [what for what, yes in (("stops the answer Claude is writing", answering),
                                       (f"drops the {render.messages_text(waiting)} waiting", waiting)) if yes]
        return Reply(f"Session '{name}' is busy: archiving it now {' and '.join(lost)}. Archive anyway?",
                     buttons=[(f"Archive '{name}' now", f"archive:{name}")])
    return await archive_now(link, chat, name)


async def archive_now(link: Link, chat: int, name: str) -> Reply:
    await link.check_visible(name)  # (a forged button)
    await link.archive(name)
    if await link.active(chat) == name:
        await link.set_active(chat, None)
    return Reply(f"Session '{name}' archived.")


async def first_offer(link: Link) -> Reply:
    """What a message sent before the chat has a session is answered: a button to make
    one, named as it will be."""
    name = free_name(await all_names(link), render.FIRST_SESSION)
    return Reply(render.NO_ACTIVE_OFFER, buttons=[(render.NEW_SESSION_BUTTON.format(name=name), f"new:{name}")])


async def all_names(link: Link) -> set[str]:
    """Every session's name, archived ones and other users' too (names are shared)."""
    return {s["name"] for s in await link.list_sessions(all=True)}


def free_name(taken: set[str], base: str) -> str:
    """``base``, or ``base2``, ``base3``, … — the first that is not taken."""
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}{n}"
    return candidate


async def first_session(link: Link, chat: int, name: str) -> Reply:
    """The button under a first message: create ``name`` (the name on the button) and make
    it the chat's session; if it was taken since, the next free one (the reply says which)."""
    taken = await all_names(link)
    return await new_session(link, chat, [name if name not in taken else free_name(taken, render.FIRST_SESSION)])


async def unarchive(link: Link, chat: int, args: list[str]) -> Reply:
    if len(args) != 1:
        return Reply("Usage: /unarchive <name>")
    await link.check_visible(args[0])
    await link.unarchive(args[0])
    return Reply(f"Session '{args[0]}' is back. /switch {args[0]} to use it.")
