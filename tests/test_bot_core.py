"""The bot's command logic against the supervisor's real core, in-process: a
``protocol.InProcessClient`` (an ``AsyncClient`` whose frames go to
``InProcessControl`` instead of the control socket) over ``build_core`` with a real store
file and a keeper played by the test. Requests are decoded, validated, handled and
replied to as from the socket; no process starts. (Moved here from test_bot_commands,
where a hand-made imitation of the supervisor answered them; the socket itself stays
covered by the system tests.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import _sessions as sessions
from bot import _settings as settings
from bot import _talk as talk
from bot._link import Link
from bot._render import NO_SESSIONS, TIMEOUT_INVALID, TIMEOUT_RANGE
from protocol import InProcessClient, SessionState
from supervisord_claude import _wire
from supervisord_claude.supervisor._inprocess import InProcessControl

from .test_lifecycle import Harness


class Core(Harness):
    """The lifecycle harness, its clients served in-process."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.control = InProcessControl(self.clock)
        self.control.answer_with(self.core)

    def _send(self, ident: bytes, frame: bytes) -> None:  # (what the hub sends a client)
        self.control.send(ident, frame)

    def keeper_of(self, session: str) -> bytes:
        """Play the keeper the first send to ``session`` started, up to idle."""
        pid, _ = self.spawned()
        ident = self.hello(session, pid)
        self.state(ident, SessionState.IDLE)
        return ident


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    harness = Core(tmp_path)
    yield harness
    harness.store.close()


@pytest.fixture
async def link(core: Core) -> AsyncIterator[Link]:
    client = await InProcessClient(core.control).connect()
    yield Link(client)
    await client.close()


async def test_new_makes_the_session_active_and_refuses_duplicates(core: Core, link: Link) -> None:
    reply = await sessions.new_session(link, 7, ["alpha"])
    assert reply.text == "Session 'alpha' created and active. Send a message to start."
    assert await link.active(7) == "alpha"
    assert (await link.request("kv_get", key="telegram.active.7"))["value"] == "alpha"  # kept by the supervisor
    assert core.store.get_session("alpha") is not None
    assert (await sessions.new_session(link, 7, ["alpha"])).text == "Session 'alpha' already exists. Use /switch alpha."
    assert (await sessions.new_session(link, 7, [])).text == sessions.NEW_USAGE


async def test_timeout_validation_happens_before_the_supervisor_is_asked(core: Core, link: Link) -> None:
    await sessions.new_session(link, 7, ["alpha"])
    for bad, said in (("abc", TIMEOUT_INVALID), ("0", TIMEOUT_RANGE), ("121", TIMEOUT_RANGE)):
        assert (await settings.timeout(link, 7, [bad])).text == said
    assert core.store.get_session("alpha").idle_timeout is None  # nothing was set
    assert (await settings.timeout(link, 7, ["30"])).text == "Idle timeout set to 30 minutes for session 'alpha'."
    assert core.store.get_session("alpha").idle_timeout == 1800
    assert (await settings.timeout(link, 7, [])).text.startswith("Idle timeout: 30 minutes")


async def test_sessions_offers_buttons_for_the_other_sessions(link: Link) -> None:
    assert (await sessions.sessions(link, 7, [])).text == NO_SESSIONS
    await sessions.new_session(link, 7, ["alpha"])
    await sessions.new_session(link, 7, ["beta"])
    reply = await sessions.sessions(link, 7, [])
    assert reply.markdown and reply.buttons == [("Switch to alpha", "switch:alpha")]


async def test_send_carries_the_chat_as_origin_and_the_update_as_idempotency_key(core: Core,
                                                                                 link: Link) -> None:
    await sessions.new_session(link, 7, ["alpha"])
    assert await talk.send(link, 7, "hello", None, "tg:1:99") is None
    assert await talk.send(link, 7, "hello", None, "tg:1:99") is None  # Telegram sent the update again
    [(_, spec)] = core.fork.spawned
    assert [m.text for m in spec.messages] == ["hello"]  # once
    assert core.store.get_message(spec.messages[0].id).origin == "tg:7"  # with its chat


