"""What the fork server reports (a keeper forked, not forked, exited; its own death) and
what a keeper's end means (``PoolExits``): its last words and its exit in either
order (``Phase``), a keeper that never says hello, a spawn the dead fork server never
answered, and the messages a dead keeper held.
"""

from __future__ import annotations

import logging
import signal

from protocol import EventKind, Reason, SessionState

from .. import _wire
from .._wire import keeper_title
from ._live import (
    CONNECTED,
    AfterExit,
    KeeperHandle,
    Phase,
    interrupt_reported,
)
from ._poolcore import PoolCore
from ._store import WRITTEN

log = logging.getLogger("supervisord_claude")

#: how long a keeper's bye may trail the fork server's report of its exit
BYE_GRACE = 1.0


class PoolExits(PoolCore):
    # reports of the fork server ---------------------------------------------------------

    def on_fork_report(self, msg: _wire.Message) -> None:
        if isinstance(msg, _wire.Spawned):
            handle = self._by_token.pop(msg.token, None)
            if handle is None:
                return
            handle.pid = msg.pid
            self._by_pid[msg.pid] = handle
            if handle.phase is Phase.SPAWNING:
                handle.change_phase(Phase.STARTING)
                started = handle
                handle.start_timer = self.clock.call_later(self.config.keeper_start_timeout,
                                                           lambda: self._hello_overdue(started))
            log.info("keeper for %s started (pid %d)", handle.session, msg.pid)
        elif isinstance(msg, _wire.SpawnFailed):
            handle = self._by_token.pop(msg.token, None)
            if handle is None:
                return
            log.error("could not fork a keeper for %s: %s", handle.session, msg.error)
            handle.change_phase(Phase.GONE)
            self._forget(handle)
            self.events.fail_messages(handle.session, handle.forwarded,
                                      f"could not start a session keeper: {msg.error}")
        elif isinstance(msg, _wire.Exited):
            self.on_exit(msg.pid, msg.status)

    def on_fork_server_lost(self) -> None:
        """The fork server died. Its keepers live on, re-parented, but nobody reports their
        exits now: watch each like an adopted keeper. A spawn it was asked for and never
        answered may or may not have happened: its hello settles it, or its start timeout."""
        for handle in list(self._by_pid.values()):
            if not handle.adopted and handle.phase is not Phase.EXIT_REPORTED:
                handle.adopted = True
                assert handle.pid is not None
                self._listener.watch_exit(handle.pid)
        for handle in list(self._by_token.values()):
            if handle.phase is Phase.SPAWNING:
                handle.adopted = True  # its Spawned report will never come
                lost = handle
                handle.start_timer = self.clock.call_later(self.config.keeper_start_timeout,
                                                           lambda: self._spawn_lost(lost))

    def _spawn_lost(self, handle: KeeperHandle) -> None:
        """A spawn the dead fork server never answered, and no hello came. If it did fork a
        keeper (by its title), that one hung: kill it and report its messages not delivered
        (as for any keeper that does not say hello in time); if it did not, the messages
        were never taken: start the session anew with them."""
        if handle.phase is not Phase.SPAWNING:
            return
        handle.start_timer = None
        title = keeper_title(self.instance, handle.session)
        strays = [pid for pid, t in self.system.processes_titled(title) if t == title and pid not in self._by_pid]
        for pid in strays:
            self.system.kill(pid, signal.SIGKILL)
        handle.change_phase(Phase.GONE)
        self._forget(handle)
        ids, handle.forwarded = handle.forwarded, []
        if strays:
            log.error("the keeper of %s, forked just before the fork server died, did not connect; killed",
                      handle.session)
            self.events.fail_messages(handle.session, ids, f"the session keeper did not start within"
                                                           f" {self.config.keeper_start_timeout:g} s")
            return
        log.warning("the fork server died before it started a keeper for %s; starting one now", handle.session)
        self.session(handle.session).put_back(ids)
        self.dispatch(handle.session)

    def _hello_overdue(self, handle: KeeperHandle) -> None:
        """A keeper that never says hello would hold its messages for ever: kill it, and
        its messages are reported not delivered (see ``_gone``)."""
        if handle.phase is Phase.STARTING and handle.pid is not None:
            log.error("the keeper of %s (pid %d) did not connect within %.0f s; killing it", handle.session,
                      handle.pid, self.config.keeper_start_timeout)
            handle.overdue = True
            self.system.kill(handle.pid, signal.SIGKILL)

    def on_exit(self, pid: int, status: int | None) -> None:
        """A keeper process is gone (reported by the fork server, or seen through the pidfd
        of an adopted keeper, whose status we cannot know: its bye tells)."""
        handle = self._by_pid.get(pid)
        if handle is None:
            return
        handle.exit_status = status
        if handle.phase in CONNECTED:
            # its last messages (events, bye) come over the keeper socket, which this
            # report can overtake: wait for the bye a moment before calling it killed
            handle.change_phase(Phase.EXIT_REPORTED)
            handle.grace = self.clock.call_later(BYE_GRACE, lambda: self._gone(handle))
        else:
            self._gone(handle)

    # exits ------------------------------------------------------------------------------

    def _forget(self, handle: KeeperHandle) -> None:
        live = self._sessions.get(handle.session)
        if live is not None and live.keeper is handle:
            live.keeper = None
        if handle.pid is not None and self._by_pid.get(handle.pid) is handle:
            del self._by_pid[handle.pid]
        self._by_token.pop(handle.token, None)

    def _gone(self, handle: KeeperHandle) -> None:
        if handle.phase is Phase.GONE:
            return
        for timer in (handle.grace, handle.start_timer):
            if timer is not None:
                timer.cancel()
        status = "unknown" if handle.exit_status is None else str(handle.exit_status)
        connected = handle.ident is not None
        if handle.interrupt_waiters:
            interrupt_reported(handle, False, f"the session's keeper exited (status {status})")
        handle.change_phase(Phase.GONE)
        self._forget(handle)
        session = handle.session
        if handle.exit_status is None:  # (an adopted keeper is not our child: its status is not ours to read)
            log.info("keeper for %s (pid %s) exited", session, handle.pid)
        else:
            log.info("keeper for %s (pid %s) exited with status %s", session, handle.pid, status)
        leftover = list(handle.forwarded)
        handle.forwarded.clear()
        if handle.bye is None:
            # it was killed: it could not stop its Claude, nor report its turn
            if handle.claude_pid is not None:
                self.system.killpg(handle.claude_pid, signal.SIGKILL)
            written = [m.id for m in self.store.messages(session, WRITTEN)]
            self.events.fail_messages(session, written,
                                      f"the session keeper died (exit status {status}) while Claude was answering")
            self.events.record(session, EventKind.STATE,
                               {"state": SessionState.FAILED.value, "reason": Reason.KILLED.value})
            if not connected:
                self.events.fail_messages(session, leftover,
                                          f"the session keeper did not start within"
                                          f" {self.config.keeper_start_timeout:g} s" if handle.overdue else
                                          f"the session keeper died (exit status {status}) before starting Claude")
                leftover = []
        if leftover and handle.bye is not None and handle.bye.reason == Reason.INTERNAL_ERROR.value:
            # a keeper that failed on a bug: one it was handed and said nothing of may be
            # the one that tripped it, so it is not handed to a new keeper by itself
            self.events.fail_messages(session, leftover, "an internal error in the session's keeper stopped the"
                                                         " session before it took this message (a bug, logged);"
                                                         " send it again: the next message resumes the conversation")
            leftover = []
        if handle.then is AfterExit.ARCHIVE:
            self.events.fail_messages(session, leftover, f"session '{session}' was archived")
            self.archive_now(session)
        else:
            if leftover:  # handed over but never taken: they go first, in order
                self.session(session).put_back(sorted(leftover))
            self.dispatch(session)
            self._listener.keeper_gone(session)
        if not self._by_pid and not self.with_keepers():
            self._listener.all_keepers_gone()
