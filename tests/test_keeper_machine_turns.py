"""The session's messages on the keeper's side (``keeper._turns``): one turn at a time,
steering a running turn, and what Claude's echoes (matched by the uuid each message was
written with) say about which turn a steered message joined."""

from __future__ import annotations

import json

from protocol import EventKind
from supervisord_claude._wire import QueuedMessage
from supervisord_claude.keeper._actions import Action, Emit, Write
from supervisord_claude.keeper._turns import Turns


def uuid_of(actions: list[Action] | bytes) -> str:
    line = actions if isinstance(actions, bytes) else next(a.line for a in actions if isinstance(a, Write))
    return str(json.loads(line)["uuid"])


def kinds(events: list[Emit] | list[Action]) -> list[tuple[str, int]]:
    return [(e.kind.value, e.body["message_id"]) for e in events if isinstance(e, Emit)]


def running(*queued: QueuedMessage) -> tuple[Turns, str]:
    """Turns with message 1 in flight (and its line's uuid)."""
    turns = Turns([QueuedMessage(1, "first"), *queued])
    msg = turns.queue.popleft()
    line = turns.line(msg)
    assert turns.begin(msg) == Emit(EventKind.USER, {"message_id": 1, "text": "first", "attachments": []})
    return turns, uuid_of(line)


def test_the_message_in_flight_names_its_turn_and_is_the_first_before_the_queue() -> None:
    turns = Turns([QueuedMessage(1, "a")])
    assert turns.busy and turns.turn() == {} and turns.first is not None and turns.first.id == 1
    turns.begin(turns.queue.popleft())
    assert turns.busy and turns.turn() == {"message_id": 1} and turns.first.id == 1
    turns.end()
    assert not turns.busy and turns.first is None


def test_a_steered_message_is_written_at_once_and_taken_when_claude_echoes_it() -> None:
    turns, own = running()
    two, three = turns.steer(QueuedMessage(2, "also")), turns.steer(QueuedMessage(3, "and"))
    assert kinds(two) == [("steered", 2)] and two[0].body["turn"] == 1 and isinstance(two[1], Write)
    assert turns.echo(own) == []  # the turn's own message
    # echoes come in order: the echo of 3 says 2 was taken before it
    assert kinds(turns.echo(uuid_of(three))) == [("taken", 2), ("taken", 3)]
    assert turns.echo(uuid_of(two)) == []  # its echo, late, takes nothing again
    msg, joined = turns.end()
    assert msg is not None and msg.id == 1 and joined == [2, 3] and not turns.steered


def test_claude_taking_the_waiting_messages_as_one_echoes_a_uuid_of_its_own() -> None:
    turns, _ = running()
    turns.steer(QueuedMessage(2, "also"))
    turns.steer(QueuedMessage(3, "and"))
    assert kinds(turns.echo("made-by-claude")) == [("taken", 2), ("taken", 3)]


def test_an_unknown_echo_after_the_turn_began_takes_nothing() -> None:
    turns, own = running()
    turns.echo(own)
    turns.steer(QueuedMessage(2, "also"))
    assert turns.echo("made-by-claude") == [] and [m.id for m in turns.steered] == [2]


def test_a_steered_message_not_taken_by_the_turns_end_is_the_next_turn_without_a_second_write() -> None:
    turns, own = running()
    turns.echo(own)
    two, three = turns.steer(QueuedMessage(2, "late")), turns.steer(QueuedMessage(3, "later"))
    msg, joined = turns.end()
    assert msg is not None and msg.id == 1 and joined == []
    assert turns.next_steered() == Emit(EventKind.USER, {"message_id": 2, "text": "late", "attachments": [],
                                                          "steered": True})
    assert turns.turn() == {"message_id": 2}
    assert turns.echo(uuid_of(two)) == []  # Claude begins it: its own message
    assert kinds(turns.echo(uuid_of(three))) == [("taken", 3)]  # and the one after it joins it
    assert turns.end()[1] == [3]


def test_a_message_whose_attachment_cannot_be_read_fails_and_nothing_is_written() -> None:
    turns, _ = running()
    actions = turns.steer(QueuedMessage(2, "see", attachments=("/nonexistent/x.txt",)))
    assert kinds(actions) == [("message_failed", 2)] and actions[0].body["reason"] == "attachment /nonexistent/x.txt is gone"
    assert not turns.steered
    failure = turns.line_or_failure(QueuedMessage(3, "see", attachments=("/nonexistent/x.txt",)))
    assert isinstance(failure, Emit) and failure.body["message_id"] == 3


def test_an_attachment_that_is_no_ordinary_file_is_named_in_the_failure(tmp_path) -> None:
    turns, _ = running()
    failure = turns.line_or_failure(QueuedMessage(3, "see", attachments=(str(tmp_path),)))
    assert isinstance(failure, Emit)
    assert failure.body == {"message_id": 3, "reason": f"cannot read attachment {tmp_path}: not an ordinary file"}


def test_the_queued_messages_that_asked_to_steer_leave_the_queue_in_order() -> None:
    turns = Turns([QueuedMessage(1, "a", steer=True), QueuedMessage(2, "b"), QueuedMessage(3, "c", steer=True)])
    assert [m.id for m in turns.waiting_to_steer()] == [1, 3] and [m.id for m in turns.queue] == [2]


def test_a_failed_turn_fails_its_steered_messages_and_the_queue_can_go_back_or_fail() -> None:
    turns, _ = running(QueuedMessage(4, "q"), QueuedMessage(5, "r"))
    turns.steer(QueuedMessage(2, "also"))
    assert kinds(turns.fail_turn("Claude exited")) == [("message_failed", 1), ("message_failed", 2)]
    assert turns.current is None and not turns.steered and turns.turn() == {}
    assert turns.take_queued() == (4, 5) and turns.fail_queued("dropped") == []
