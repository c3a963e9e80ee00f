"""The interrupts the keeper asks Claude for (``keeper._interrupts``): a user's interrupt
is reported back exactly once, whichever way it ends; the keeper's own, never."""

from __future__ import annotations

import json

from supervisord_claude import _wire
from supervisord_claude.keeper._actions import Report
from supervisord_claude.keeper._interrupts import Interrupts


def test_a_users_interrupt_is_a_control_request_reported_once_claude_confirms_it() -> None:
    interrupts = Interrupts()
    write = interrupts.ask(report=True)
    assert json.loads(write.line)["request"] == {"subtype": "interrupt"} and write.interrupt_id is not None
    # the steered messages Claude has not taken: it answers them next
    assert interrupts.answered(write.interrupt_id, None, [4, 5]) == [
        Report(_wire.InterruptReport(True, "confirmed by Claude", (4, 5)))]
    assert interrupts.answered(write.interrupt_id, None, []) == []
    assert interrupts.void("Claude exited") == []


def test_a_refusal_says_claudes_error() -> None:
    interrupts = Interrupts()
    request_id = interrupts.ask(report=True).interrupt_id
    assert request_id is not None
    assert interrupts.answered(request_id, "no turn", ()) == [
        Report(_wire.InterruptReport(False, "Claude refused it: no turn"))]


def test_an_interrupt_that_could_not_be_written_is_reported_then_and_only_then() -> None:
    interrupts = Interrupts()
    request_id = interrupts.ask(report=True).interrupt_id
    assert request_id is not None
    assert interrupts.not_written(request_id) == [
        Report(_wire.InterruptReport(False, "Claude's input is closed (it is exiting)"))]
    assert interrupts.not_written(request_id) == [] and interrupts.answered(request_id, None, ()) == []


def test_claude_gone_before_it_answered_reports_each_waiting_interrupt_with_why() -> None:
    interrupts = Interrupts()
    first, second = interrupts.ask(report=True), interrupts.ask(report=True)
    assert first.interrupt_id != second.interrupt_id  # each request its own id
    assert interrupts.void("Claude was stopped") == [Report(_wire.InterruptReport(False, "Claude was stopped"))] * 2
    assert interrupts.void("again") == []


def test_the_keepers_own_interrupt_is_reported_by_nobody() -> None:
    interrupts = Interrupts()
    write = interrupts.ask(report=False)
    request_id = json.loads(write.line)["request_id"]
    assert write.interrupt_id is None
    assert interrupts.answered(request_id, None, ()) == [] and interrupts.void("gone") == []
