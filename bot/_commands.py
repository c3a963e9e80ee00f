"""Command logic of the bot, independent of python-telegram-bot.

Every function takes the supervisor link, the chat id and the command's arguments and
returns the ``Reply`` to show; handlers in ``_app`` only translate Telegram to this.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import (
    AsyncClient,
    ConnectionFailed,
    ErrorCode,
    PermissionMode,
    RemoteError,
    default_runtime_dir,
    relative_time,
    timeout_in_range,
)

from . import _hosts as hosts
from . import _render as render

KV_ACTIVE = "telegram.active.{chat}"
KV_OWNER = "telegram.owner.{session}"
KV_PRESSED = "telegram.pressed.{chat}"  # the bot's messages whose buttons were pressed
PRESSED_KEPT = 500  # per chat: far more than a user has unpressed buttons to go back to
KV_WROTE = "telegram.wrote.{chat}"  # which session wrote the bot's recent messages (for replies)
WROTE_KEPT = 300  # per chat: the messages a reply is likely to quote
#: Telegram refuses a whole message if one button's callback data is over 64 bytes (UTF-8)
MAX_BUTTON_DATA = 64
#: button data too long for Telegram, by the short token its button carries instead
#: (``<kind>:#<token>``): kept in the supervisor, so a press after a bot restart works
KV_BUTTONS = "telegram.buttons"
BUTTONS_KEPT = 200  # the newest; an older token is answered "expired" (fits the kv's 64 KiB)
TOKEN_MARK = "#"
#: messages the bot holds until a button under its question about them is pressed ("Send
#: it to Claude", "Deny, with this as the reason"): ``[message id, update id, text]``
KV_HELD = "telegram.held.{chat}"
HELD_KEPT = 50
#: the messages a Retry (``retry``) or a fresh conversation (``resume``) button sends
#: again: ``[supervisor's message id, send's fields, why]``, kept when the button is shown
KV_FAILED = "telegram.failed.{chat}"
FAILED_KEPT = 50
KEPT_BYTES = 48 * 1024  # of one such list, encoded (a kv value holds 64 KiB)

#: the Telegram user whose update is being handled (set by the bot's guard)
current_user: ContextVar[int | None] = ContextVar("current_user", default=None)
#: the forum topic (``message_thread_id``) of the update being handled, or of the event
#: being delivered: in a forum each topic is a place of its own with its own session
current_thread: ContextVar[int | None] = ContextVar("current_thread", default=None)


def place_key(chat: int) -> str:
    """The chat, or the chat's current topic, as a key: what a session is active in."""
    thread = current_thread.get()
    return str(chat) if thread is None else f"{chat}.t{thread}"


@dataclass
class Reply:
    text: str
    markdown: bool = False
    buttons: list[tuple[str, str]] = field(default_factory=list)
    quiet: bool = False  # sent without a notification (a by-the-way, not an answer)


SENT_KEPT = 500


