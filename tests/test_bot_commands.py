"""The bot's command logic, with an in-memory stand-in for the supervisor where the
supervisor's answers do not matter (the tests that need them run against its real core,
in-process: tests/test_bot_core.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot import _commands as commands
from bot import _render as render
from bot._render import NO_ACTIVE
from protocol import RemoteError


class FakeLink(commands.Link):
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
    for command in (commands.timeout, commands.model, commands.cancel, commands.status):
        assert run(command(link, 7, [])).text == NO_ACTIVE
    offer = run(commands.send(link, 7, "hi", None, "k"))
    assert offer.text == render.NO_ACTIVE_OFFER and offer.buttons == [("Create session 'main'", "new:main")]
    assert [op for op, _ in link.requests if op not in ("kv_get", "list")] == []  # nothing was sent


def test_errors_become_short_replies() -> None:
    assert commands.error_reply(RemoteError("not_found", "no session named 'x'")).text == "⚠️ no session named 'x'"
    from protocol import ConnectionFailed

    # a request that got no answer may still be carried out: never claim nothing was sent
    text = commands.error_reply(ConnectionFailed("down")).text
    assert "did not answer" in text and "nothing was sent" not in text
