"""The bot's link to the supervisor (``Link``): its requests (a session ``name@host`` is
routed to that host by ``_hosts``) and what the bot keeps in the supervisor's kv, so a
restarted bot knows it: each chat's (topic's) active session, who owns a session, which
buttons were pressed, long button data, held and failed messages, which session wrote
which message. Also where a message came from (its ``origin``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from protocol import AsyncClient, AsyncOps, ErrorCode, Op, RemoteError

from . import _hosts as hosts

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
#: a chat's first messages, sent before it had a session, until the "Create session" button
#: under them is pressed: ``[first update id, [Telegram's updates, as dicts], text]`` (text
#: None: a file or an album, downloaded once the session exists)
KV_FIRST = "telegram.first.{chat}"
FIRST_KEPT = 20
#: the chats told that a session could not resume its conversation (``["<chat> <session>"]``),
#: until it tries again: every message that waited for that resume fails, the chat is told once
KV_RESUME_TOLD = "telegram.resume_told"
RESUME_TOLD_KEPT = 200
#: why each session that failed did (its ``failed`` state's ``[session, reason, detail]``),
#: until it starts again: /sessions and /status say it, after a bot restart too
KV_FAILURES = "telegram.failures"
FAILURES_KEPT = 100
FAILURE_DETAIL_CHARS = 300
#: what went wrong in a running turn (its ``error`` event): ``[message key, text]``, until
#: the turn ends and says it — also when the bot restarted in between
KV_TURN_ERRORS = "telegram.turn_errors"
TURN_ERRORS_KEPT = 50
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


SENT_KEPT = 500


class Link(AsyncOps):
    """The bot's connection to the supervisor plus its chat → active session map, which
    the supervisor stores (kv), so a restarted bot knows every chat's session."""

    def __init__(self, client: AsyncClient, roots: tuple[Path, ...] = (), shared: bool = False) -> None:
        self.client = client
        self._active: dict[str, str | None] = {}  # by place_key
        self._kv: dict[str, Any] = {}
        self._roots = roots
        self.shared = shared
        #: what was sent (``send``'s fields) by the supervisor's message id, the newest
        #: ``SENT_KEPT``: a Retry button sends a failed message again from here
        self.sent: OrderedDict[hosts.MessageKey, dict[str, Any]] = OrderedDict()
        #: what ``KV_HELD`` and ``KV_FAILED`` could not hold (too long): until a restart
        self._unkept: OrderedDict[tuple[str, hosts.MessageKey], list[Any]] = OrderedDict()
        #: one read-modify-write of a kv list at a time (the delivery loop and the
        #: handlers both change them)
        self._lists = asyncio.Lock()
        #: the other machines' supervisors (``[hosts.*]``): a session ``name@host`` is there
        self.remotes: hosts.Remotes | None = None

    def remember(self, message_id: int, fields: dict[str, Any]) -> None:
        """Keep what was sent as message ``message_id`` of its session's host."""
        key = hosts.message_key(message_id, str(fields.get("session")))
        self.sent[key] = {k: v for k, v in fields.items() if k != "idempotency_key"}
        self.sent.move_to_end(key)
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
            self._roots = (Path((await self.supervisor_status())["sessions_dir"]),)
        return tuple(r.resolve() for r in self._roots)

    async def request(self, op: Op | str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        routed = await hosts.route(self, op, timeout, args)  # (name@host: that host's supervisor)
        if routed is not None:
            return routed
        return await self.client.request(op, timeout=timeout, **args)

    async def active(self, chat: int, timeout: float | None = None) -> str | None:
        """The session of this chat (of its current topic, in a forum)."""
        place = place_key(chat)
        if place not in self._active:
            value = await self.kv_get(KV_ACTIVE.format(chat=place), timeout=timeout)
            # (unless set meanwhile: what was read is older than what was set)
            self._active.setdefault(place, value if isinstance(value, str) else None)
        return self._active[place]

    async def set_active(self, chat: int, name: str | None) -> None:
        place = place_key(chat)
        await self.kv_set(KV_ACTIVE.format(chat=place), name)
        self._active[place] = name

    async def kv_cached(self, key: str, timeout: float | None = None) -> Any:
        """A kv value only this bot writes (so a copy here stays true): read once."""
        if key not in self._kv:
            value = await self.kv_get(key, timeout=timeout)
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
        return [e for e in value if isinstance(e, list) and e and isinstance(e[0], (int, str))] \
            if isinstance(value, list) else []

    async def _entries(self, key: str) -> list[list[Any]]:
        """The entries of the kv list ``key``, then those only this process holds."""
        return await self._stored(key) + [e for (of, _), e in self._unkept.items() if of == key]

    async def _take(self, key: str, entry_id: hosts.MessageKey) -> list[Any] | None:
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

    async def keep_failed(self, chat: int, message: hosts.MessageKey, why: str) -> None:
        """Keep what a failed message was, for the button that sends it again (``retry``,
        or ``resume``: the fresh conversation's), after a bot restart too."""
        fields = self.sent.get(message)
        if fields is not None:
            await self._keep(KV_FAILED.format(chat=chat), [message, fields, why], FAILED_KEPT)

    async def take_failed(self, chat: int, message: hosts.MessageKey) -> dict[str, Any] | None:
        """The fields of a failed message, no longer kept; None if they are not."""
        entry = await self._take(KV_FAILED.format(chat=chat), message)
        if entry is not None and len(entry) == 3 and isinstance(entry[1], dict):
            return entry[1]
        return self.sent.get(message)

    async def failed_to_resume(self, chat: int, session: str) -> list[hosts.MessageKey]:
        """The messages of ``session`` this chat was told could not be sent because its
        conversation could not resume."""
        return [e[0] for e in await self._entries(KV_FAILED.format(chat=chat))
                if len(e) == 3 and e[2] == "resume" and isinstance(e[1], dict) and e[1].get("session") == session]

    async def keep_first(self, chat: int, updates: list[dict[str, Any]], text: str | None) -> bool:
        """Keep a message sent before the chat had a session (kept in the supervisor: the
        button that creates one sends it after a bot restart too). Whether one was kept
        already (the offer under it holds this one too)."""
        key = KV_FIRST.format(chat=chat)
        offered = bool(await self._entries(key))
        await self._keep(key, [updates[0]["update_id"], updates, text], FIRST_KEPT)
        return offered

    async def take_first(self, chat: int) -> list[tuple[list[dict[str, Any]], str | None]]:
        """The chat's first messages, in order, no longer kept: (updates, text)."""
        key = KV_FIRST.format(chat=chat)
        async with self._lists:
            entries = await self._entries(key)
            for held in [k for k in self._unkept if k[0] == key]:
                del self._unkept[held]
            if await self._stored(key):
                await self.kv_put(key, None)
        return sorted(((e[1], e[2]) for e in entries if len(e) == 3 and isinstance(e[1], list) and e[1]
                       and (e[2] is None or isinstance(e[2], str))), key=lambda e: int(e[0][0]["update_id"]))

    async def first_resume_notice(self, chat: int, session: str) -> bool:
        """True the first time ``chat`` is to be told that ``session`` could not resume,
        since it last tried (``resume_tried``), after a bot restart too."""
        told = f"{chat} {session}"
        if any(e[0] == told for e in await self._entries(KV_RESUME_TOLD)):
            return False
        await self._keep(KV_RESUME_TOLD, [told], RESUME_TOLD_KEPT)
        return True

    async def resume_tried(self, session: str) -> None:
        """``session`` tries to resume (or start) again: a failure is news once more."""
        async with self._lists:
            entries = await self._stored(KV_RESUME_TOLD)
            kept = [e for e in entries if not (isinstance(e[0], str) and e[0].partition(" ")[2] == session)]
            if len(kept) != len(entries):  # (the usual case: nothing to write)
                await self.kv_put(KV_RESUME_TOLD, kept or None)

    async def note_failure(self, session: str, reason: str, detail: str | None) -> None:
        """Keep why ``session`` failed (its ``failed`` state), for /sessions and /status."""
        await self._keep(KV_FAILURES, [session, reason, (detail or "")[:FAILURE_DETAIL_CHARS]], FAILURES_KEPT)

    async def forget_failure(self, session: str) -> None:
        """``session`` left its ``failed`` state (it starts again, or is archived)."""
        if any(e[0] == session for e in await self._entries(KV_FAILURES)):  # (no write otherwise)
            await self._take(KV_FAILURES, session)

    async def failure(self, session: str) -> tuple[str, str | None] | None:
        """(reason, detail) of ``session``'s failure, if the bot saw it."""
        for entry in await self._entries(KV_FAILURES):
            if entry[0] == session and len(entry) == 3 and isinstance(entry[1], str):
                return entry[1], entry[2] if isinstance(entry[2], str) and entry[2] else None
        return None

    async def with_failures(self, sessions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """``sessions`` (records), a failed one with ``failure`` added: why, if known."""
        return [{**s, "failure": await self.failure(s["name"])} if s.get("state") == "failed" else s
                for s in sessions]

    async def keep_turn_error(self, message: hosts.MessageKey, text: str) -> None:
        """Keep what went wrong in message ``message``'s turn, until it ends."""
        await self._keep(KV_TURN_ERRORS, [message, text], TURN_ERRORS_KEPT)

    async def take_turn_error(self, message: hosts.MessageKey) -> str | None:
        """What went wrong in that turn (None: nothing), no longer kept."""
        if not any(e[0] == message for e in await self._entries(KV_TURN_ERRORS)):
            return None  # (the usual case: read from the copy here, nothing written)
        entry = await self._take(KV_TURN_ERRORS, message)
        return entry[1] if entry is not None and len(entry) == 2 and isinstance(entry[1], str) else None

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
            await self.kv_delete(key)
        else:
            await self.kv_set(key, value)


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
