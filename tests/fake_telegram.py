"""An in-process fake Telegram Bot API (aiohttp, on 127.0.0.1, in a thread).

Implements what the bot uses: getMe, getUpdates (long polling with offsets), sendMessage,
editMessageText, sendChatAction, answerCallbackQuery, getFile and file downloads, plus
429 responses with ``retry_after`` on demand. It refuses what Telegram refuses where the
bot could get it wrong: HTML it cannot parse, empty or over-long text, and button
callback data over 64 bytes. Tests play users by queueing updates and
read what the bot sent from ``sent``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

#: the tags Telegram's parse_mode HTML knows that the bot uses, as entity types
_HTML_TAGS = {"b": "bold", "i": "italic", "code": "code", "pre": "pre", "u": "underline", "s": "strikethrough"}


class _HtmlToEntities(HTMLParser):
    """parse_mode HTML as Telegram reads it: plain text plus entities; anything it would
    refuse ("can't parse entities") raises ValueError."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.entities: list[dict[str, Any]] = []
        self.open: list[tuple[str, int]] = []

    def _units(self) -> int:
        return len(self.text.encode("utf-16-le")) // 2

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS:
            raise ValueError(f"Unsupported start tag \"{tag}\"")
        self.open.append((tag, self._units()))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1][0] != tag:
            raise ValueError(f"Unmatched end tag \"{tag}\"")
        _, start = self.open.pop()
        if self._units() > start:
            self.entities.append({"type": _HTML_TAGS[tag], "offset": start, "length": self._units() - start})

    def handle_data(self, data: str) -> None:
        self.text += data


def parse_html(markup: str) -> tuple[str, list[dict[str, Any]]]:
    parser = _HtmlToEntities()
    parser.feed(markup)
    parser.close()
    if parser.open:
        raise ValueError(f"Can't find end tag corresponding to start tag \"{parser.open[-1][0]}\"")
    return parser.text, parser.entities

TOKEN = "123456:TEST-token"
#: a button's callback_data is 1-64 bytes (the Bot API's limit, in UTF-8 bytes, not characters)
MAX_CALLBACK_DATA_BYTES = 64
BOT_ID = 123456


