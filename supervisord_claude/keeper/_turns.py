"""The session's messages on the keeper's side: the keeper's ``Turns``.

It owns the queue, the message Claude is answering (``current``: one turn at a time) and
steering. A message that comes while a turn runs and asks to steer is written to Claude
at once (``steer``); Claude echoes each user message when it takes it into the
conversation (``--replay-user-messages``), and the echo carries the uuid the message was
written with (``line``), so ``echo`` knows which one it was: a steered message is
``taken`` into the running turn (with any written before it: echoes come in order), and
the turn's result names them (``end``). One not taken when the turn ends is Claude's
next turn by itself — it is in Claude's input already — so ``next_steered`` makes it the
current message without writing it again; Claude takes several waiting ones as one turn
(an echo with a uuid of its own). A Claude that exited before it read them (the "already
in use" retry) is replaced by one that is given them all again (``carry_over``).

Every event about a message is returned (``Emit``) for the machine to pass on in order;
it never decides the session's state. It reads a message's attachments (through
``read_message``) when the message goes to Claude, and nothing else.
"""

from __future__ import annotations

import collections
import errno
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from protocol import EventKind

from .. import _claude
from .._wire import QueuedMessage
from ._actions import Action, Emit, Write

#: a message's stdin line for Claude, written with the uuid its echo will carry (OSError:
#: an attachment cannot be read)
ReadMessage = Callable[[QueuedMessage, str | None], bytes]


def message_line(msg: QueuedMessage, echo_id: str | None = None) -> bytes:
    return _claude.user_line(msg.text, msg.attachments, echo_id)


def failed(msg: QueuedMessage, reason: str) -> Emit:
    return Emit(EventKind.MESSAGE_FAILED, {"message_id": msg.id, "reason": reason})


def unreadable(exc: OSError) -> str:
    """Why a message cannot go to Claude, naming the attachment (a file deleted since it
    was sent is the usual cause)."""
    name = exc.filename if exc.filename is not None else "(unnamed)"
    if exc.errno == errno.ENOENT:
        return f"attachment {name} is gone"
    return f"cannot read attachment {name}: {exc.strerror or exc}"


