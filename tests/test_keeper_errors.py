"""A bug inside the keeper, in-process: the adapter (``keeper._keeper.Keeper``) around a
machine made to raise half-way through an event. The session must not be left stuck
(a turn never answered, a message never handed to Claude) nor fail silently: it fails
clearly — an ``error`` event naming the internal error, every message it held reported
not answered, Claude stopped, the keeper ended ``failed`` — while a bad frame from the
supervisor (input, not a bug) is logged and ignored. The last test proves it with real
processes: a supervisor, its keeper and the fake claude."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import types
from typing import Any

import pytest

from protocol import EventKind, Reason
from supervisord_claude import _claude, _wire
from supervisord_claude._clock import FakeClock
from supervisord_claude._os import System
from supervisord_claude._wire import QueuedMessage
from supervisord_claude.keeper._idle import IDLE_TIMER
from supervisord_claude.keeper._keeper import FAULT_BUG_ENV, FAULT_HELLO_BUG_ENV, Keeper
from supervisord_claude.keeper._machine import NOT_ANSWERED

from .conftest import SYSTEM, wait_for

CLAUDE_PID = 4242


class Signals(System):
    """The signals the keeper sends, recorded instead of sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def killpg(self, pgid: int, sig: int) -> bool:
        self.sent.append((pgid, sig))
        return True


def line(**obj: Any) -> bytes:
    return json.dumps(obj).encode()


RESULT = line(type="result", subtype="success", result="done", total_cost_usd=0.01)
TEXT = line(type="assistant", message={"content": [{"type": "text", "text": "more"}]})


class Harness:
    """A keeper whose Claude runs (as far as its machine knows: the process is a stand-in)
    and answers message 1, with message 2 steered into that turn and message 3 queued
    behind it; what it reports to the supervisor is recorded."""

    def __init__(self, idle: bool = False) -> None:
        spec = _wire.KeeperSpec(session="s", instance="i", runtime_dir="/nonexistent", claude_bin="claude",
                                cwd="/work", session_id="sid", started=False, idle_timeout=10)
        self.clock = FakeClock()
        self.signals = Signals()
        self.keeper = Keeper(spec, death_fd=None, clock=self.clock, system=self.signals)
        self.reports: list[Any] = []
        self.keeper.uplink.send_event = lambda kind, body: self.reports.append((kind, body))  # type: ignore[method-assign]
        self.keeper.uplink.send = self.reports.append  # type: ignore[method-assign]
        self.keeper._write = lambda data: True  # type: ignore[method-assign]
        m = self.keeper.machine
        m.start()
        self.run = m.runs.starting
        assert self.run is not None
        self.keeper.procs[self.run] = types.SimpleNamespace(pid=CLAUDE_PID, returncode=None)  # type: ignore[assignment]
        self.keeper.do(m.claude_started(self.run, CLAUDE_PID))
        self.keeper.do(m.claude_output(self.run, _claude.parse_line(line(type="system", subtype="init",
                                                                              session_id="sid"))))
        if not idle:
            for msg in (QueuedMessage(1, "first"), QueuedMessage(2, "steered", steer=True), QueuedMessage(3, "queued")):
                self.keeper.do(m.command(_wire.Deliver(msg)))
        self.reports.clear()

    def events(self, kind: EventKind) -> list[dict[str, Any]]:
        return [report[1] for report in self.reports if isinstance(report, tuple) and report[0] is kind]

    def sent(self, kind: type[Any]) -> list[Any]:
        return [r for r in self.reports if isinstance(r, kind)]


def assert_failed_clearly(h: Harness, held: list[int]) -> None:
    """What a user (and the supervisor) must see after a bug in the keeper."""
    [error] = h.events(EventKind.ERROR)
    assert "Internal error in the session's keeper (RuntimeError: a bug)" in error["message"]
    assert "The next message resumes the conversation" in error["message"]
    failed = h.events(EventKind.MESSAGE_FAILED)
    assert sorted(f["message_id"] for f in failed) == held  # none lost silently
    assert all(f["reason"] == NOT_ANSWERED for f in failed)
    [state] = h.events(EventKind.STATE)
    assert state["state"] == "failed" and state["reason"] == Reason.INTERNAL_ERROR.value
    assert state["detail"] == "RuntimeError: a bug"
    assert h.sent(_wire.Bye) == [_wire.Bye("failed", "internal-error")]
    assert h.signals.sent == [(CLAUDE_PID, signal.SIGKILL)]  # Claude stopped
    assert h.keeper.done.is_set() and h.keeper.exit_code == 1
    assert not h.keeper.timers


