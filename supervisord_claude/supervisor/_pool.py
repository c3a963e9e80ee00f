"""The keeper pool: the per-session message queues, one ``KeeperHandle`` per keeper
process (``_live``), the fork-server link and the keeper socket.

``KeeperPool`` is built in layers: its core (``_poolcore``: the parts, the live
sessions, dispatch, spawn, shutdown), the fork server's reports and keeper exits
(``_poolexits``), and here what the keepers send (hello, adoption, reports, acks).
"""

from __future__ import annotations

import collections
import contextlib
import logging
from typing import Any

import msgpack

from protocol import EventKind, SessionState

from .. import _wire
from .._errors import StoreError
from .._permissions import PendingRequest
from ._eventlog import PLAIN_KINDS
from ._live import (
    CONNECTED,
    KeeperHandle,
    Phase,
    interrupt_reported,
)
from ._poolcore import ForkServer, PoolListener
from ._poolexits import BYE_GRACE, PoolExits

log = logging.getLogger("supervisord_claude")
#: an event kind by its wire name (an event of an unknown one is dropped)
_KINDS = {kind.value: kind for kind in EventKind}
#: (an enum member read from its class costs ~0.2 µs on Python 3.11, each time: the
#: per-event paths compare with these)
_STATE = EventKind.STATE
#: the kinds of event that change what the pool knows of a keeper (see ``_on_event``)
_CHANGE_HANDLE = frozenset({EventKind.PERMISSION_REQUEST, EventKind.PERMISSION_RESOLVED, EventKind.STEERED,
                            EventKind.TAKEN, EventKind.USER, EventKind.MESSAGE_FAILED})


