"""The ops on messages: send (bounded by the queue's room and the daily caps; steering a
running turn), interrupt, drop what waits; and schedules, whose runs are sends.
"""

from __future__ import annotations

from typing import Any

from protocol import ErrorCode

from .. import _wire
from .._errors import OpError
from ._attachments import mib_text
from ._control import LaterReply
from ._live import message_bytes
from ._opbase import OpsBase


class MessageOps(OpsBase):
    """Messages to Claude, now or on a schedule."""

    def _check_queue_room(self, session: str, size: int) -> None:
        """Refuse (queue_full) a message the session's queue has no room for: past the
        count, or past the bytes (an empty queue takes any one message)."""
        live = self.pool.session(session)
        count, held = live.queued(), live.queued_bytes()
        limit = self.config
        if count >= limit.max_queued_messages or (count and held + size > limit.max_queued_bytes):
            raise OpError(ErrorCode.QUEUE_FULL,
                          f"the queue of session '{session}' is full: {count} messages ({mib_text(held)}) wait for"
                          f" Claude, and it takes {limit.max_queued_messages} messages or"
                          f" {mib_text(limit.max_queued_bytes)} (max_queued_messages, max_queued_mib). Nothing"
                          f" was sent: send it again once Claude has answered some, or drop them"
                          f" (claudectl drop-queued {session})")

    def op_send(self, ident: bytes, session: str, text: str, attachments: list[str] | None = None,
                origin: str | None = None, idempotency_key: str | None = None, queue: bool = False) -> dict[str, Any]:
        rec = self._session(session)
        files = attachments or []
        if not text.strip() and not files:
            raise OpError(ErrorCode.BAD_REQUEST, "a message needs text or an attachment")
        known = self.store.message_by_key(session, idempotency_key) if idempotency_key is not None else None
        if known is not None:  # a retry of a message it has: its answer, whatever the queue holds now
            return {"message_id": known, "seq": rec.last_seq, "state": rec.state.value, "duplicate": True,
                    "ahead": 0, "steering": False}
        self._check_queue_room(session, 0)  # (before anything is copied)
        self.budgets.check(session)  # past a daily cap no new turn starts
        taken = self.attachments.take(session, files)
        try:
            size = message_bytes(text, []) + taken.size
            self._check_queue_room(session, size)
            message_id, created = self.store.add_message(session, text, taken.paths, origin, idempotency_key,
                                                         own_turn=queue)
        except BaseException:
            taken.discard()
            raise
        steering = created and not queue and self._turn_runs(session)
        if created:
            self.attachments.hold(message_id, taken)
            self.pool.enqueue(session, message_id, size, own_turn=queue)
        else:
            taken.discard()
        # messages of this session that Claude answers before this one: those not handed to
        # it yet (this one among them), and the one it is answering; none for a message that
        # joins the running turn
        ahead = 0
        if created and not steering:
            live = self.pool.session(session)
            ahead = live.queued() - 1 + live.busy
        reply: dict[str, Any] = {"message_id": message_id, "seq": rec.last_seq, "state": rec.state.value,
                                 "duplicate": not created, "ahead": ahead, "steering": steering}
        warning = self.budgets.warning(session) if created else None
        if warning:
            reply["budget_warning"] = warning
        if self.terminals.holds(session):  # kept: answered once the terminal closes
            reply["terminal"] = self._terminal(session)
        return reply

    def _turn_runs(self, session: str) -> bool:
        """Whether a message sent now joins a turn: the session is answering, or a message
        before it waits to begin one (Claude is starting); and its keeper steers (a keeper
        of the release before an upgrade queues every message)."""
        live = self.pool.session(session)
        return live.steers and (live.busy or live.queued() > 0)

    def op_interrupt(self, ident: bytes, session: str) -> LaterReply:
        """Replied once the keeper says what became of it: ``{confirmed, detail}`` —
        confirmed by Claude (its control_response), or why not (at most
        ``interrupt_timeout`` later)."""
        self._session(session)
        live = self.pool.session(session)
        reply = LaterReply()
        if not live.busy or not live.interrupt(reply.resolve):
            queued = live.queued()
            if queued:
                raise OpError(ErrorCode.NOT_BUSY, f"session '{session}' has {queued} message(s) queued that Claude"
                              " has not started on yet (it is starting); nothing to interrupt yet")
            raise OpError(ErrorCode.NOT_BUSY, f"session '{session}' is not answering anything")
        return reply

    def op_drop_queued(self, ident: bytes, session: str) -> dict[str, Any]:
        """Every message of the session Claude has not started on is reported not
        delivered ("dropped"); the one it is answering goes on."""
        self._session(session)
        live = self.pool.session(session)
        self.pool.drop_queued(session)
        # those the keeper holds: it reports each one itself (a message_failed event)
        live.command(_wire.DropQueued())
        # those Claude already has in its input (steered, not taken yet) cannot be dropped:
        # they join the running turn, or are its next
        return {"kept": live.steered()}

    # schedules ----------------------------------------------------------------------------

    def _scheduled_send(self, session: str, text: str, origin: str | None, key: str) -> None:
        self.op_send(b"", session=session, text=text, origin=origin, idempotency_key=key)

    def op_schedule_add(self, ident: bytes, session: str, when: str, prompt: str | None = None,
                        origin: str | None = None, tz: str | None = None) -> dict[str, Any]:
        """A schedule: ``when`` is a cron expression or a plain form (``weekdays 9:00``),
        followed by the prompt unless ``prompt`` is given."""
        self._session(session)
        return self.scheduler.add(session, when, prompt, origin, tz).public()

    def op_schedules(self, ident: bytes, session: str | None = None) -> dict[str, Any]:
        return {"schedules": [s.public() for s in self.scheduler.store.schedules()
                              if session is None or s.session == session]}

    def op_schedule_set(self, ident: bytes, schedule: int, paused: bool) -> dict[str, Any]:
        return self.scheduler.set_paused(schedule, paused).public()

    def op_schedule_remove(self, ident: bytes, schedule: int) -> dict[str, Any]:
        return self.scheduler.remove(schedule).public()