class FakeTelegram:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.confirmed = 0  # every update_id below this was confirmed by an offset
        self.sent: list[dict[str, Any]] = []  # sendMessage calls, with assigned message_id
        self.edits: list[dict[str, Any]] = []
        self.markup_edits: list[dict[str, Any]] = []  # editMessageReplyMarkup calls
        self.actions: list[dict[str, Any]] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.rate_limited: list[dict[str, Any]] = []
        self._fail: dict[str, list[int]] = {}
        self._broken: dict[str, int] = {}
        self._refuse: dict[str, str] = {}
        self.drafts: list[dict[str, Any]] = []
        self.calls: list[tuple[float, str, Any]] = []  # every call: (when, method, chat_id)
        self.commands: list[tuple[str, str]] = []  # the "/" menu (setMyCommands)
        self.documents: list[dict[str, Any]] = []  # sendDocument and sendPhoto calls
        self.from_users: list[dict[str, Any]] = []  # every message users sent, as the bot gets it
        self.deleted: list[dict[str, Any]] = []
        self.broken: list[dict[str, Any]] = []
        self.held_chats: set[int] = set()  # see hold_chat
        self.held: list[dict[str, Any]] = []  # the calls held, as they came
        self.down = False  # unreachable: see go_down
        self.revoked = False  # the token no longer valid (as after /revoke at @BotFather)
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._new_update: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    # lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeTelegram:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Telegram did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._new_update = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._site = site
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)

    def go_down(self) -> None:
        """Telegram becomes unreachable: new connections are refused and one kept open is
        cut at its next request (users can still send messages: they wait, as on Telegram)."""
        with self._lock:
            self.down = True
        asyncio.run_coroutine_threadsafe(self._site.stop(), self._loop).result(10)

    def come_back(self) -> None:
        """Telegram is reachable again, on the same port."""
        async def listen() -> None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await self._site.start()

        asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        with self._lock:
            self.down = False

    # playing the user -------------------------------------------------------------------

    def _push(self, update: dict[str, Any]) -> int:
        with self._lock:
            update_id = next(self._update_ids)
            update["update_id"] = update_id
            self.updates.append(update)
        if self._new_update is not None:
            self._loop.call_soon_threadsafe(self._new_update.set)
        return update_id

    @staticmethod
    def _user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}

    def message(self, user_id: int, text: str, chat_id: int | None = None, **extra: Any) -> int:
        chat = chat_id or user_id
        msg: dict[str, Any] = {
            "message_id": next(self._message_ids), "date": int(time.time()),
            "chat": {"id": chat, "type": "private" if chat > 0 else "supergroup", "title": "g",
                     **({"is_forum": True} if "message_thread_id" in extra and chat < 0 else {})},
            "from": self._user(user_id), **extra,
        }
        if text:
            if "photo" in extra or "document" in extra:
                msg["caption"] = text
            else:
                msg["text"] = text
                if text.startswith("/"):
                    length = len(text.split()[0])
                    msg["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        self.from_users.append(msg)
        return self._push({"message": msg})

    def edit(self, user_id: int, message_id: int, text: str) -> int:
        """The user edits a message they sent earlier."""
        return self._push({"edited_message": {
            "message_id": message_id, "date": int(time.time()), "edit_date": int(time.time()),
            "chat": {"id": user_id, "type": "private"}, "from": self._user(user_id), "text": text}})

    def add_file(self, content: bytes, unique: str) -> dict[str, Any]:
        file_id = f"file-{unique}"
        self.files[file_id] = content
        return {"file_id": file_id, "file_unique_id": unique, "file_size": len(content)}

    def photo(self, user_id: int, content: bytes, caption: str = "", **extra: Any) -> int:
        """A photo (``media_group_id=...`` makes it part of an album)."""
        f = self.add_file(content, f"p{len(self.files)}")
        sizes = [{**f, "width": 90, "height": 90}]
        return self.message(user_id, caption, photo=sizes, **extra)

    def document(self, user_id: int, content: bytes, file_name: str, caption: str = "",
                 file_size: int | None = None, **extra: Any) -> int:
        f = self.add_file(content, f"d{len(self.files)}")
        if file_size is not None:
            f["file_size"] = file_size
        return self.message(user_id, caption, document={**f, "file_name": file_name}, **extra)

    def press(self, user_id: int, data: str, message_id: int) -> int:
        """The user taps a button of the bot's message ``message_id``: Telegram sends the
        message along as it is now (text, entities, buttons)."""
        with self._lock:
            shown = next((m for m in reversed(self.sent) if m["message_id"] == message_id), None)
            edits = [e for e in self.edits if int(e["message_id"]) == message_id and "text" in e]
        message: dict[str, Any] = {"message_id": message_id, "date": int(time.time()),
                                   "chat": {"id": user_id, "type": "private"}, "text": "x"}
        if shown is not None:
            message["text"] = edits[-1]["text"] if edits else shown["text"]
            if shown["entities"] and not edits:
                message["entities"] = shown["entities"]
            if shown["reply_markup"] and not edits:
                message["reply_markup"] = shown["reply_markup"]
        return self._push({"callback_query": {
            "id": str(next(self._message_ids)), "from": self._user(user_id), "chat_instance": "ci", "data": data,
            "message": message,
        }})

    def fail_next(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 Too Many Requests."""
        with self._lock:
            self._fail[method] = [retry_after] * times

    def refuse_next(self, method: str, description: str) -> None:
        """Answer the next call of ``method`` with 400 Bad Request: ``description``."""
        with self._lock:
            self._refuse[method] = description

    def break_call(self, method: str, number: int) -> None:
        """Answer the ``number``-th next call of ``method`` (1 = the next) with 502 Bad
        Gateway, as when Telegram does not answer in time; the message is not sent."""
        with self._lock:
            self._broken[method] = number

    def hold_chat(self, chat_id: int) -> None:
        """Every call about ``chat_id`` hangs (as when Telegram is slow for that chat) until
        ``release_chat``, then fails with 502 Bad Gateway, having done nothing."""
        with self._lock:
            self.held_chats.add(chat_id)

    def release_chat(self, chat_id: int) -> None:
        with self._lock:
            self.held_chats.discard(chat_id)

    # reading what the bot did --------------------------------------------------------------

    def texts(self, chat_id: int | None = None) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.sent if chat_id is None or m["chat_id"] == chat_id]

    def wait_for_text(self, predicate: Any, timeout: float = 60, chat_id: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for m in self.sent:
                    if (chat_id is None or m["chat_id"] == chat_id) and predicate(m["text"]):
                        return m
            time.sleep(0.05)
        raise AssertionError(f"no matching message within {timeout}s; sent: {self.texts()[-10:]}")

    def wait_count(self, n: int, timeout: float = 60, chat_id: int | None = None) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            texts = self.texts(chat_id)
            if len(texts) >= n:
                return texts
            time.sleep(0.05)
        raise AssertionError(f"{len(self.texts(chat_id))} messages within {timeout}s, expected {n}: {self.texts(chat_id)}")

    # the API ----------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, str):
                try:
                    params[key] = json.loads(value)
                except ValueError:
                    params[key] = value
            elif isinstance(value, web.FileField):  # an upload (sendDocument, sendPhoto)
                params[key] = {"filename": value.filename, "content": value.file.read()}
        return params

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    async def _api(self, request: web.Request) -> web.Response:
        if self.down:  # (a connection made before go_down)
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=503)
        method = request.match_info["method"]
        token = request.match_info["token"]
        if token != TOKEN or self.revoked:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        params = await self._params(request)
        chat_id = params.get("chat_id")
        with self._lock:
            self.calls.append((time.monotonic(), method, chat_id))
            held = chat_id in self.held_chats
            if held:
                self.held.append({"method": method, "params": params})
        if held:
            while chat_id in self.held_chats:
                await asyncio.sleep(0.05)
            return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)
        with self._lock:
            if method in self._refuse:
                description = self._refuse.pop(method)
                return web.json_response({"ok": False, "error_code": 400, "description": f"Bad Request: {description}"},
                                         status=400)
            if method in self._broken:
                self._broken[method] -= 1
                if self._broken[method] == 0:
                    del self._broken[method]
                    self.broken.append({"method": method, "params": params})
                    return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"},
                                             status=502)
            pending = self._fail.get(method)
            if pending:
                retry_after = pending.pop(0)
                self.rate_limited.append({"method": method, "params": params})
                return web.json_response(
                    {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry_after}",
                     "parameters": {"retry_after": retry_after}}, status=429)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._ok(True)
        return await handler(params)

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok({"id": BOT_ID, "is_bot": True, "first_name": "Claude", "username": "claude_test_bot",
                         "can_join_groups": False, "can_read_all_group_messages": False,
                         "supports_inline_queries": False})

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 1.0)  # short polls keep tests fast
        with self._lock:
            if offset:
                self.confirmed = max(self.confirmed, offset)
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ready = [u for u in self.updates if u["update_id"] >= offset][:100]
            if ready or time.monotonic() >= deadline:
                return self._ok(ready)
            assert self._new_update is not None
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                pass

    @staticmethod
    def _bad_buttons(params: dict[str, Any]) -> web.Response | None:
        """Telegram refuses the whole message when a button's callback data is not 1-64
        bytes (UTF-8): the 400 it gives then."""
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        for button in (b for row in rows or [] for b in row):
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
                return web.json_response({"ok": False, "error_code": 400,
                                          "description": "Bad Request: BUTTON_DATA_INVALID"}, status=400)
        return None

    @staticmethod
    def _parsed(params: dict[str, Any]) -> web.Response | None:
        """Apply parse_mode HTML in place (text + entities), or the 400 Telegram gives."""
        if params.get("parse_mode") != "HTML":
            return None
        try:
            params["text"], params["entities"] = parse_html(str(params.get("text", "")))
        except ValueError as exc:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": f"Bad Request: can't parse entities: {exc}"}, status=400)
        return None

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        refused = self._bad_buttons(params) or self._parsed(params)
        if refused is not None:
            return refused
        text = str(params.get("text", ""))
        if not text.strip():
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}, status=400)
        too_big = self._too_big(params)
        if too_big is not None:
            return too_big
        chat_id = int(params["chat_id"])
        with self._lock:
            message_id = next(self._message_ids)
            self.sent.append({"chat_id": chat_id, "text": text, "entities": params.get("entities") or [],
                              "reply_markup": params.get("reply_markup"), "message_id": message_id,
                              "disable_notification": bool(params.get("disable_notification")),
                              "link_preview_options": params.get("link_preview_options"),
                              "reply_parameters": params.get("reply_parameters"),
                              "message_thread_id": params.get("message_thread_id")})
        return self._ok({"message_id": message_id, "date": int(time.time()), "chat": {"id": chat_id, "type": "private"},
                         "text": text})

    async def _m_sendPhoto(self, params: dict[str, Any]) -> web.Response:
        return await self._m_sendDocument({**params, "document": params.get("photo"), "kind": "photo"})

    async def _m_sendDocument(self, params: dict[str, Any]) -> web.Response:
        refused = self._bad_buttons(params)
        if refused is not None:
            return refused
        document = params.get("document")
        if not isinstance(document, dict):
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: no file"},
                                     status=400)
        chat_id = int(params["chat_id"])
        with self._lock:
            message_id = next(self._message_ids)
            self.documents.append({"chat_id": chat_id, "filename": document["filename"],
                                   "content": document["content"], "message_id": message_id,
                                   "kind": params.get("kind", "document"), "caption": params.get("caption"),
                                   "disable_notification": bool(params.get("disable_notification"))})
        return self._ok({"message_id": message_id, "date": int(time.time()), "chat": {"id": chat_id, "type": "private"},
                         "document": {"file_id": f"doc-{message_id}", "file_unique_id": f"d{message_id}",
                                      "file_name": document["filename"]}})

    async def _m_setMyCommands(self, params: dict[str, Any]) -> web.Response:
        commands = params.get("commands")
        if isinstance(commands, str):
            commands = json.loads(commands)
        with self._lock:
            self.commands = [(c["command"], c["description"]) for c in commands or []]
        return self._ok(True)

    async def _m_sendMessageDraft(self, params: dict[str, Any]) -> web.Response:
        text = str(params.get("text", ""))
        if not text.strip() or len(text.encode("utf-16-le")) // 2 > 4096:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: bad draft text"},
                                     status=400)
        with self._lock:
            self.drafts.append({"chat_id": int(params["chat_id"]), "draft_id": int(params["draft_id"]),
                                "text": text, "at": time.monotonic(), "after_messages": len(self.sent)})
        return self._ok(True)

    async def _m_deleteMessage(self, params: dict[str, Any]) -> web.Response:
        with self._lock:
            self.deleted.append({"chat_id": int(params["chat_id"]), "message_id": int(params["message_id"])})
        return self._ok(True)

    #: Telegram's bounds: characters of a message (UTF-16 code units), buttons under it
    MAX_TEXT, MAX_BUTTONS = 4096, 100

    def _too_big(self, params: dict[str, Any]) -> web.Response | None:
        """The 400 Telegram gives a message over its bounds, or None."""
        if len(str(params.get("text", "")).encode("utf-16-le")) // 2 > self.MAX_TEXT:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}, status=400)
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        if isinstance(markup, dict) and sum(len(row) for row in markup.get("inline_keyboard", ())) > self.MAX_BUTTONS:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: reply markup is too long"}, status=400)
        return None

    async def _m_editMessageText(self, params: dict[str, Any]) -> web.Response:
        refused = self._bad_buttons(params) or self._parsed(params) or self._too_big(params)
        if refused is not None:
            return refused
        with self._lock:
            self.edits.append(params)
        return self._ok({"message_id": int(params["message_id"]), "date": int(time.time()),
                         "chat": {"id": int(params["chat_id"]), "type": "private"}, "text": params["text"]})

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> web.Response:
        refused = self._bad_buttons(params)
        if refused is not None:
            return refused
        with self._lock:
            self.markup_edits.append(params)
        return self._ok(True)

    async def _m_sendChatAction(self, params: dict[str, Any]) -> web.Response:
        with self._lock:
            self.actions.append({**params, "after_messages": len(self.sent)})
        return self._ok(True)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        with self._lock:
            self.callback_answers.append(params)
        return self._ok(True)

    async def _m_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = params["file_id"]
        if file_id not in self.files:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}, status=400)
        return self._ok({"file_id": file_id, "file_unique_id": file_id, "file_size": len(self.files[file_id]),
                         "file_path": f"documents/{file_id}"})

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])
