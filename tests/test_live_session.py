"""``LiveSession``, the supervisor's one owner of a live session, on its own: a real
store on a temp SQLite file, a recording keeper link, a ``FakeClock``, no process. What
it decides — whether a message goes to its keeper now or waits, whether a command is
held for a keeper that has not said hello, whether an answer goes out — is checked here
without a pool around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import SessionState
from supervisord_claude import _wire
from supervisord_claude._clock import FakeClock
from supervisord_claude._os import System
from supervisord_claude._permissions import PendingRequest
from supervisord_claude.supervisor._live import (
    Delivery,
    KeeperHandle,
    LiveSession,
    Phase,
    Shared,
    message_bytes,
)
from supervisord_claude.supervisor._store import DONE, Store

INTERRUPT_TIMEOUT = 10.0


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, _wire.Message]] = []

    def send(self, ident: bytes, msg: _wire.Message) -> bool:
        self.sent.append((ident, msg))
        return True


class Parts:
    def __init__(self, base: Path) -> None:
        self.store = Store(base / "store.db")
        self.store.create_session("a", "conversation-a", str(base), None, None)
        self.link = RecordingLink()
        self.clock = FakeClock()
        self.live = LiveSession("a", Shared(self.store, self.link, self.clock, System(), INTERRUPT_TIMEOUT))

    def message(self, text: str = "hello", own_turn: bool = False) -> int:
        message_id, _ = self.store.add_message("a", text, [], None, None, own_turn=own_turn)
        self.live.add(message_id, message_bytes(text, []), own_turn=own_turn)
        return message_id

    def keeper(self, phase: Phase, wire_version: int = _wire.WIRE_VERSION) -> KeeperHandle:
        """Give the session a keeper in ``phase`` (connected from READY on)."""
        keeper = KeeperHandle("a", 1, pid=100, wire_version=wire_version)
        for step in (Phase.STARTING, Phase.READY, Phase.DRAINING, Phase.SAID_BYE):
            if keeper.phase is phase:
                break
            keeper.change_phase(step)
            if step is Phase.READY:
                keeper.ident = b"a:100"
        self.live.keeper = keeper
        return keeper

    def pending(self, request_id: str = "r1") -> None:
        assert self.live.keeper is not None
        self.live.keeper.permissions[request_id] = PendingRequest.from_event(
            {"request_id": request_id, "tool_name": "Bash", "input": {"command": "ls"}})


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    p = Parts(tmp_path)
    yield p
    p.store.close()


def test_a_message_sent_while_the_keeper_is_starting_waits_for_its_hello(parts: Parts) -> None:
    keeper = parts.keeper(Phase.STARTING)
    message_id = parts.message()
    assert parts.live.deliver() is Delivery.WAITS
    assert parts.link.sent == [] and list(parts.live.queue) == [message_id]
    assert keeper.forwarded == [] and parts.live.queued() == 1


def test_a_message_for_a_session_without_a_keeper_asks_for_one(parts: Parts) -> None:
    parts.message()
    assert parts.live.deliver() is Delivery.NEEDS_KEEPER
    assert parts.link.sent == []


def test_a_ready_keeper_gets_the_queued_messages_in_order_and_holds_them(parts: Parts) -> None:
    keeper = parts.keeper(Phase.READY)
    first, second = parts.message("one"), parts.message("two", own_turn=True)
    assert parts.live.deliver() is Delivery.SENT
    delivered = [m.message for _, m in parts.link.sent if isinstance(m, _wire.Deliver)]
    assert [(m.id, m.text, m.steer) for m in delivered] == [(first, "one", True), (second, "two", False)]
    assert keeper.forwarded == [first, second] and not parts.live.queue
    assert parts.live.queued() == 2  # held by its keeper: still waiting for Claude


def test_a_message_no_longer_queued_in_the_store_is_not_delivered(parts: Parts) -> None:
    parts.keeper(Phase.READY)
    answered, waiting = parts.message("one"), parts.message("two")
    parts.store.set_message_status(answered, DONE)
    parts.live.deliver()
    assert [m.message.id for _, m in parts.link.sent if isinstance(m, _wire.Deliver)] == [waiting]


def test_a_draining_keeper_is_handed_nothing(parts: Parts) -> None:
    parts.keeper(Phase.DRAINING)
    parts.message()
    assert parts.live.deliver() is Delivery.WAITS
    assert parts.link.sent == []


def test_a_command_for_a_keeper_that_has_not_said_hello_is_kept_for_it(parts: Parts) -> None:
    keeper = parts.keeper(Phase.STARTING)
    assert parts.live.command(_wire.SetTimeout(60.0))
    assert parts.link.sent == [] and keeper.outbox == [_wire.SetTimeout(60.0)]


def test_a_command_is_refused_without_a_keeper_or_once_it_said_bye(parts: Parts) -> None:
    assert not parts.live.command(_wire.SetModel("opus"))
    parts.keeper(Phase.SAID_BYE)
    assert not parts.live.command(_wire.SetModel("opus"))
    assert parts.link.sent == []


def test_an_answer_to_a_request_claude_does_not_wait_on_is_refused(parts: Parts) -> None:
    parts.keeper(Phase.READY)
    parts.pending("r1")
    permit = _wire.Permit("r2", {"behavior": "allow"}, {"allow": True})
    assert not parts.live.answer(permit)
    assert parts.link.sent == [] and parts.live.pending("r1") is not None


def test_a_request_is_answered_once(parts: Parts) -> None:
    parts.keeper(Phase.READY)
    parts.pending("r1")
    permit = _wire.Permit("r1", {"behavior": "allow"}, {"allow": True})
    assert parts.live.answer(permit)
    assert not parts.live.answer(permit)  # (a second tap finds none)
    assert [m for _, m in parts.link.sent] == [permit] and parts.live.pending_requests() == []


def test_busy_is_what_its_keeper_last_said(parts: Parts) -> None:
    assert parts.live.state is None and not parts.live.busy
    keeper = parts.keeper(Phase.READY)
    keeper.reported(SessionState.BUSY.value)
    assert parts.live.busy
    keeper.reported("no such state")  # (never from our keeper; not taken)
    assert parts.live.state is SessionState.BUSY
    keeper.reported(SessionState.IDLE.value)
    assert not parts.live.busy


def test_an_interrupt_nobody_confirms_is_reported_after_its_timeout(parts: Parts) -> None:
    parts.keeper(Phase.READY)
    reports: list[dict[str, Any]] = []
    assert parts.live.interrupt(reports.append)
    assert [m for _, m in parts.link.sent] == [_wire.Interrupt()]
    parts.clock.advance(INTERRUPT_TIMEOUT - 1)
    assert reports == []
    parts.clock.advance(1)
    assert [r["confirmed"] for r in reports] == [False]


def test_an_interrupt_to_a_keeper_that_cannot_report_it_is_answered_at_once(parts: Parts) -> None:
    parts.keeper(Phase.READY, wire_version=_wire.INTERRUPT_REPORTS_SINCE - 1)
    reports: list[dict[str, Any]] = []
    assert parts.live.interrupt(reports.append)
    assert [r["confirmed"] for r in reports] == [False] and not parts.clock.pending


def test_an_interrupt_without_a_keeper_is_refused(parts: Parts) -> None:
    assert not parts.live.interrupt(lambda report: None)


def test_messages_a_keeper_gave_back_go_first_in_their_order(parts: Parts) -> None:
    later = parts.message("later")
    parts.live.put_back([7, 8])
    parts.live.put_back([8, later])  # (one already there is not doubled)
    assert list(parts.live.queue) == [7, 8, later]


def test_the_bytes_of_a_message_queued_before_a_restart_are_read_from_the_store(parts: Parts) -> None:
    message_id, _ = parts.store.add_message("a", "x" * 1000, [], None, None)
    parts.live.add(message_id)  # (its size is not known: requeued after a restart)
    assert parts.live.queued_bytes() == 1000


def test_only_a_keeper_that_steers_makes_a_message_join_the_turn(parts: Parts) -> None:
    assert not parts.live.steers
    parts.keeper(Phase.READY, wire_version=_wire.STEERING_SINCE - 1)
    assert not parts.live.steers
    parts.live.keeper = None
    parts.keeper(Phase.READY)
    assert parts.live.steers
