"""The typed client methods (``protocol._methods``): what each one sends, and that both
clients have them from the one declaration — against a recording client, and against
the supervisor's real core in-process (``InProcessClient``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from protocol import (
    AsyncClient,
    AsyncOps,
    BlockingOps,
    Client,
    InProcessClient,
    Op,
    RemoteError,
    SessionState,
)
from protocol._methods import op_methods

from .test_bot_core import Core


class Recorder(BlockingOps):
    """A blocking client that records each request and answers ``result``."""

    def __init__(self, result: dict[str, Any] | None = None) -> None:
        self.sent: list[tuple[Any, float | None, dict[str, Any]]] = []
        self.result = result or {}

    def request(self, op: Op | str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        self.sent.append((op, timeout, args))
        return self.result


def test_a_method_sends_its_op_with_the_fields_given_and_no_field_left_at_its_default() -> None:
    client = Recorder({"message_id": 3, "sessions": []})
    assert client.send("work", "hi")["message_id"] == 3
    client.send("work", "hi", attachments=["/tmp/a"], queue=True, idempotency_key="k", timeout=2.5)
    client.list_sessions()
    client.list_sessions(all=True)
    client.permit("work", "r1", False)  # (a required field is sent whatever its value)
    client.set_budget(None)  # (null: remove the cap)
    assert client.sent == [
        (Op.SEND, None, {"session": "work", "text": "hi"}),
        (Op.SEND, 2.5, {"session": "work", "text": "hi", "attachments": ["/tmp/a"], "idempotency_key": "k",
                        "queue": True}),
        (Op.LIST, None, {}),
        (Op.LIST, None, {"all": True}),
        (Op.PERMIT, None, {"session": "work", "request_id": "r1", "allow": False}),
        (Op.SET_BUDGET, None, {"usd": None}),
    ]


def test_a_method_is_called_as_declared_and_refuses_what_its_op_has_no_field_for() -> None:
    client = Recorder()
    with pytest.raises(TypeError):
        client.send("work", "hi", colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        client.send("work")  # type: ignore[call-arg]
    assert client.sent == []
    # help(client.send) shows the declaration: its fields, its docstring
    assert list(inspect.signature(client.send).parameters)[:2] == ["session", "text"]
    assert client.send.__doc__ and "Send a message" in client.send.__doc__


def test_a_field_named_like_the_methods_own_parameters_is_sent_as_a_field() -> None:
    client = Recorder({"version": "1.0"})
    assert client.hello(client="claude-telegram-bot")["version"] == "1.0"  # (``client`` is hello's field)
    assert Recorder.hello(client, client="claudectl")["version"] == "1.0"
    assert client.sent == [(Op.HELLO, None, {"client": "claude-telegram-bot"}), (Op.HELLO, None, {"client": "claudectl"})]


async def test_an_async_method_sends_a_field_named_client_too() -> None:
    class AsyncRecorder(AsyncOps):
        sent: list[dict[str, Any]] = []

        async def request(self, op: Op | str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
            self.sent.append(args)
            return {"version": "1.0"}

    recorder = AsyncRecorder()
    assert (await recorder.hello(client="claude-telegram-bot"))["version"] == "1.0"
    assert recorder.sent == [{"client": "claude-telegram-bot"}]


def test_a_method_called_on_the_class_takes_the_client_first_as_a_function_does() -> None:
    client = Recorder({"state": "suspended"})
    assert Recorder.suspend(client, "work") == {"state": "suspended"}  # (claudectl's table of one-op commands)
    assert client.sent == [(Op.SUSPEND, None, {"session": "work"})]


def test_the_replies_a_caller_reads_inside_a_list_come_unwrapped() -> None:
    assert Recorder({"sessions": [{"name": "a"}]}).list_sessions() == [{"name": "a"}]
    assert Recorder({"rules": ["Bash(ls *)"]}).rules("a") == ["Bash(ls *)"]
    assert Recorder({"value": 7}).kv_get("k") == 7
    assert Recorder({"existed": True}).kv_delete("k") is True


def test_the_async_client_gets_coroutine_methods_and_the_blocking_one_plain_ones() -> None:
    assert issubclass(Client, BlockingOps) and issubclass(AsyncClient, AsyncOps)
    asynchronous, blocking = AsyncClient("/nowhere"), Recorder()  # (neither connects)
    for name in op_methods():
        assert inspect.iscoroutinefunction(getattr(asynchronous, name)), name
        assert not inspect.iscoroutinefunction(getattr(blocking, name)), name


@pytest.fixture
async def core(tmp_path: Path) -> Any:
    harness = Core(tmp_path)
    yield harness
    harness.store.close()


async def test_the_async_methods_talk_to_the_real_core(core: Core) -> None:
    client = await InProcessClient(core.control).connect()
    try:
        made = await client.create("alpha", model="opus")
        assert made["name"] == "alpha" and made["model"] == "opus" and made["state"] == SessionState.SUSPENDED
        assert [s["name"] for s in await client.list_sessions()] == ["alpha"]
        sent = await client.send("alpha", "hello", idempotency_key="once")
        again = await client.send("alpha", "hello", idempotency_key="once")
        assert again["message_id"] == sent["message_id"] and again["duplicate"] and not sent["duplicate"]
        status = await client.status("alpha")
        assert status["queued"] == 1 and status["pending"] == []
        assert (await client.supervisor_status())["sessions"] == 1
        await client.kv_set("k", {"a": 1})
        assert await client.kv_get("k") == {"a": 1}
        assert await client.kv_delete("k") is True
        await client.set_timeout("alpha", 30)
        assert (await client.status("alpha"))["idle_timeout"] == 1800
        with pytest.raises(RemoteError) as refused:
            await client.status("nobody")
        assert refused.value.code == "not_found"
        put = await client.put_file("alpha", "notes.txt", b"some notes")
        assert (await client.read_file("alpha", put["path"]))["data"] == b"some notes"
        assert (await client.request(Op.LIST))["sessions"][0]["name"] == "alpha"  # (the generic call stays)
    finally:
        await client.close()
