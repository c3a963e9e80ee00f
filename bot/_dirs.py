"""A session's directory and its conversation: /pwd, /cd (Claude keeps a conversation per
directory, so a move starts a fresh one), /ls, /clear, and the allowed roots every path
is confined to. /ls and /cd ask the session's own machine (``list_dir``), local or not.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path, PurePosixPath

from protocol import DirListing, RemoteError

from . import _hosts as hosts
from ._link import Link
from ._reply import Reply, on_active_session


async def within_roots(link: Link, raw: str, create: bool = False) -> Path | str:
    """``raw`` (absolute, ``~``, or relative to the first root) as a directory inside an
    allowed root once symlinks are followed; made if ``create`` and missing; else why not."""
    roots = await link.roots()
    path = Path(raw).expanduser()
    target = (path if path.is_absolute() else roots[0] / path).resolve()
    if not any(target == root or root in target.parents for root in roots):
        return f"{raw} is outside the allowed directories ({', '.join(map(str, roots))})"
    if create and not target.exists():
        try:
            target.mkdir(parents=True)
        except OSError as exc:
            return f"cannot make {target}: {exc.strerror or exc}"
    if not target.is_dir():
        return f"{target} is not a directory"
    return target


@on_active_session
async def pwd(link: Link, active: str, args: list[str]) -> Reply:
    return Reply((await link.status(active))["cwd"])


@on_active_session
async def cd(link: Link, active: str, args: list[str]) -> Reply:
    """Ask before moving: Claude keeps a conversation per directory, so a move starts a
    fresh one (the button carries the move out). The directory is looked up by the
    session's machine (``list_dir``)."""
    cwd = (await link.status(active))["cwd"]
    if not args:
        return Reply("Usage: /cd <dir> (a directory under the allowed roots)" + (", or pick one:" if (
            picks := await _cd_choices(link, active)) else ""), buttons=[(f"📁 {p}", f"cdpick:{p}") for p in picks])
    try:
        where = str((await list_dir(link, active, " ".join(args)))["path"])
    except RemoteError as exc:
        return Reply(f"⚠️ {exc.message}.")
    if where == cwd:
        return Reply(f"Session '{active}' already works in {cwd}.")
    # (the button carries where: a long one as a token kept in the supervisor, so the
    # press works after a bot restart too)
    return Reply(f"Move session '{active}' to {where}? Claude keeps its conversations per directory: it starts a"
                 " fresh one there (the old one stays where it was).",
                 buttons=[(f"Move and start fresh in {PurePosixPath(where).name or where}", f"cd:{active} {where}")])


CD_CHOICES = 8


async def list_dir(link: Link, session: str | None, path: str | None = None) -> DirListing:
    """``list_dir`` on the session's machine (without a session, here): within this bot's
    roots for a session of this machine, within that supervisor's own default (the
    session's directory and its sessions dir) for one of another host."""
    remote = session is not None and hosts.is_remote(session)
    return await link.list_dir(session=session, path=path,
                               within=None if remote else [str(root) for root in await link.roots()])


async def _cd_choices(link: Link, session: str) -> list[str]:
    """Where a bare /cd offers to go: up (inside the roots), then the first subdirectories
    (names that fit in a button's data)."""
    choices = []
    with contextlib.suppress(RemoteError):
        await list_dir(link, session, "..")
        choices.append("..")
    with contextlib.suppress(RemoteError):
        entries = (await list_dir(link, session))["entries"]
        choices += [e["name"] for e in entries if e["dir"] and not e["name"].startswith(".")
                    and len(e["name"].encode()) <= 50][:CD_CHOICES]
    return choices


async def move(link: Link, argument: str) -> Reply:
    """The /cd button (``<session> <dir>``): suspend the session if Claude runs, then
    move it — where it is allowed to go now (a forged button is held to the roots too)."""
    session, _, target = argument.partition(" ")
    if not target or not await link.visible(session):  # (a button of a release that kept it in memory)
        return Reply("This move is no longer pending; send /cd again.")
    try:
        target = str((await list_dir(link, session, target))["path"])
    except RemoteError as exc:
        return Reply(f"⚠️ {exc.message}. Nothing was moved.")
    await stop_claude(link, session)
    await link.set_cwd(session, target)
    return Reply(f"Session '{session}' now works in {target}, with a fresh conversation.")


async def stop_claude(link: Link, session: str) -> None:
    """Suspend the session if Claude runs, and wait until it stopped (within its grace
    period): what a fresh conversation or a move needs first."""
    if not (await link.status(session))["live"]:
        return
    with contextlib.suppress(RemoteError):
        await link.suspend(session)
    for _ in range(100):
        if not (await link.status(session))["live"]:
            return
        await asyncio.sleep(0.1)


@on_active_session
async def clear(link: Link, active: str, args: list[str]) -> Reply:
    """Claude Code's /clear, done by the supervisor: a fresh conversation it also resumes
    after a suspend (Claude's own /clear starts one the supervisor would not know)."""
    info = await link.status(active)
    if info["state"] == "busy" or info["queued"]:
        return Reply(f"Claude is answering in '{active}'. /cancel it first, then /clear.")
    await stop_claude(link, active)
    await link.new_conversation(active)
    return Reply(f"Session '{active}' starts a fresh conversation with your next message.")


LS_LIMIT = 60


async def ls(link: Link, chat: int, args: list[str]) -> Reply:
    """A directory's entries (the session's by default), listed by the session's machine
    (``list_dir``), within the roots."""
    try:
        listing = await list_dir(link, await link.active(chat), " ".join(args) if args else None)
    except RemoteError as exc:
        return Reply(f"⚠️ {exc.message}.")
    lines = [e["name"] + ("/" if e["dir"] else "") for e in listing["entries"][:LS_LIMIT]]
    more = f"\n… and {listing['total'] - LS_LIMIT} more" if listing["total"] > LS_LIMIT else ""
    return Reply(f"{listing['path']}:\n" + ("\n".join(lines) or "(empty)") + more)
