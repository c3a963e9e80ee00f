"""One word per concept (``protocol._vocabulary``, docs/protocol.md "Vocabulary"), and
protocol version 1 kept: a request with the old names (``mode``, ``after``) does what it
did, the new ones (``permission_mode``, ``after_seq``, ``after_id``) do the same, and what
the supervisor reports carries both names — against the supervisor's real core
in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest

from protocol import (
    EventKind,
    InProcessClient,
    Op,
    RemoteError,
    ValidationError,
    permission_mode_of,
    validate_request,
)
from supervisord_claude import _wire

from .test_bot_core import Core
from .test_protocol_methods import Recorder


def v1(op: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "id": 1, "op": op, **fields}


def test_a_v1_field_reaches_the_handler_under_its_name_now() -> None:
    assert validate_request(v1("create", session="a", mode="plan")).args == {"session": "a", "permission_mode": "plan"}
    assert validate_request(v1("set_mode", session="a", mode="ask")).args == {"session": "a", "permission_mode": "ask"}
    assert validate_request(v1("subscribe", session="a", after=3)).args == {"session": "a", "after_seq": 3}
    assert validate_request(v1("subscribe", after=3)).args == {"after_id": 3}
    with pytest.raises(ValidationError, match="'permission_mode' and its old name 'mode' were both given"):
        validate_request(v1("set_mode", session="a", mode="ask", permission_mode="plan"))
    with pytest.raises(ValidationError, match="must be one of"):  # (the old name is checked as the new)
        validate_request(v1("create", session="a", mode="yolo"))


def test_the_python_methods_take_the_new_names_and_send_the_ones_every_v1_supervisor_reads() -> None:
    client = Recorder()
    client.create("a", permission_mode="plan")
    client.set_mode("a", "ask")
    client.permit("a", "r1", True, permission_mode="accept-edits")
    assert [fields for _, _, fields in client.sent] == [
        {"session": "a", "mode": "plan"}, {"session": "a", "mode": "ask"},
        {"session": "a", "request_id": "r1", "allow": True, "mode": "accept-edits"}]


@pytest.fixture
def core(tmp_path: Path) -> Core:
    harness = Core(tmp_path)
    yield harness  # type: ignore[misc]
    harness.store.close()


async def test_v1_requests_work_as_before_and_replies_and_events_carry_both_names(core: Core) -> None:
    client = await InProcessClient(core.control).connect()
    try:
        old = await client.request(Op.CREATE, session="old", mode="plan")  # a client of protocol 1
        new = await client.request(Op.CREATE, session="new", permission_mode="plan")
        assert (old["mode"], old["permission_mode"]) == (new["mode"], new["permission_mode"]) == ("plan", "plan")
        changed = await client.request(Op.SET_MODE, session="old", mode="accept-edits")
        assert (changed["mode"], changed["permission_mode"], changed["changed"]) == ("accept-edits",) * 2 + (True,)
        await client.request(Op.SET_MODE, session="new", permission_mode="accept-edits")
        for name in ("old", "new"):
            status = await client.status(name)
            assert (status["mode"], status.get("permission_mode")) == ("accept-edits", "accept-edits")
            [settings] = [e for e in core.events(name) if e["kind"] == EventKind.SETTINGS]
            assert (settings["mode"], settings["permission_mode"]) == ("accept-edits", "accept-edits")
    finally:
        await client.close()


async def test_a_keepers_settings_event_with_the_v1_name_is_stored_with_both(core: Core) -> None:
    """A keeper (of this release or the one before) says Claude changed its mode as ``mode``."""
    core.op("create", session="a")
    core.op("send", session="a", text="go")
    pid, _ = core.spawned()
    ident = core.hello("a", pid)
    core.keeper_says(ident, _wire.KeeperEvent.of("settings", {"mode": "accept-edits"}))
    core.clock.advance(0)
    [settings] = [e for e in core.events("a") if e["kind"] == EventKind.SETTINGS]
    assert (settings["mode"], settings["permission_mode"]) == ("accept-edits", "accept-edits")
    assert permission_mode_of(core.op("status", session="a")) == "accept-edits"


async def test_subscribe_after_a_sessions_seq_or_a_global_id_by_either_name(core: Core) -> None:
    for name in ("a", "b"):
        core.op("create", session=name)  # each: one state event, seq 1
    client = await InProcessClient(core.control).connect()
    try:
        ids = {e["session"]: e["id"] for name in ("a", "b") for e in core.events(name)}
        for fields in ({"session": "b", "after": 1}, {"session": "b", "after_seq": 1}):
            assert (await client.request(Op.SUBSCRIBE, **fields))["position"] == ids["b"]  # b's seq 1 is that id
        for fields in ({"after": ids["a"]}, {"after_id": ids["a"]}):
            assert (await client.request(Op.SUBSCRIBE, **fields))["position"] == ids["a"]
        with pytest.raises(RemoteError, match="'after_id' counts all sessions' events"):
            await client.request(Op.SUBSCRIBE, session="b", after_id=1)
        with pytest.raises(RemoteError, match="'after_seq' counts one session's events"):
            await client.request(Op.SUBSCRIBE, after_seq=1)
        sub = await client.subscribe("b", after_seq=0)
        event = await sub.next(timeout=5)
        assert event is not None and (event["session"], event["seq"]) == ("b", 1)
        with pytest.raises(ValueError, match="after_id is a global event id"):
            await client.subscribe("b", after_id=0)
    finally:
        await client.close()


def test_a_keepers_hello_of_an_earlier_release_says_resumed_for_started() -> None:
    frame = msgpack.packb({"t": "hello", "pid": 7, "version": 6, "session": "a", "resumed": True})
    [hello] = _wire.decode_all(frame)
    assert isinstance(hello, _wire.Hello) and hello.started is True
    assert _wire.decode(_wire.encode(_wire.Hello(7, session="a", started=True))).started is True