class Turns:
    """The queue, the message in flight, and the messages steered into its turn."""

    def __init__(self, messages: Iterable[QueuedMessage], read_message: ReadMessage = message_line) -> None:
        self.queue: collections.deque[QueuedMessage] = collections.deque(messages)
        #: the id of every message this keeper took (held, answered or failed since): one
        #: handed over again — by a supervisor that adopted it, when the ``Deliver`` of the
        #: one that died came after its hello — is not Claude's twice
        self.given: set[int] = {m.id for m in self.queue}
        self.current: QueuedMessage | None = None
        #: messages written to Claude while the current turn runs that it has not taken yet
        self.steered: list[QueuedMessage] = []
        #: steered messages Claude took into the current turn (its result names them)
        self.joined: list[int] = []
        #: the uuid each message not taken yet was written with (its echo carries it)
        self._echo_ids: dict[str, int] = {}
        self._began = False  # Claude echoed the current turn's own message
        self._read_message = read_message

    def turn(self) -> dict[str, Any]:
        """``message_id`` of the message Claude is answering, for events of its turn."""
        return {"message_id": self.current.id} if self.current is not None else {}

    @property
    def busy(self) -> bool:
        """A turn runs or a message waits for one."""
        return self.current is not None or bool(self.queue)

    @property
    def first(self) -> QueuedMessage | None:
        """The message Claude answers now or next (the one a start or a failure is for)."""
        return self.current or (self.queue[0] if self.queue else None)

    def line(self, msg: QueuedMessage) -> bytes:
        """The stdin line of a message, with a new uuid its echo will carry (OSError: an
        attachment cannot be read)."""
        echo_id = str(uuid.uuid4())
        line = self._read_message(msg, echo_id)
        self._echo_ids[echo_id] = msg.id
        return line

    def line_or_failure(self, msg: QueuedMessage) -> bytes | Emit:
        """``line``, or the message's failure when an attachment cannot be read."""
        try:
            return self.line(msg)
        except OSError as exc:
            return failed(msg, unreadable(exc))

    def carry_over(self) -> list[Action]:
        """The lines of the current message and of the messages steered into its turn
        again, in order, for a Claude started after the one they were written to exited
        before reading them (the "already in use" retry; their events were said already).
        One whose attachment cannot be read now fails alone; when it is the current one,
        the steered ones, written still, are Claude's next turn (``next_steered``)."""
        assert self.current is not None
        self._echo_ids.clear()  # (the uuids the Claude that exited was given)
        self._began = False
        out: list[Action] = []
        for msg in [self.current, *self.steered]:
            line = self.line_or_failure(msg)
            if isinstance(line, bytes):
                out.append(Write(line))
                continue
            out.append(line)
            if msg is self.current:
                self.current = None
            else:
                self.steered.remove(msg)
        if self.current is None and self.steered:
            out.append(self.next_steered())
        return out

    def begin(self, msg: QueuedMessage) -> Emit:
        """``msg`` is Claude's turn now: its ``user`` event (reported before its line is
        written: a keeper killed in between leaves it marked as handed over, so it is
        reported failed rather than delivered twice)."""
        self.current = msg
        self._began = False
        return Emit(EventKind.USER, {"message_id": msg.id, "text": msg.text, "attachments": list(msg.attachments)})

    def waiting_to_steer(self) -> list[QueuedMessage]:
        """Take from the queue the messages that asked to steer (they came while Claude
        was starting): they join the turn just begun."""
        waiting = [m for m in self.queue if m.steer]
        for msg in waiting:
            self.queue.remove(msg)
        return waiting

    def steer(self, msg: QueuedMessage) -> list[Action]:
        """Write a message to Claude in the middle of the current turn: it joins the turn
        at Claude's next model request, or becomes the next turn if none comes."""
        assert self.current is not None
        line = self.line_or_failure(msg)
        if isinstance(line, Emit):
            return [line]
        self.steered.append(msg)
        # reported before the write, as a turn's own message is (never delivered twice)
        return [Emit(EventKind.STEERED, {"message_id": msg.id, "turn": self.current.id, "text": msg.text,
                                         "attachments": list(msg.attachments)}), Write(line)]

    def echo(self, echo_id: str) -> list[Emit]:
        """Claude took a user message into the conversation (its echo): the steered
        messages it took into the running turn, each ``taken``."""
        message_id = self._echo_ids.pop(echo_id, None)
        if self.current is None:
            return []
        if message_id == self.current.id:
            self._began = True
            return []
        ids = [m.id for m in self.steered]
        if message_id in ids:
            # taken into the running turn, with any written before it (echoes come in order)
            cut = ids.index(message_id) + 1
            taken, self.steered = self.steered[:cut], self.steered[cut:]
        elif message_id is None and not self._began and self.steered:
            # Claude began the turn with the waiting messages as one (an echo of its own)
            self._began = True
            taken, self.steered = self.steered, []
        else:
            return []
        events = []
        for msg in taken:
            self._echo_ids = {k: v for k, v in self._echo_ids.items() if v != msg.id}
            self.joined.append(msg.id)
            events.append(Emit(EventKind.TAKEN, {"message_id": msg.id, "turn": self.current.id}))
        return events

    def end(self) -> tuple[QueuedMessage | None, list[int]]:
        """The turn's result came: its message, and the steered messages that joined it;
        the ones not taken stay (``next_steered``)."""
        msg, joined = self.current, self.joined
        self.current, self.joined = None, []
        self._echo_ids = {k: v for k, v in self._echo_ids.items() if v in {m.id for m in self.steered}}
        return msg, joined

    def next_steered(self) -> Emit:
        """The turn ended before Claude took the first steered message: Claude answers it
        (with any after it) as its next turn by itself, as it is already in its input."""
        msg = self.steered.pop(0)
        self.current = msg
        self._began = False
        return Emit(EventKind.USER, {"message_id": msg.id, "text": msg.text, "attachments": list(msg.attachments),
                                     "steered": True})

    def fail_turn(self, reason: str) -> list[Emit]:
        """The turn cannot be answered: its message and those steered into it fail (the
        steered ones Claude took are answered in it: its failure is theirs)."""
        events = [failed(msg, reason) for msg in ([self.current] if self.current else []) + self.steered]
        self.current = None
        self.steered.clear()
        self.joined.clear()
        self._echo_ids.clear()
        return events

    def fail_queued(self, reason: str) -> list[Emit]:
        events = [failed(msg, reason) for msg in self.queue]
        self.queue.clear()
        return events

    def take_steered(self) -> tuple[int, ...]:
        """Give back the steered messages Claude never took (its ids): Claude was stopped,
        and a message it did not echo is not in the conversation."""
        ids = tuple(m.id for m in self.steered)
        self._echo_ids = {k: v for k, v in self._echo_ids.items() if v not in ids}
        self.steered.clear()
        self.given.difference_update(ids)  # (no longer this keeper's: handed over again, it gives it back again)
        return ids

    def take_queued(self) -> tuple[int, ...]:
        """Give the queue back (its ids), for the supervisor to deliver again."""
        ids = tuple(m.id for m in self.queue)
        self.queue.clear()
        self.given.difference_update(ids)
        return ids