class KeeperPool(PoolExits):
    # messages of keepers ----------------------------------------------------------------

    def _by_ident(self, ident: bytes) -> KeeperHandle | None:
        # a keeper's routing id is "<session>:<pid>" (set by the keeper)
        try:
            pid = int(ident.rsplit(b":", 1)[1])
        except (IndexError, ValueError):
            return None
        handle = self._by_pid.get(pid)
        return handle if handle is not None and handle.ident == ident else None

    def on_keeper_messages(self, batch: list[tuple[bytes, _wire.Message]]) -> None:
        """What the keepers sent since the last loop turn, in order: their events stored in
        one transaction; anything else handled after every event before it is stored and
        published (a delta, a bye, a rejection follow what came first)."""
        with self.events.batch():
            for ident, msg in batch:
                if not isinstance(msg, (_wire.KeeperEvents, _wire.KeeperEvent)):
                    self.events.flush()
                try:
                    self.on_keeper_message(ident, msg)
                except Exception:
                    log.exception("keeper socket: bad message dropped")

    def on_keeper_message(self, ident: bytes, msg: _wire.Message) -> None:
        if isinstance(msg, _wire.Hello):
            self._on_hello(ident, msg)
            return
        handle = self._by_ident(ident)
        if handle is None:
            log.debug("%s from an unknown keeper dropped", type(msg).__name__)
            return
        if isinstance(msg, _wire.Numbered):
            first_new = handle.last_n + 1
            if msg.last_n < first_new:
                return  # sent again after a reconnect: handled already
            handle.last_n = msg.last_n
            self._ack_soon(handle)
            if type(msg) is _wire.KeeperEvents:
                # a run sent again after a reconnect may have its first events stored already
                self._on_run(handle, msg.events, msg.n, max(0, first_new - msg.n))
                return
        if isinstance(msg, _wire.KeeperEvent):
            self._on_event(handle, msg.kind, msg.message_id, msg.packed, msg.n)
        elif isinstance(msg, _wire.Delta):
            origin = self.events.origin_of(msg.message_id) if msg.message_id is not None else None
            self._listener.delta(handle.session, msg.message_id, msg.text, origin)
        elif isinstance(msg, _wire.InterruptReport):
            interrupt_reported(handle, msg.confirmed, msg.detail, msg.next)
        elif isinstance(msg, _wire.ClaudeStarted):
            handle.claude_pid = msg.pid
        elif isinstance(msg, _wire.ConversationStarted):
            self._conversation_started(handle.session)
        elif isinstance(msg, _wire.Rejected):
            if handle.phase is Phase.READY:
                handle.change_phase(Phase.DRAINING)
            handle.forwarded = [i for i in handle.forwarded if i not in msg.ids]
            self.session(handle.session).put_back(msg.ids)
            if given_back := tuple(i for i in msg.ids if i in handle.steered):  # (Claude never took them)
                handle.steered = [i for i in handle.steered if i not in given_back]
                try:
                    self.store.owe_again(given_back)
                except StoreError as exc:  # (a restart reports them not delivered: they stay written)
                    log.error("the keeper of %s gave back messages %s Claude never took; not stored: %s",
                              handle.session, list(given_back), exc)
        elif isinstance(msg, _wire.Bye):
            handle.bye = msg
            if handle.phase is Phase.EXIT_REPORTED:
                self._gone(handle)
            elif handle.phase in CONNECTED:
                handle.change_phase(Phase.SAID_BYE)
        else:
            log.warning("unexpected %s from the keeper of %s", type(msg).__name__, handle.session)

    def _on_run(self, handle: KeeperHandle, flat: list[Any], n: int, skip: int) -> None:
        """A keeper's run of events (``KeeperEvents.events``, numbered from ``n``) after its
        first ``skip``: its stretches of plain events (``PLAIN_KINDS``) recorded as units,
        every other event on its own, in order."""
        kinds = flat[3 * skip::3]
        if PLAIN_KINDS.issuperset(kinds):  # (a burst of Claude's text: the whole run)
            assert handle.pid is not None
            self.events.record_run(handle.session, kinds, flat[3 * skip + 1::3], flat[3 * skip + 2::3],
                                   (handle.pid, n + len(flat) // 3 - 1))
            return
        plain_from = None  # where the stretch of plain events that runs up to i began
        for i in range(skip, len(flat) // 3 + 1):
            if i < len(flat) // 3 and flat[3 * i] in PLAIN_KINDS:
                if plain_from is None:
                    plain_from = i
                continue
            if plain_from is not None:
                assert handle.pid is not None
                self.events.record_run(handle.session, flat[3 * plain_from:3 * i:3], flat[3 * plain_from + 1:3 * i:3],
                                       flat[3 * plain_from + 2:3 * i:3], (handle.pid, n + i - 1))
                plain_from = None
            if i < len(flat) // 3:
                self._on_event(handle, flat[3 * i], flat[3 * i + 1], flat[3 * i + 2], n + i)

    def _on_event(self, handle: KeeperHandle, kind_name: str, message_id: int | None, packed: bytes, n: int) -> None:
        """One event a keeper reported (alone, or in a run), its number ``n``: what it
        changes in the keeper's handle, then recorded."""
        kind = _KINDS.get(kind_name)
        if kind is None:
            log.warning("an event of unknown kind %r from the keeper of %s dropped", kind_name, handle.session)
            return
        if kind in _CHANGE_HANDLE:
            if kind is EventKind.PERMISSION_REQUEST:
                request = PendingRequest.from_event(msgpack.unpackb(packed))
                handle.permissions[request.request_id] = request
            elif kind is EventKind.PERMISSION_RESOLVED:
                handle.permissions.pop(str(msgpack.unpackb(packed).get("request_id")), None)
            elif kind is EventKind.STEERED:
                # (an adopted keeper's hello names what it steered; the report may come again)
                if message_id is not None and message_id not in handle.steered:
                    handle.steered.append(message_id)
            elif message_id in handle.steered:  # taken, written as a turn's own (user), or failed
                handle.steered.remove(message_id)
        assert handle.pid is not None
        self.events.record_packed(handle.session, kind, packed, message_id, (handle.pid, n))
        if kind is _STATE:
            state = str(msgpack.unpackb(packed).get("state"))
            if state == SessionState.SUSPENDING.value and handle.phase is Phase.READY:
                handle.change_phase(Phase.DRAINING)
            handle.reported(state)
            self._listener.state_reported(handle.session, state)

    def _ack_soon(self, handle: KeeperHandle) -> None:
        """Ack a keeper's reports once per loop turn (not one ack per report)."""
        assert handle.pid is not None
        self._to_ack.add(handle.pid)
        if not self._ack_armed:
            self._ack_armed = True
            self.clock.call_later(0, self._send_acks)

    def _conversation_started(self, session: str) -> bool:
        """Store that the session's conversation exists (its next Claude is started with
        ``--resume``). Should the store fail, it is kept (``_unstored_started``: a keeper
        started meanwhile is told so all the same) and tried again before the next acks,
        which wait for it: the keeper keeps its report until then. A fresh conversation
        (/clear, /cd) forgets it (``fresh_conversation``)."""
        try:
            self.store.update_session(session, started=1)
        except StoreError as exc:
            if session not in self._unstored_started:
                log.error("cannot store that the conversation of %s exists (%s); trying again", session, exc)
            self._unstored_started.add(session)
            if not self._ack_armed:  # (tried again with the acks, also when no report comes)
                self._ack_armed = True
                self.clock.call_later(1.0, self._send_acks)
            return False
        self._unstored_started.discard(session)
        return True

    def _send_acks(self) -> None:
        self._ack_armed = False
        unstored = [s for s in sorted(self._unstored_started) if not self._conversation_started(s)]
        if self.events.waiting or unstored:  # not stored yet (disk full): the keepers keep them for us
            if not self._ack_armed:
                self.clock.call_later(1.0, self._send_acks)
                self._ack_armed = True
            return
        pids, self._to_ack = self._to_ack, set()
        for pid in pids:
            handle = self._by_pid.get(pid)
            if handle is not None and handle.ident is not None:
                self._link.send(handle.ident, _wire.Ack(handle.last_n))
            if handle is not None and handle.resend_until is not None and handle.last_n >= handle.resend_until:
                # an adopted keeper's reports from before the restart are stored: the store
                # knows which of its messages it took, and those still owed go to it now
                self._reports_in(handle)

    def _reports_in(self, handle: KeeperHandle) -> None:
        """An adopted keeper's reports from before the restart are stored (or did not come
        in time): what the store still owes the session is moved on."""
        handle.resend_until = None
        if handle.start_timer is not None:
            handle.start_timer.cancel()
            handle.start_timer = None
        self.dispatch(handle.session)

    def _reports_overdue(self, handle: KeeperHandle) -> None:
        """A keeper sends its reports again as soon as it is welcomed: one that has not
        after ``keeper_start_timeout`` (stopped, or a fault) does not hold its session's
        messages for ever. Reports that came and wait for a failing store are waited for:
        the acks' retry ends that wait."""
        handle.start_timer = None
        if handle.resend_until is None or handle.last_n >= handle.resend_until or handle.phase is Phase.GONE:
            return
        log.warning("the keeper of %s (pid %s) did not send its reports up to %d again within %g s: its messages"
                    " go to it now (one it took before the restart may reach Claude twice)", handle.session,
                    handle.pid, handle.resend_until, self.config.keeper_start_timeout)
        self._reports_in(handle)

    def _resend_from(self, session: str, pid: int) -> int:
        rec = self.store.get_session(session)
        return rec.keeper_n + 1 if rec is not None and rec.keeper_pid == pid else 1

    def _on_hello(self, ident: bytes, msg: _wire.Hello) -> None:
        if self._adoptable.get(msg.pid) == msg.session and self._handle(msg.session) is None:
            # a keeper a previous supervisor left, maybe of the release before an upgrade
            if msg.version in _wire.ADOPTABLE_WIRE_VERSIONS:
                self._adopt(ident, msg)
            else:  # left adoptable: reaped when the adoption window closes
                log.warning("the keeper of %s (pid %d) speaks wire version %d; this release adopts %s:"
                            " it is stopped", msg.session, msg.pid, msg.version,
                            ", ".join(map(str, sorted(_wire.ADOPTABLE_WIRE_VERSIONS))))
            return
        if (known := self._by_pid.get(msg.pid)) is not None and known.phase not in (Phase.SPAWNING, Phase.STARTING):
            self._reconnected(known, ident, msg)  # (also one adopted after an upgrade: of an older wire)
            return
        if msg.version != _wire.WIRE_VERSION:  # forked by our own fork server: our code
            log.warning("keeper pid %d speaks wire version %d, not %d: not taken on", msg.pid, msg.version,
                        _wire.WIRE_VERSION)
            return
        handle = self._by_pid.get(msg.pid)
        if handle is None:
            # the hello can overtake the fork server's "spawned" report
            session = ident.decode(errors="replace").rsplit(":", 1)[0] if b":" in ident else None
            candidate = self._handle(session) if session else None
            if candidate is None or candidate.phase is not Phase.SPAWNING:
                log.warning("hello from an unknown keeper pid %s", msg.pid)
                return
            handle = candidate
            handle.pid = msg.pid
            self._by_pid[msg.pid] = handle
            if handle.adopted:  # forked by a fork server that died since: no exit report will come
                self._listener.watch_exit(msg.pid)
        handle.ident = ident
        if handle.start_timer is not None:
            handle.start_timer.cancel()
            handle.start_timer = None
        handle.change_phase(Phase.READY)
        self._welcome(handle)
        outbox, handle.outbox = handle.outbox, []
        for command in outbox:
            self._link.send(ident, command)
        self.dispatch(handle.session)

    def _reconnected(self, handle: KeeperHandle, ident: bytes, hello: _wire.Hello) -> None:
        """A keeper we have says hello again: its connection dropped and came back (ZeroMQ
        reconnects by itself) while we ran on. It sends no report until it is welcomed, so
        it is, from the first report not stored (as at its first hello): a keeper drops what
        comes before its welcome, and reports handled but not stored yet (a full disk: in the
        event log, ``_unstored_started``) are lost to a supervisor restarted before it stores
        them. What it sends again that was handled here is dropped (``last_n``): those wait
        to be stored and acked as every report does. A message
        handed to it while the link was down did not arrive: what it was handed and does
        not say it holds goes to it again (one it took meanwhile it ignores: it knows its
        own; one the store no longer calls queued is not sent)."""
        if handle.phase is Phase.GONE or handle.ident != ident:
            log.warning("hello from the keeper of %s (pid %s) ignored: %s", handle.session, handle.pid,
                        handle.phase.value)
            return
        log.info("the keeper of %s (pid %s) reconnected; welcomed again", handle.session, handle.pid)
        assert handle.pid is not None
        self._link.send(ident, _wire.Welcome(self._resend_from(handle.session, handle.pid)))
        if handle.wire_version < _wire.REPEATS_IGNORED_SINCE:
            return  # (it would take one it has as new: Claude could get it twice)
        named = {hello.current, *hello.queued, *hello.steered}
        if again := [i for i in handle.forwarded if i not in named]:
            handle.forwarded = [i for i in handle.forwarded if i in named]
            self.session(handle.session).put_back(again)
            self.dispatch(handle.session)

    def _welcome(self, handle: KeeperHandle) -> None:
        assert handle.ident is not None and handle.pid is not None
        resend_from = self._resend_from(handle.session, handle.pid)
        handle.last_n = resend_from - 1
        self._link.send(handle.ident, _wire.Welcome(resend_from))

    def _adopt(self, ident: bytes, msg: _wire.Hello) -> None:
        """Take over a keeper a previous supervisor left: no new process, no new Claude."""
        del self._adoptable[msg.pid]
        self._tokens += 1
        handle = KeeperHandle(msg.session, self._tokens, pid=msg.pid, ident=ident, claude_pid=msg.claude_pid,
                              adopted=True, wire_version=msg.version)
        handle.change_phase(Phase.STARTING)
        handle.change_phase(Phase.READY)
        handle.reported(msg.state)
        if msg.state == SessionState.SUSPENDING.value:
            handle.change_phase(Phase.DRAINING)
        handle.forwarded = ([msg.current] if msg.current is not None else []) + list(msg.queued)
        handle.steered = list(msg.steered)
        for body in msg.pending:  # still answerable after the restart
            with contextlib.suppress(KeyError, TypeError, ValueError):
                request = PendingRequest.from_event(body)
                handle.permissions[request.request_id] = request
        live = self.session(msg.session)
        # what it holds is its own; the rest waits for it as usual
        held = handle.holds()
        live.queue = collections.deque(i for i in live.queue if i not in held)
        live.keeper = handle
        self._by_pid[msg.pid] = handle
        self._welcome(handle)
        if msg.last_n is not None and msg.last_n > handle.last_n:  # (a keeper of wire 7 and before does not say)
            handle.resend_until = msg.last_n
            adopted = handle
            handle.start_timer = self.clock.call_later(self.config.keeper_start_timeout,
                                                       lambda: self._reports_overdue(adopted))
        self._listener.watch_exit(msg.pid)
        if msg.started:  # (last: a store that fails now leaves the keeper taken over all the same)
            self._conversation_started(msg.session)
        self._listener.adopted(msg.session, msg.state == SessionState.BUSY.value, msg.current, list(msg.pending))
        log.info("adopted the keeper of %s (pid %d, Claude pid %s, %s, wire version %d)", msg.session, msg.pid,
                 msg.claude_pid, msg.state, msg.version)
        self.dispatch(msg.session)


__all__ = ["BYE_GRACE", "ForkServer", "KeeperPool", "PoolListener"]