def a_bug(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug")


def test_a_bug_on_a_line_of_claudes_output_fails_the_session_clearly() -> None:
    h = Harness()
    h.keeper.machine.turns.end = a_bug  # type: ignore[method-assign]  # half-way through the turn's result
    h.keeper._claude_line(h.run, RESULT)
    assert_failed_clearly(h, [1, 2, 3])
    # what Claude still wrote (it was being killed) is not heard, nor said twice
    before = list(h.reports)
    h.keeper._claude_line(h.run, TEXT)
    assert h.reports == before and h.signals.sent[-1] == (CLAUDE_PID, signal.SIGKILL)


def test_a_bug_while_a_command_is_handled_fails_the_session_clearly() -> None:
    h = Harness()
    h.keeper.machine.settings.change = a_bug  # type: ignore[method-assign]
    h.keeper.on_frame(_wire.encode(_wire.SetModel("other")))
    assert_failed_clearly(h, [1, 2, 3])
    # a message that comes after goes back to the supervisor (the next keeper answers it)
    h.keeper.on_frame(_wire.encode(_wire.Deliver(QueuedMessage(4, "late"))))
    assert h.sent(_wire.Rejected) == [_wire.Rejected((4,))]


def test_a_bug_when_a_timer_fires_fails_the_session_clearly() -> None:
    h = Harness(idle=True)
    assert IDLE_TIMER in h.keeper.timers
    h.keeper.machine.idle.fired = a_bug  # type: ignore[method-assign]
    h.clock.advance(10)
    assert_failed_clearly(h, [])


def test_a_bug_when_claude_exits_fails_the_session_clearly() -> None:
    h = Harness()
    h.keeper.machine.idle.cancel = a_bug  # type: ignore[method-assign]
    h.keeper.feed(h.keeper.machine.claude_exited, h.run, 3, ("boom",), False)
    assert_failed_clearly(h, [1, 2, 3])


def test_a_bug_in_a_part_the_failure_uses_too_still_fails_every_message_and_ends_the_keeper() -> None:
    h = Harness()
    h.keeper.machine.prompts.void = a_bug  # type: ignore[method-assign]  # (it voids requests waiting)
    h.keeper.feed(h.keeper.machine.claude_exited, h.run, 3, ("boom",), False)
    assert_failed_clearly(h, [1, 2, 3])


def test_a_task_of_the_keeper_that_dies_of_a_bug_fails_the_session_clearly() -> None:
    # (e.g. the reader of Claude's output: nothing Claude writes would be heard any more)
    h = Harness()

    async def reader_with_a_bug() -> None:
        a_bug()

    async def run() -> None:
        task = h.keeper._spawn_task(reader_with_a_bug())
        await asyncio.wait([task])
        await asyncio.sleep(0)  # (its done callbacks run)

    asyncio.run(run())
    assert_failed_clearly(h, [1, 2, 3])


def test_a_bug_while_the_keeper_says_hello_fails_the_session_clearly_and_it_introduces_itself_all_the_same() -> None:
    """On a reconnect (a new supervisor) the machine raised while it made the keeper's
    hello: the link's task died, no hello went out and the supervisor found only a keeper
    that never spoke. The session fails as on any bug, and the keeper says hello by what
    stays true (who it is, that it failed), so it is taken on and its reports — why it
    failed, its messages — reach the supervisor."""
    h = Harness()
    h.keeper.machine.hello = a_bug  # type: ignore[method-assign]
    hello = h.keeper.uplink.hello()  # (what the link says on each connection)
    assert_failed_clearly(h, [1, 2, 3])
    assert (hello.session, hello.version, hello.state) == ("s", _wire.WIRE_VERSION, "failed")
    assert hello.started  # (the conversation exists: the next keeper resumes it)


def test_a_bad_frame_or_a_value_this_keeper_does_not_know_is_logged_and_ignored(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, logger="supervisord_claude.keeper"):
        h.keeper.on_frame(b"\xc1 not msgpack")
        h.keeper.on_frame(_wire.encode(_wire.Suspend("a-reason-of-a-newer-release")))
        h.keeper.on_frame(_wire.encode(_wire.SetMode("a-mode-of-a-newer-release")))
    assert "bad command from supervisor ignored" in caplog.text
    assert "Suspend from the supervisor ignored" in caplog.text and "SetMode from the supervisor ignored" in caplog.text
    assert h.reports == [] and h.signals.sent == [] and not h.keeper.done.is_set()
    h.keeper._claude_line(h.run, RESULT)  # the session goes on: the turn ends, the next one begins
    assert [r["message_id"] for r in h.events(EventKind.RESULT)] == [1]


def test_a_bug_in_a_keeper_fails_its_session_clearly_and_the_next_message_resumes_it(make_supervisor) -> None:
    sup = make_supervisor()
    sup.env[FAULT_BUG_ENV] = "trip the bug"  # the keeper's machine raises when it reads such a message
    sup.start()
    sup.ctl("new", "alpha", check=True)
    assert "echo: hello" in sup.ctl("send", "alpha", "hello", "--wait", check=True).stdout
    result = sup.ctl("send", "alpha", "please trip the bug", "--wait")
    assert result.returncode == 1 and "internal error in the session's keeper" in result.stderr
    assert "the next message resumes the conversation" in result.stderr
    failed = sup.wait_event("alpha", lambda e: e.get("reason") == "internal-error")
    assert failed["state"] == "failed" and "RuntimeError" in failed["detail"]
    wait_for(lambda: not sup.claude_pids() and sup.keeper_pid("alpha") is None, 10,
             what="the keeper to end and its Claude to be stopped")
    assert sup.session("alpha")["state"] == "failed"
    starts = len(sup.claude_starts())
    # the message that tripped it is not handed to a new keeper by itself (it would trip it
    # again); the next one resumes the conversation
    reply = sup.ctl("send", "alpha", "still there?", "--wait", check=True).stdout
    assert "history: 2 earlier" in reply and len(sup.claude_starts()) == starts + 1  # hello and its answer


def test_a_bug_while_an_adopted_keeper_says_hello_fails_its_session_clearly(make_supervisor, tmp_path) -> None:
    """Real processes: the keeper's hello to the restarted supervisor raises. Its session
    fails as an internal error (said, with each message it held reported not answered),
    not as a keeper that never said hello (reaped, "not delivered" without a word why)."""
    sup = make_supervisor()
    fault = tmp_path / "hello-bug"
    sup.env[FAULT_HELLO_BUG_ENV] = str(fault)  # while it exists, the machine raises in hello
    sup.start()
    sup.ctl("new", "alpha", check=True)
    gate = tmp_path / "gate"
    with sup.client() as c:
        running = c.request("send", session="alpha", text=f"waitfile:{gate} long job")["message_id"]
        sup.wait_received("long job")
        queued = c.request("send", session="alpha", text="queued behind it", queue=True)["message_id"]
    sup.wait_event("alpha", lambda e: e["kind"] == "state" and e["state"] == "busy")
    keeper = sup.keeper_pid("alpha")
    fault.touch()
    sup.kill9()
    sup.start()
    failed = sup.wait_event("alpha", lambda e: e["kind"] == "state" and e["state"] == "failed")
    assert failed["reason"] == Reason.INTERNAL_ERROR.value and "RuntimeError" in failed["detail"]
    assert any("Internal error in the session's keeper" in e.get("message", "")
               for e in sup.events("alpha") if e["kind"] == "error")
    for message_id in (running, queued):
        [outcome] = [e for e in sup.events("alpha") if e.get("message_id") == message_id
                     and e["kind"] in ("result", "message_failed")]
        assert outcome["kind"] == "message_failed" and outcome["reason"] == NOT_ANSWERED
    wait_for(lambda: keeper is not None and not SYSTEM.alive(keeper) and not sup.claude_pids(), 20,
             what="the keeper to end and its Claude to be stopped")
