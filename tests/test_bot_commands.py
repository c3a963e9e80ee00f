"""The bot's command logic, with an in-memory stand-in for the supervisor where the
supervisor's answers do not matter (the tests that need them run against its real core,
in-process: tests/test_bot_core.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot import _commands as commands
from bot import _render as render
from bot import _settings as settings
from bot import _talk as talk
from bot._link import BUTTONS_KEPT, HELD_KEPT, KV_BUTTONS, KV_HELD, MAX_BUTTON_DATA, Link
from bot._render import NO_ACTIVE
from bot._reply import error_reply
from protocol import RemoteError


class FakeLink(Link):
    """Answers the few ops the commands use, and records every request."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]  (no client: request is answered here)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.kv: dict[str, Any] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.busy = False

    async def request(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        self.requests.append((op, args))
        name = args.get("session")
        if op == "kv_get":
            return {"value": self.kv.get(args["key"])}
        if op == "kv_set":
            self.kv[args["key"]] = args["value"]
            return {}
        if op == "create":
            if name in self.sessions:
                raise RemoteError("exists", "exists")
            self.sessions[name] = {"name": name, "state": "suspended", "live": False, "persona": args.get("persona"),
                                   "model": None, "idle_timeout": 600.0, "cost_usd": 0.0, "last_active": 1.0,
                                   "queued": 0}
            return self.sessions[name]
        if name is not None and name not in self.sessions:
            raise RemoteError("not_found", f"no session named '{name}'")
        if op == "status":
            return self.sessions[name] if name is not None else {"personas": ["reviewer"], "cost_today": 0.0}
        if op == "list":
            return {"sessions": list(self.sessions.values())}
        if op == "set_timeout":
            self.sessions[name]["idle_timeout"] = args["minutes"] * 60.0
            return {}
        if op == "interrupt":
            if not self.busy:
                raise RemoteError("not_busy", "not busy")
            return {}
        return {}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def link() -> FakeLink:
    return FakeLink()


def test_commands_without_an_active_session_hint_how_to_get_one(link: FakeLink) -> None:
    for command in (settings.timeout, settings.model, talk.cancel, commands.status):
        assert run(command(link, 7, [])).text == NO_ACTIVE
    offer = run(talk.send(link, 7, "hi", None, "k"))
    assert offer.text == render.NO_ACTIVE_OFFER and offer.buttons == [("Create session 'main'", "new:main")]
    assert [op for op, _ in link.requests if op not in ("kv_get", "list")] == []  # nothing was sent


def test_errors_become_short_replies() -> None:
    assert error_reply(RemoteError("not_found", "no session named 'x'")).text == "⚠️ no session named 'x'"
    from protocol import ConnectionFailed

    # a request that got no answer may still be carried out: never claim nothing was sent
    text = error_reply(ConnectionFailed("down")).text
    assert "did not answer" in text and "nothing was sent" not in text


def packed_size(value: Any) -> int:
    import msgpack

    return len(msgpack.packb(value, use_bin_type=True))


def test_long_button_data_becomes_a_token_a_restarted_bot_reads_back_and_the_table_stays_bounded(
        link: FakeLink) -> None:
    longest = "𠀀" * 63  # the most bytes a session name may have (252)
    short = run(link.button_data(f"archive:{longest}"))
    assert len(short.encode()) <= MAX_BUTTON_DATA and short.startswith("archive:#")
    assert run(link.button_data("switch:alpha")) == "switch:alpha"  # what fits stays as it is
    assert run(link.button_data("cdpick:#notes")) != "cdpick:#notes"  # never read as a token
    restarted = FakeLink()
    restarted.kv = link.kv
    assert run(restarted.pressed(short)) == f"archive:{longest}"
    assert run(restarted.pressed(short.replace("archive:", "switch:"))) is None  # a token names its kind
    for i in range(BUTTONS_KEPT + 50):
        run(link.button_data(f"archive:{longest}{i}"))
    table = link.kv[KV_BUTTONS]
    assert len(table) == BUTTONS_KEPT and packed_size(table) < 64 * 1024
    assert run(link.pressed(short)) is None  # the oldest: expired


def test_held_and_failed_messages_are_kept_within_the_kvs_bounds(link: FakeLink) -> None:
    for i in range(HELD_KEPT + 20):
        run(link.hold(1, i, 1000 + i, f"/word {i} " + "ж" * 2000))
    held = link.kv[KV_HELD.format(chat=1)]
    assert packed_size(held) < 64 * 1024 and len(held) < HELD_KEPT
    assert run(link.take_held(1, HELD_KEPT + 19)) == (1000 + HELD_KEPT + 19,
                                                               f"/word {HELD_KEPT + 19} " + "ж" * 2000)
    assert run(link.take_held(1, 0)) is None  # the oldest made room
    run(link.hold(1, 999, 5000, "x" * 40_000))  # too long for the kv: held by this process only
    assert all(entry[0] != 999 for entry in link.kv[KV_HELD.format(chat=1)])
    assert run(link.take_held(1, 999)) == (5000, "x" * 40_000)
    assert run(link.take_held(1, 999)) is None  # once
    link.remember(7, {"session": "alpha", "text": "hi", "attachments": [], "origin": "tg:1:5"})
    run(link.keep_failed(1, 7, "resume"))
    restarted = FakeLink()
    restarted.kv = link.kv
    assert run(restarted.failed_to_resume(1, "alpha")) == [7]
    assert run(restarted.take_failed(1, 7)) == {"session": "alpha", "text": "hi", "attachments": [], "origin": "tg:1:5"}
    assert run(restarted.take_failed(1, 7)) is None


class SlowKvLink(FakeLink):
    """A supervisor that takes its time: each kv request waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def request(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        if op.startswith("kv_"):
            await self.gate.wait()
        return await super().request(op, timeout, **args)


async def test_a_reply_to_an_answer_goes_to_its_writer_even_while_the_supervisor_stores_who_wrote_it() -> None:
    """The answer is in the chat as soon as Telegram took it; the user may reply before
    the supervisor has stored which session wrote it (a loaded machine): the reply must
    still go to that session, not to the chat's active one."""
    link = SlowKvLink()
    link.kv["telegram.wrote.7"] = [[10, "alpha"]]
    link.gate.set()
    assert await link.author(7, 10) == "alpha"  # (read once, then kept here)
    link.gate.clear()
    noting = asyncio.ensure_future(link.note_author(7, [11], "beta"))
    await asyncio.sleep(0)
    assert not noting.done()  # the supervisor has not stored it yet
    assert await link.author(7, 11) == "beta"
    assert await link.author(7, 10) == "alpha"
    link.gate.set()
    await noting
    assert link.kv["telegram.wrote.7"] == [[10, "alpha"], [11, "beta"]]


class StaleReadLink(FakeLink):
    """A kv_get answered with the value of when it was asked, arriving late."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def request(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        if op == "kv_get":
            value = self.kv.get(args["key"])
            await self.gate.wait()
            return {"value": value}
        return await super().request(op, timeout, **args)


async def test_a_value_read_before_a_write_does_not_undo_the_write() -> None:
    link = StaleReadLink()
    reading = asyncio.ensure_future(link.author(7, 11))  # not kept here yet: asks the supervisor
    await asyncio.sleep(0)
    await link.kv_put("telegram.wrote.7", [[11, "beta"]])  # written while that read is under way
    link.gate.set()
    await reading
    assert await link.author(7, 11) == "beta"