async def test_archive_clears_the_chats_active_session(core: Core, link: Link) -> None:
    await sessions.new_session(link, 7, ["alpha"])
    assert (await sessions.archive(link, 7, ["alpha"])).text == "Session 'alpha' archived."
    assert await link.active(7) is None
    assert core.store.get_session("alpha").state is SessionState.ARCHIVED


async def test_cancel_when_idle_and_when_busy(core: Core, link: Link) -> None:
    await sessions.new_session(link, 7, ["alpha"])
    assert (await talk.cancel(link, 7, [])).text == "Nothing to cancel: Claude is not answering."
    await talk.send(link, 7, "work", None, "tg:1:1")
    [(_, spec)] = core.fork.spawned
    ident = core.keeper_of("alpha")
    core.keeper_says(ident, _wire.KeeperEvent.of("user", {"message_id": spec.messages[0].id, "text": "work",
                                                          "attachments": []}))  # Claude has it
    core.state(ident, SessionState.BUSY)
    cancelling = asyncio.ensure_future(talk.cancel(link, 7, []))
    while not core.link.of(_wire.Interrupt) and not cancelling.done():  # (the bot's requests run)
        await asyncio.sleep(0)
    core.pool.on_keeper_message(ident, _wire.InterruptReport(True, "confirmed"))  # Claude confirmed it
    assert (await cancelling).text == "Interrupting Claude..."


class OneHost:
    """``Link.remotes`` with one other machine, ``gpu``, whose supervisor is in-process too."""

    def __init__(self, client: InProcessClient) -> None:
        self.hosts = {"gpu": None}
        self.waiting: dict[str, list[dict[str, Any]]] = {}
        self._client = client

    async def client(self, host: str, wait: float = 0.0) -> InProcessClient:
        assert host == "gpu"
        return self._client


async def test_the_typed_calls_about_name_at_host_go_to_that_hosts_supervisor(core: Core, link: Link,
                                                                              tmp_path: Path) -> None:
    gpu = Core(tmp_path / "gpu")
    gpu_client = await InProcessClient(gpu.control).connect()
    link.remotes = OneHost(gpu_client)  # type: ignore[assignment]
    try:
        reply = await sessions.new_session(link, 7, ["work@gpu"])  # (link.create, routed by Link.request)
        assert reply.text.startswith("Session 'work@gpu' created on gpu in ")
        assert gpu.store.get_session("work") is not None and core.store.get_session("work") is None
        assert (await link.status("work@gpu"))["name"] == "work@gpu"  # named as the chats know it
        assert await link.active(7) == "work@gpu"  # (the chat's state stays in the local kv)
        assert await link.kv_get("telegram.active.7") == "work@gpu"
    finally:
        await gpu_client.close()
        gpu.store.close()


async def test_a_sessions_directory_is_the_one_it_has_now_after_cd(tmp_path: Path) -> None:
    """/help's custom commands and an unknown /command are looked up in the session's
    directory: after /cd, the new one's (the bot kept the first one it read)."""
    from bot._config import BotConfig
    from bot._core import Core as BotCore

    class Link:
        cwd = str(tmp_path / "first")

        async def status(self, session: str) -> dict[str, str]:
            return {"cwd": self.cwd}

    bot = BotCore(BotConfig("123:token", frozenset({7}), "http://127.0.0.1:9", tmp_path))
    bot.link = Link()  # type: ignore[assignment]
    assert await bot.session_dir("alpha") == str(tmp_path / "first")
    Link.cwd = str(tmp_path / "second")  # (/cd)
    assert await bot.session_dir("alpha") == str(tmp_path / "second")
    assert await bot.session_dir("work@gpu") is None  # another machine's: nothing read here