class Link:
    """The bot's connection to the supervisor plus its chat → active session map, which
    the supervisor stores (kv), so a restarted bot knows every chat's session."""

    def __init__(self, client: AsyncClient, roots: tuple[Path, ...] = (), shared: bool = False) -> None:
        self.client = client
        self._active: dict[str, str | None] = {}  # by place_key
        self._kv: dict[str, Any] = {}
        self._roots = roots
        self.shared = shared
        #: session -> the directory a /cd asked for, until its button is pressed
        self.pending_moves: dict[str, str] = {}
        #: what was sent (``send``'s fields) by the supervisor's message id, the newest
        #: ``SENT_KEPT``: a Retry button sends a failed message again from here
        self.sent: OrderedDict[int, dict[str, Any]] = OrderedDict()
        #: what ``KV_HELD`` and ``KV_FAILED`` could not hold (too long): until a restart
        self._unkept: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
        #: one read-modify-write of a kv list at a time (the delivery loop and the
        #: handlers both change them)
        self._lists = asyncio.Lock()
        #: conversation id -> its directory, offered by /resume until its button is pressed
        self.pending_resumes: dict[str, str] = {}
        #: the other machines' supervisors (``[hosts.*]``): a session ``name@host`` is there
        self.remotes: hosts.Remotes | None = None

    def remember(self, message_id: int, fields: dict[str, Any]) -> None:
        self.sent[message_id] = {k: v for k, v in fields.items() if k != "idempotency_key"}
        self.sent.move_to_end(message_id)
        while len(self.sent) > SENT_KEPT:
            self.sent.popitem(last=False)

    async def visible(self, session: str) -> bool:
        """May the current user see and use ``session``? A session made from Telegram is
        its maker's unless the config shares them; one made elsewhere (claudectl) is the
        Unix user's, whom every allowlisted user works for."""
        if self.shared:
            return True
        owner = await self.kv_cached(KV_OWNER.format(session=session))
        return owner is None or owner == current_user.get()

    async def check_visible(self, session: str) -> None:
        """Raise the supervisor's own "no session" error for a session the current user
        may not see (a hidden one is answered as one that does not exist)."""
        if not await self.visible(session):
            raise RemoteError(ErrorCode.NOT_FOUND, f"no session named '{session}'")

    async def set_owner(self, session: str) -> None:
        user = current_user.get()
        if user is not None:
            await self.kv_put(KV_OWNER.format(session=session), user)

    async def roots(self) -> tuple[Path, ...]:
        """Where sessions may work (``telegram.roots``; by default the supervisor's
        sessions dir), each with its symlinks resolved."""
        if not self._roots:
            self._roots = (Path((await self.request("status"))["sessions_dir"]),)
        return tuple(r.resolve() for r in self._roots)

    async def request(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        routed = await hosts.route(self, op, timeout, args)  # (name@host: that host's supervisor)
        if routed is not None:
            return routed
        return await self.client.request(op, timeout=timeout, **args)

    async def active(self, chat: int, timeout: float | None = None) -> str | None:
        """The session of this chat (of its current topic, in a forum)."""
        place = place_key(chat)
        if place not in self._active:
            value = (await self.request("kv_get", timeout=timeout, key=KV_ACTIVE.format(chat=place)))["value"]
            # (unless set meanwhile: what was read is older than what was set)
            self._active.setdefault(place, value if isinstance(value, str) else None)
        return self._active[place]

    async def set_active(self, chat: int, name: str | None) -> None:
        place = place_key(chat)
        await self.request("kv_set", key=KV_ACTIVE.format(chat=place), value=name)
        self._active[place] = name

    async def kv_cached(self, key: str, timeout: float | None = None) -> Any:
        """A kv value only this bot writes (so a copy here stays true): read once."""
        if key not in self._kv:
            value = (await self.request("kv_get", timeout=timeout, key=key))["value"]
            self._kv.setdefault(key, value)  # (unless written meanwhile: what was read is older)
        return self._kv[key]

    async def first_press(self, chat: int, message_id: int) -> bool:
        """True the first time a button of this message is pressed, False ever after: a
        button is single-use, kept in the supervisor so a double tap or a press after a
        bot restart cannot do the thing twice (presses are handled one at a time)."""
        key = KV_PRESSED.format(chat=chat)
        pressed = await self.kv_cached(key)
        spent = list(pressed) if isinstance(pressed, list) else []
        if message_id in spent:
            return False
        await self.kv_put(key, [*spent, message_id][-PRESSED_KEPT:])  # before acting: never twice
        return True

    async def button_data(self, data: str) -> str:
        """``data`` (``<kind>:<argument>``) as a button can carry it: as it is if it fits
        Telegram's 64 bytes, else ``<kind>:#<token>``, the token kept with what it stands
        for (``pressed`` reads it back). An argument that itself starts with ``#`` is
        always shortened, so a literal one is never read as a token."""
        kind, _, argument = data.partition(":")
        if len(data.encode()) <= MAX_BUTTON_DATA and not argument.startswith(TOKEN_MARK):
            return data
        token = base64.urlsafe_b64encode(hashlib.sha256(data.encode()).digest()[:12]).decode()
        async with self._lists:
            table = await self._buttons()
            if table.get(token) != data:
                table.pop(token, None)
                table[token] = data
                await self.kv_put(KV_BUTTONS, dict(list(table.items())[-BUTTONS_KEPT:]))
        return f"{kind}:{TOKEN_MARK}{token}"

    async def pressed(self, data: str) -> str | None:
        """The data a pressed button was made with; None for a shortened one this bot no
        longer knows (too old, or forged)."""
        kind, _, argument = data.partition(":")
        if not argument.startswith(TOKEN_MARK):
            return data
        full = (await self._buttons()).get(argument[len(TOKEN_MARK):])
        return full if full is not None and full.partition(":")[0] == kind else None

    async def _buttons(self) -> dict[str, str]:
        table = await self.kv_cached(KV_BUTTONS)
        return {k: v for k, v in table.items() if isinstance(v, str)} if isinstance(table, dict) else {}

    async def _keep(self, key: str, entry: list[Any], kept: int) -> None:
        """Add ``entry`` (``[id, ...]``) to the kv list ``key`` (its newest ``kept``, within
        ``KEPT_BYTES``); one too long for it stays in this process only."""
        async with self._lists:
            entries = [e for e in await self._stored(key) if e[0] != entry[0]]
            if len(json.dumps(entry, ensure_ascii=False).encode()) > KEPT_BYTES // 2:
                self._unkept[(key, entry[0])] = entry
                while len(self._unkept) > kept:
                    self._unkept.popitem(last=False)
            else:
                entries = [*entries, entry][-kept:]
                while len(json.dumps(entries, ensure_ascii=False).encode()) > KEPT_BYTES:
                    entries.pop(0)
            await self.kv_put(key, entries or None)

    async def _stored(self, key: str) -> list[list[Any]]:
        """The entries of the kv list ``key``."""
        value = await self.kv_cached(key)
        return [e for e in value if isinstance(e, list) and e and isinstance(e[0], int)] \
            if isinstance(value, list) else []

    async def _entries(self, key: str) -> list[list[Any]]:
        """The entries of the kv list ``key``, then those only this process holds."""
        return await self._stored(key) + [e for (of, _), e in self._unkept.items() if of == key]

    async def _take(self, key: str, entry_id: int) -> list[Any] | None:
        """Remove and return the entry ``entry_id`` of the kv list ``key`` (None: not held)."""
        async with self._lists:
            if (key, entry_id) in self._unkept:
                return self._unkept.pop((key, entry_id))
            entries = await self._stored(key)
            found = next((e for e in entries if e[0] == entry_id), None)
            if found is not None:
                await self.kv_put(key, [e for e in entries if e is not found] or None)
            return found

    async def hold(self, chat: int, message_id: int, update_id: int, text: str) -> None:
        """Hold a user's message until a button under the bot's question about it is
        pressed (kept in the supervisor: the press works after a bot restart)."""
        await self._keep(KV_HELD.format(chat=chat), [message_id, update_id, text], HELD_KEPT)

    async def take_held(self, chat: int, message_id: int) -> tuple[int, str] | None:
        """(update id, text) of a held message, no longer held; None if it is not."""
        entry = await self._take(KV_HELD.format(chat=chat), message_id)
        if entry is None or len(entry) != 3 or not isinstance(entry[1], int) or not isinstance(entry[2], str):
            return None
        return entry[1], entry[2]

    async def keep_failed(self, chat: int, message_id: int, why: str) -> None:
        """Keep what a failed message was, for the button that sends it again (``retry``,
        or ``resume``: the fresh conversation's), after a bot restart too."""
        fields = self.sent.get(message_id)
        if fields is not None:
            await self._keep(KV_FAILED.format(chat=chat), [message_id, fields, why], FAILED_KEPT)

    async def take_failed(self, chat: int, message_id: int) -> dict[str, Any] | None:
        """The fields of a failed message, no longer kept; None if they are not."""
        entry = await self._take(KV_FAILED.format(chat=chat), message_id)
        if entry is not None and len(entry) == 3 and isinstance(entry[1], dict):
            return entry[1]
        return self.sent.get(message_id)

    async def failed_to_resume(self, chat: int, session: str) -> list[int]:
        """The messages of ``session`` this chat was told could not be sent because its
        conversation could not resume."""
        return [e[0] for e in await self._entries(KV_FAILED.format(chat=chat))
                if len(e) == 3 and e[2] == "resume" and isinstance(e[1], dict) and e[1].get("session") == session]

    async def note_author(self, chat: int, message_ids: list[int], session: str) -> None:
        """Remember that ``session`` wrote these messages (an answer, a prompt, a tool
        log): a reply to one of them goes to that session."""
        if not message_ids:
            return
        key = KV_WROTE.format(chat=chat)
        wrote = await self.kv_cached(key)
        pairs = [p for p in wrote if isinstance(p, list) and len(p) == 2] if isinstance(wrote, list) else []
        await self.kv_put(key, [*pairs, *([m, session] for m in message_ids)][-WROTE_KEPT:])

    async def author(self, chat: int, message_id: int) -> str | None:
        """The session that wrote this message of the bot, if it is one it remembers."""
        wrote = await self.kv_cached(KV_WROTE.format(chat=chat))
        for pair in wrote if isinstance(wrote, list) else []:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == message_id and isinstance(pair[1], str):
                return pair[1]
        return None

    async def kv_put(self, key: str, value: Any) -> None:
        """Write (or, for None, delete) a value read with ``kv_cached``. The copy here
        changes first: a handler that reads it while the supervisor stores it sees the new
        value (a reply to an answer just sent goes to the session that wrote it), and two
        read-modify-writes one after the other do not lose the first one's change."""
        self._kv[key] = value
        if value is None:
            await self.request("kv_delete", key=key)
        else:
            await self.request("kv_set", key=key, value=value)


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


NEW_USAGE = "Usage: /new <name> [dir] [persona] (dir: a path under an allowed root, e.g. ~/src/app)"


def _looks_like_path(arg: str) -> bool:
    return "/" in arg or arg.startswith(("~", "."))


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


async def new_session(link: Link, chat: int, args: list[str]) -> Reply:
    if args and hosts.is_remote(args[0]):
        return await new_remote(link, chat, args)
    dirs = [a for a in args[1:] if _looks_like_path(a)]
    personas = [a for a in args[1:] if not _looks_like_path(a)]
    if not args or len(dirs) > 1 or len(personas) > 1:
        return Reply(NEW_USAGE)
    fields: dict[str, Any] = {"session": args[0]}
    if personas:
        known = (await link.request("status")).get("personas") or []
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
        await link.request("create", **fields)
        await link.set_owner(args[0])
    except RemoteError as exc:
        if exc.code == "exists":
            if not await link.visible(args[0]):  # another user's: say nothing about it
                return Reply(render.name_taken_text(args[0]))
            if (await link.request("status", session=args[0]))["state"] == "archived":
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
        info = await link.request("create", **fields)
    except RemoteError as exc:
        if exc.code == "exists":
            return Reply(f"Session '{args[0]}' already exists. Use /switch {args[0]}.")
        raise
    await link.set_owner(args[0])
    await link.set_active(chat, args[0])
    return Reply(f"Session '{args[0]}' created on {host} in {info['cwd']} and active. Send a message to start.")


async def same_but_case(link: Link, name: str) -> str | None:
    """The user's session whose name is ``name`` but for case (``work`` for ``WORK``)."""
    for session in (await link.request("list", all=True))["sessions"]:
        if session["name"].casefold() == name.casefold() and await link.visible(session["name"]):
            return str(session["name"])
    return None


async def switch(link: Link, chat: int, args: list[str]) -> Reply:
    if len(args) != 1:
        active = await link.active(chat)
        others = [s["name"] for s in (await link.request("list"))["sessions"]
                  if s["name"] != active and await link.visible(s["name"])]
        return Reply("Usage: /switch <name>" + (", or pick one:" if others else ""),
                     buttons=[(f"Switch to {name}", f"switch:{name}") for name in others])
    name = args[0]
    if not hosts.is_remote(name) and name not in {s["name"] for s in (await link.request("list", all=True))["sessions"]}:
        name = await same_but_case(link, name) or name  # /switch WORK finds 'work'
    await link.check_visible(name)
    info = await link.request("status", session=name)
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
    listing = [s for s in (await link.request("list"))["sessions"] if await link.visible(s["name"])]
    if not listing:
        return Reply(render.NO_SESSIONS)
    pages = -(-len(listing) // SESSIONS_PAGE)
    page = int(args[0]) if args and args[0].isdigit() else 1
    if showing is not None:
        page = next((i // SESSIONS_PAGE + 1 for i, s in enumerate(listing) if s["name"] == showing), page)
    page = min(max(page, 1), pages)
    shown = listing[(page - 1) * SESSIONS_PAGE:page * SESSIONS_PAGE]
    for session in shown:  # does Claude wait for the user's answer there (⏳)?
        if session.get("live") and "activity" not in session:  # (a supervisor before #29's `activity`: ask)
            session["pending"] = (await link.request("status", session=session["name"])).get("pending")
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


@on_active_session
async def timeout(link: Link, active: str, args: list[str]) -> Reply:
    if not args:
        info = await link.request("status", session=active)
        return Reply(render.timeout_text(info["idle_timeout"]))
    try:
        minutes = int(args[0])
    except ValueError:
        return Reply(render.TIMEOUT_INVALID)
    if not timeout_in_range(minutes):
        return Reply(render.TIMEOUT_RANGE)
    await link.request("set_timeout", session=active, minutes=minutes)
    return Reply(f"Idle timeout set to {render.minutes_text(minutes * 60)} for session '{active}'.")


#: the model aliases Claude Code resolves (measured with the pinned CLI, 2.1.331); each
#: also takes a "[1m]" suffix (the 1M-token context)
MODEL_ALIASES = ("sonnet", "opus", "haiku", "opusplan", "best")
#: full model names of the families Claude Code knows (claude-sonnet-4-5,
#: claude-3-5-haiku, claude-opus-4-1-20250805); it passes anything else on to the API,
#: which refuses it, and the next turn fails
MODEL_NAME = re.compile(r"claude-(\d+-\d+-)?(opus|sonnet|haiku)(-\d+){0,2}(-\d{8})?")


def known_model(name: str) -> bool:
    base = name.removesuffix("[1m]")
    return base in MODEL_ALIASES or MODEL_NAME.fullmatch(base) is not None


def _model_buttons(current: str | None) -> list[tuple[str, str]]:
    return [(alias, f"model:{alias}") for alias in MODEL_ALIASES if alias != current]


@on_active_session
async def model(link: Link, active: str, args: list[str]) -> Reply:
    info = await link.request("status", session=active)
    if not args:
        return Reply(f"Model: {render.model_text(info)}\n\nUsage: /model <name>, or pick one:",
                     buttons=_model_buttons(info.get("model")))
    if len(args) > 1 or not (known_model(args[0]) or args[0] == info.get("claude_model")):
        return Reply(render.unknown_model_text(" ".join(args)[:60], MODEL_ALIASES),
                     buttons=_model_buttons(info.get("model")))
    await link.request("set_model", session=active, model=args[0])
    return Reply(f"Model set to {args[0]} for session '{active}'. Claude restarts with its history.")


MODES = tuple(m.value for m in PermissionMode)


@on_active_session
async def mode(link: Link, active: str, args: list[str]) -> Reply:
    current = (await link.request("status", session=active)).get("mode") or "ask"
    buttons = [(f"Mode {m}", f"mode:{m}") for m in MODES if m != current]
    if not args:
        return Reply(render.mode_text(current), buttons=buttons)
    if args[0] not in MODES or len(args) > 1:
        return Reply(f"Unknown mode '{' '.join(args)[:40]}'.\n\n" + render.mode_text(None), buttons=buttons)
    result = await link.request("set_mode", session=active, mode=args[0])
    if not result["changed"]:
        return Reply(f"Session '{active}' is already in mode {args[0]}.")
    return Reply(f"Permission mode set to {args[0]} for session '{active}'. Claude restarts with its history"
                 " (after the current answer).")


async def archive(link: Link, chat: int, args: list[str]) -> Reply:
    """Archive a session; one that is answering, or has messages waiting, is asked about
    first (archiving stops the answer and drops what waits)."""
    if len(args) != 1:
        return Reply("Usage: /archive <name>")
    name = args[0]
    await link.check_visible(name)
    info = await link.request("status", session=name)
    answering, waiting = info["state"] == "busy", int(info.get("queued") or 0)
    if answering or waiting:
        lost = [what for what, yes in (("stops the answer Claude is writing", answering),
                                       (f"drops the {render.messages_text(waiting)} waiting", waiting)) if yes]
        return Reply(f"Session '{name}' is busy: archiving it now {' and '.join(lost)}. Archive anyway?",
                     buttons=[(f"Archive '{name}' now", f"archive:{name}")])
    return await archive_now(link, chat, name)


async def archive_now(link: Link, chat: int, name: str) -> Reply:
    await link.check_visible(name)  # (a forged button)
    await link.request("archive", session=name)
    if await link.active(chat) == name:
        await link.set_active(chat, None)
    return Reply(f"Session '{name}' archived.")


@on_active_session
async def cancel(link: Link, active: str, args: list[str]) -> Reply:
    """Interrupt the running answer; with messages queued behind it, first ask whether
    they go too (asked before anything stops: the next one would start at once)."""
    info = await link.request("status", session=active)
    waiting = info["queued"]  # (not yet handed to Claude)
    if waiting > 0 and info["state"] == "busy":
        return Reply(f"Claude is answering, and {render.messages_text(waiting)}"
                     f" {'waits' if waiting == 1 else 'wait'} behind it. Stop what?",
                     buttons=[("Stop this answer", f"cancel:{active}"),
                              (f"Stop it and drop the {render.messages_text(waiting)}", f"cancelall:{active}")])
    return await interrupt(link, active)


async def interrupt(link: Link, session: str, drop_queued: bool = False) -> Reply:
    await link.check_visible(session)  # (a forged button)
    dropped = ""
    if drop_queued:  # before the interrupt: the keeper takes them in this order
        kept = (await link.request("drop_queued", session=session)).get("kept") or []
        dropped = " The queued messages were dropped." + (
            f" {render.messages_text(len(kept))} that joined the answer {'was' if len(kept) == 1 else 'were'}"
            f" already with Claude: it reads {'it' if len(kept) == 1 else 'them'} next." if kept else "")
    try:
        result = await link.request("interrupt", session=session)
    except RemoteError as exc:
        if exc.code == "not_busy":
            return await nothing_answering(link, session, dropped)
        raise
    if result.get("confirmed") is False:  # (nothing reached Claude, or it did not say so)
        return Reply(f"⚠️ Claude did not confirm the interrupt: {result.get('detail')}." + dropped)
    return Reply("Interrupting Claude..." + dropped)


async def nothing_answering(link: Link, session: str, dropped: str) -> Reply:
    """Claude is not answering in ``session``: messages that wait for it to start (a cold
    start, a resume) are what there is to cancel; else name the sessions of this user that
    do answer, with a button to stop each."""
    waiting = int((await link.request("status", session=session)).get("queued") or 0)
    if waiting and not dropped:
        await link.request("drop_queued", session=session)
        return Reply(f"Cancelled before Claude started on it: {render.messages_text(waiting)} not sent.")
    answering = [s["name"] for s in (await link.request("list"))["sessions"]
                 if s["state"] == "busy" and s["name"] != session and await link.visible(s["name"])]
    if not answering:
        return Reply("Nothing to cancel: Claude is not answering." + dropped)
    where = ", ".join(f"'{name}'" for name in answering)
    return Reply(f"Nothing to cancel in '{session}'. Claude is answering in {where}: stop it?" + dropped,
                 buttons=[(f"Stop '{name}'", f"cancel:{name}") for name in answering])


@on_active_session
async def status(link: Link, active: str, args: list[str]) -> Reply:
    return Reply(render.status_text(await link.request("status", session=active)))


def origin_of(chat: int, message_id: int | None = None) -> str:
    """Who sent a message: ``tg:<chat>[:<message id>[:<topic>]]`` — the answer is threaded
    to that message, in that forum topic."""
    thread = current_thread.get()
    origin = f"tg:{chat}" if message_id is None else f"tg:{chat}:{message_id}"
    return origin if thread is None or message_id is None else f"{origin}:{thread}"


def parse_origin(origin: Any) -> tuple[int, int | None, int | None] | None:
    """(chat, message id, topic) of an origin this bot wrote (None where absent), else None."""
    if not isinstance(origin, str) or not origin.startswith("tg:"):
        return None
    parts = origin[3:].split(":")
    try:
        numbers = [int(p) for p in parts[:3]]
    except ValueError:
        return None
    numbers += [None] * (3 - len(numbers))  # type: ignore[list-item]
    return numbers[0], numbers[1], numbers[2]


async def send(
    link: Link, chat: int, text: str, attachments: list[str] | None, update_key: str,
    timeout: float | None = None, message_id: int | None = None, session: str | None = None,
    queue: bool = False,
) -> Reply | None:
    """Forward a message to ``session`` (by default the chat's active one); None when
    there is nothing to say (the answer arrives through the event stream). While Claude
    answers there, the message joins that answer (quietly acknowledged), or with ``queue``
    waits for an answer of its own."""
    active = session or await link.active(chat, timeout)
    if active is None:  # a first message: offer to make a session for it
        return await first_offer(link)
    fields: dict[str, Any] = {"session": active, "text": text, "origin": origin_of(chat, message_id),
                              "idempotency_key": update_key}
    if attachments:
        fields["attachments"] = attachments
    if queue:
        fields["queue"] = True
    sent = await link.request("send", timeout=timeout, **fields)
    if isinstance(sent.get("message_id"), int):
        link.remember(sent["message_id"], fields)
    if sent.get("terminal") and not sent.get("duplicate"):  # kept until the terminal closes
        return Reply(render.waiting_text(active, sent["terminal"]), quiet=True)
    ahead = sent.get("ahead")
    warning = f"💸 {sent['budget_warning']}" if sent.get("budget_warning") else None  # (80 % of a daily cap)
    if sent.get("steering") and not sent.get("duplicate"):
        return Reply("\n".join(filter(None, [render.STEERED, warning])), quiet=True)
    if isinstance(ahead, int) and ahead > 0 and not sent.get("duplicate"):
        return Reply("\n".join(filter(None, [render.queued_text(ahead), warning])), quiet=True)
    return Reply(warning, quiet=True) if warning else None


async def first_offer(link: Link) -> Reply:
    """What a message sent before the chat has a session is answered: a button to make
    one, named as it will be."""
    name = free_name(await all_names(link), render.FIRST_SESSION)
    return Reply(render.NO_ACTIVE_OFFER, buttons=[(render.NEW_SESSION_BUTTON.format(name=name), f"new:{name}")])


async def all_names(link: Link) -> set[str]:
    """Every session's name, archived ones and other users' too (names are shared)."""
    return {s["name"] for s in (await link.request("list", all=True))["sessions"]}


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
    await link.request("unarchive", session=args[0])
    return Reply(f"Session '{args[0]}' is back. /switch {args[0]} to use it.")


async def fresh_conversation(link: Link, chat: int, name: str) -> Reply:
    """The user chose a fresh conversation after a failed resume: start it, and send it
    the messages of this chat that failed (the user does not type them again)."""
    await link.check_visible(name)  # (a forged button)
    await link.request("new_conversation", session=name)
    failed = await link.failed_to_resume(chat, name)
    resent = [m for m in failed if await resend(link, chat, m) is None]
    if not resent:
        return Reply(f"Session '{name}' starts a fresh conversation with your next message.")
    return Reply(f"Session '{name}' starts a fresh conversation: your {render.messages_text(len(resent))}"
                 f" {'was' if len(resent) == 1 else 'were'} sent to it again.")


async def resend(link: Link, chat: int, message_id: int) -> Reply | None:
    """Send a failed message again (its Retry button): None once it is sent, else why
    not. Its key is the failed message's, so a second press sends nothing more."""
    fields = await link.take_failed(chat, message_id)
    if fields is None:
        return Reply(render.RETRY_GONE)
    await link.check_visible(fields["session"])
    sent = await link.request("send", **fields, idempotency_key=f"tg-retry:{message_id}")
    if sent.get("duplicate"):
        return Reply(render.RETRY_DONE)
    link.remember(sent["message_id"], fields)
    return None


async def retry(link: Link, chat: int, message_id: int) -> Reply:
    """The Retry button under a failure."""
    why_not = await resend(link, chat, message_id)
    return why_not or Reply(render.RETRY_SENT, quiet=True)


@on_active_session
async def pwd(link: Link, active: str, args: list[str]) -> Reply:
    return Reply((await link.request("status", session=active))["cwd"])


@on_active_session
async def cd(link: Link, active: str, args: list[str]) -> Reply:
    """Ask before moving: Claude keeps a conversation per directory, so a move starts a
    fresh one (the button carries the move out)."""
    if hosts.is_remote(active):
        return Reply(hosts.unsupported_here(active, "/cd"))
    cwd = (await link.request("status", session=active))["cwd"]
    if not args:
        return Reply("Usage: /cd <dir> (a directory under the allowed roots)" + (", or pick one:" if (
            picks := await _cd_choices(link, cwd)) else ""), buttons=[(f"📁 {p}", f"cdpick:{p}") for p in picks])
    raw = " ".join(args)
    if not Path(raw).expanduser().is_absolute() and not raw.startswith("~"):
        raw = str(Path(cwd) / raw)
    where = await within_roots(link, raw)
    if isinstance(where, str):
        return Reply(f"⚠️ {where}.")
    if str(where) == cwd:
        return Reply(f"Session '{active}' already works in {cwd}.")
    link.pending_moves[active] = str(where)
    return Reply(f"Move session '{active}' to {where}? Claude keeps its conversations per directory: it starts a"
                 " fresh one there (the old one stays where it was).",
                 buttons=[(f"Move and start fresh in {where.name or where}", f"cd:{active}")])


CD_CHOICES = 8


async def _cd_choices(link: Link, cwd: str) -> list[str]:
    """Where a bare /cd offers to go: up (inside the roots), then the first subdirectories
    (names that fit in a button's data)."""
    up = [".."] if not isinstance(await within_roots(link, str(Path(cwd).parent)), str) else []
    with contextlib.suppress(OSError):
        subs = sorted(e.name for e in os.scandir(cwd) if e.is_dir() and not e.name.startswith(".")
                      and len(e.name.encode()) <= 50)
        return up + subs[:CD_CHOICES]
    return up


async def move(link: Link, session: str) -> Reply:
    """The /cd button: suspend the session if Claude runs, then move it."""
    target = link.pending_moves.pop(session, None)
    if target is None or not await link.visible(session):
        return Reply("This move is no longer pending; send /cd again.")
    await stop_claude(link, session)
    await link.request("set_cwd", session=session, cwd=target)
    return Reply(f"Session '{session}' now works in {target}, with a fresh conversation.")


async def stop_claude(link: Link, session: str) -> None:
    """Suspend the session if Claude runs, and wait until it stopped (within its grace
    period): what a fresh conversation or a move needs first."""
    if not (await link.request("status", session=session))["live"]:
        return
    with contextlib.suppress(RemoteError):
        await link.request("suspend", session=session)
    for _ in range(100):
        if not (await link.request("status", session=session))["live"]:
            return
        await asyncio.sleep(0.1)


@on_active_session
async def clear(link: Link, active: str, args: list[str]) -> Reply:
    """Claude Code's /clear, done by the supervisor: a fresh conversation it also resumes
    after a suspend (Claude's own /clear starts one the supervisor would not know)."""
    info = await link.request("status", session=active)
    if info["state"] == "busy" or info["queued"]:
        return Reply(f"Claude is answering in '{active}'. /cancel it first, then /clear.")
    await stop_claude(link, active)
    await link.request("new_conversation", session=active)
    return Reply(f"Session '{active}' starts a fresh conversation with your next message.")


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


LS_LIMIT = 60


async def ls(link: Link, chat: int, args: list[str]) -> Reply:
    """A directory's entries (the session's by default), only inside the allowed roots."""
    active = await link.active(chat)
    if hosts.is_remote(active):
        assert active is not None
        return Reply(hosts.unsupported_here(active, "/ls"))
    if args:
        base = active and (await link.request("status", session=active))["cwd"]
        raw = " ".join(args)
        if base and not Path(raw).expanduser().is_absolute():
            raw = str(Path(base) / raw)
        where = await within_roots(link, raw)
    elif active is not None:
        where = await within_roots(link, (await link.request("status", session=active))["cwd"])
    else:
        where = (await link.roots())[0]
    if isinstance(where, str):
        return Reply(f"⚠️ {where}.")
    entries = sorted(os.scandir(where), key=lambda e: (not e.is_dir(), e.name.lower()))
    lines = [e.name + ("/" if e.is_dir() else "") for e in entries[:LS_LIMIT]]
    more = f"\n… and {len(entries) - LS_LIMIT} more" if len(entries) > LS_LIMIT else ""
    return Reply(f"{where}:\n" + ("\n".join(lines) or "(empty)") + more)


async def usage(link: Link, chat: int, args: list[str]) -> Reply:
    """What Claude cost: in this chat's session, in all of the user's sessions, and what
    those spent today; the machine's total today (every user's and claudectl's
    sessions) only under that label."""
    status = await link.request("status")
    by_session = status.get("cost_today_by_session") or {}
    everything = [s for s in (await link.request("list", all=True))["sessions"] if await link.visible(s["name"])]
    lines = []
    active = await link.active(chat)
    mine = next((s for s in everything if s["name"] == active), None)
    if mine is not None:
        lines.append(f"This session ({active}): ${mine.get('cost_usd') or 0:.4f}")
    lines.append(f"All your sessions: ${sum(s.get('cost_usd') or 0 for s in everything):.4f}")
    lines.append(f"Today, your sessions: ${sum(by_session.get(s['name'], 0.0) for s in everything):.4f}")
    lines.append(f"Today, all sessions on this machine (everyone's): ${status['cost_today']:.4f}")
    return Reply("\n".join(lines))


# the desk (issue #25) ----------------------------------------------------------------------

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
        return Reply(f"{render.DESK} '{active}' is open in a terminal already ({render.terminal_where(terminal)})."
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
