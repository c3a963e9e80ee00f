"""The keeper's session logic as a state machine without I/O (the h11/wsproto pattern).

It is fed events: a command of the supervisor (``command``), a parsed line of Claude's
output (``claude_output``), Claude started, could not start, exited or was stopped, a
timer's expiry, and the keeper's own start and stop. Each call returns the actions to
take, in order (``_actions``): write to Claude's stdin, report to the supervisor, start
or stop Claude, arm or cancel a timer, finish. ``_keeper`` runs it: Claude's process,
the supervisor's socket and the clock live there.

``KeeperMachine`` owns the session's state and decides what each event means for it; the
rest belongs to parts it owns, each pure and tested alone: ``Turns`` (the queue, the
message Claude answers, steering), ``Prompts`` (the permission requests Claude waits on),
``Interrupts``, ``Settings`` (Claude's launch settings and the budget; the changes that
wait for a restart), ``Runs`` (which Claude is which, and what its end means) and
``IdleTimer``. They return the actions for their own events; only the machine changes
``state``, through ``change_state``, which checks the edge against ``EDGES`` (as
supervisord's ``Subprocess.change_state`` does). Each event is handled whole in one call:
a message comes either before the idle timer's expiry (and is answered) or after the
suspension was decided (and is rejected: the supervisor delivers it again after the
resume). A bug raised while an event is handled is not gone on from: the adapter feeds
``internal_error``, which fails the session clearly.

Why it is over ~400 lines (the class ~390): what it gained after its split — a read's
many lines handled in one call (the burst's hot path: a part would cost a call a line)
and the failure on a bug (it must reach every part and the state) — are transitions of
the machine's own. The next part to take out is the handling of Claude's output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from protocol import EventKind, PermissionMode, Reason, SessionState

from .. import _claude, _wire
from ._actions import Action, Emit, Finish, Report, Write
from ._idle import IDLE_TIMER, IdleTimer
from ._interrupts import TOO_LATE, Interrupts
from ._prompts import Prompts
from ._runs import Run, Runs
from ._settings import BUDGET_REACHED, Settings
from ._turns import ReadMessage, Turns, failed, message_line

log = logging.getLogger("supervisord_claude.keeper")

S = SessionState
#: the legal transitions of a keeper's session; a keeper is forked for a suspended (or
#: failed) session and ends suspended or failed
EDGES: dict[SessionState, frozenset[SessionState]] = {
    S.SUSPENDED: frozenset({S.STARTING, S.RESUMING, S.SUSPENDING}),
    S.STARTING: frozenset({S.IDLE, S.BUSY, S.RESUMING, S.SUSPENDING, S.FAILED}),
    S.RESUMING: frozenset({S.IDLE, S.BUSY, S.SUSPENDING, S.FAILED}),
    # a model change restarts Claude: starting again (never-started) or resuming
    S.IDLE: frozenset({S.BUSY, S.STARTING, S.RESUMING, S.SUSPENDING, S.FAILED}),
    S.BUSY: frozenset({S.IDLE, S.STARTING, S.RESUMING, S.SUSPENDING, S.FAILED}),
    S.SUSPENDING: frozenset({S.SUSPENDED, S.FAILED}),
    S.FAILED: frozenset(),
}
#: states in which the keeper is on its way out and takes no new work (SUSPENDED is
#: also where it begins, so ``ending`` also looks at ``done``)
ENDING = frozenset({S.SUSPENDING, S.FAILED})
DROPPED = _wire.DROPPED
#: (an enum member read from its class costs ~0.2 µs on Python 3.11: once per line here)
_TOOL_USE = EventKind.TOOL_USE


class IllegalTransition(RuntimeError):
    """A transition that ``EDGES`` does not allow: a bug, never input."""


#: what a message the keeper held says when an internal error ended the session
NOT_ANSWERED = ("an internal error in the session's keeper stopped the session before this was answered (a bug,"
                " logged); send it again: the next message resumes the conversation")


def unusable(cmd: _wire.Message) -> str | None:
    """What in a supervisor's command this keeper cannot take (a value it does not know,
    e.g. from a supervisor of another release), or None. Input, never a bug: such a
    command is logged and ignored, as an undecodable frame is."""
    try:
        if isinstance(cmd, (_wire.Suspend, _wire.Stop)):
            Reason(cmd.reason)
        elif isinstance(cmd, (_wire.SetMode, _wire.Permit)) and cmd.mode is not None:
            PermissionMode(cmd.mode)
        elif isinstance(cmd, _wire.SetTimeout) and type(cmd.seconds) not in (int, float):
            return f"timeout {cmd.seconds!r} is not a number of seconds"
    except ValueError as exc:
        return str(exc)
    return None


class KeeperMachine:
    def __init__(self, spec: _wire.KeeperSpec, read_message: ReadMessage = message_line):
        self.spec = spec
        self.state = SessionState.SUSPENDED  # until Claude is started
        self.started = spec.started  # the conversation exists: Claude is started with --resume
        self.settings = Settings(spec)
        self.turns = Turns(spec.messages, read_message)
        self.prompts = Prompts(spec.cwd, spec.permission_timeout)
        self.idle = IdleTimer(spec.idle_timeout)
        self.runs = Runs()
        self.interrupts = Interrupts()
        self.done = False
        self._out: list[Action] = []

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _emit(self, kind: EventKind, **body: Any) -> None:
        self._out.append(Emit(kind, body))

    def _report(self, msg: _wire.Message) -> None:
        self._out.append(Report(msg))

    @property
    def ending(self) -> bool:
        return self.state in ENDING or self.done

    @property
    def _answering(self) -> bool:
        """Claude runs and answers a turn (a message now may join it)."""
        return self.turns.current is not None and self.runs.running is not None

    def change_state(self, new: SessionState, reason: Reason, **extra: Any) -> None:
        """The only writer of ``state``: check the edge, then tell the supervisor."""
        if new not in EDGES[self.state]:
            raise IllegalTransition(f"keeper {self.spec.session}: {self.state} -> {new} ({reason})")
        self.state = new
        self._emit(EventKind.STATE, state=new.value, reason=reason.value, **extra)

    def hello(self, pid: int) -> _wire.Hello:
        return _wire.Hello(
            pid=pid, version=_wire.WIRE_VERSION, session=self.spec.session,
            claude_pid=self.runs.running.pid if self.runs.running else None, state=self.state.value,
            current=self.turns.current.id if self.turns.current else None,
            queued=tuple(m.id for m in self.turns.queue), started=self.started,
            pending=tuple(self.prompts.waiting.values()), steered=tuple(m.id for m in self.turns.steered),
        )

    # events: the keeper's own --------------------------------------------------------------

    def start(self) -> list[Action]:
        self._start_claude(Reason.MESSAGE if self.started else Reason.REQUESTED, idle_for=self.spec.idle_for)
        return self._take()

    def stop(self, reason: Reason) -> list[Action]:
        """Stop for shutdown, archive or the terminal: queued messages go back to the
        supervisor, and so do, once Claude is stopped, those steered that it never took."""
        if not self.ending:
            self._out += self.idle.cancel()
            if queued := self.turns.take_queued():
                self._report(_wire.Rejected(queued))
            self.change_state(SessionState.SUSPENDING, reason)
            self._stop_claude_then(lambda: self._stopped(reason))
        return self._take()

    def _stopped(self, reason: Reason) -> None:
        if untaken := self.turns.take_steered():  # (not in the conversation: owed, as the queued ones)
            self._report(_wire.Rejected(untaken))
        if self.turns.current is not None:
            why = {Reason.SHUTDOWN: "supervisor shutdown",
                   Reason.ATTACHED: "the conversation was opened in a terminal"}.get(reason, "session archived")
            self._out += self.turns.fail_turn(f"Claude was stopped before it finished answering ({why})")
        self._finish(SessionState.SUSPENDED, reason)

    def supervisor_away_too_long(self) -> list[Action]:
        if self.turns.current is not None:
            self._interrupt()
            self._emit(EventKind.ERROR, message="The supervisor was away for too long: the answer was"
                       " interrupted (its output so far is kept)", **self.turns.turn())
        return self._take()

    def timer_fired(self, key: str) -> list[Action]:
        if key == IDLE_TIMER:
            self.idle.fired()
            if self.turns.busy or self.prompts.waiting or self.ending:
                self._out.append(self.idle.arm())  # busy or asking: try again later, never suspend mid-turn
            else:
                self._suspend(Reason.IDLE_TIMEOUT)
        else:
            self._out += self.prompts.timed_out(key, self.turns.turn())
        return self._take()

    # events: the supervisor's commands ----------------------------------------------------

    def command(self, cmd: _wire.Message) -> list[Action]:
        if (why := unusable(cmd)) is not None:
            log.warning("keeper %s: %s from the supervisor ignored: %s", self.spec.session, type(cmd).__name__, why)
            return []
        if isinstance(cmd, _wire.Deliver):
            if cmd.message.id in self.turns.given:
                log.warning("keeper %s: message %d handed over again ignored (it has it)", self.spec.session,
                            cmd.message.id)
            elif self.ending:
                # lost the race with suspension: the supervisor re-delivers it after resume
                self._report(_wire.Rejected((cmd.message.id,)))
            else:
                self.turns.given.add(cmd.message.id)
                self._out += self.idle.cancel()
                if cmd.message.steer and self._answering:
                    self._out += self.turns.steer(cmd.message)  # it joins the running turn
                else:
                    self.turns.queue.append(cmd.message)
                    self._pump()
        elif isinstance(cmd, _wire.Interrupt):
            self._interrupt(report=True)
        elif isinstance(cmd, _wire.DropQueued):
            self._out += self.turns.fail_queued(DROPPED)
        elif isinstance(cmd, _wire.Suspend):
            if not self.turns.busy:
                self._suspend(Reason(cmd.reason))
        elif isinstance(cmd, _wire.Stop):
            return self.stop(Reason(cmd.reason))
        elif isinstance(cmd, _wire.Permit):
            if answered := self.prompts.answer(cmd, self.turns.turn()):
                self.settings.permitted(cmd.rules, cmd.mode)
                self._out += answered
        elif isinstance(cmd, _wire.SetTimeout):
            self._out += self.idle.set_timeout(cmd.seconds)
        elif isinstance(cmd, (_wire.SetModel, _wire.SetMode, _wire.SetRules, _wire.SetBudget)):
            # (a Claude starting was given the old settings: it is restarted once it runs)
            if self.settings.change(cmd, claude_running=self.runs.running is not None
                                    or self.runs.starting is not None):
                self._apply_changes()  # Claude is restarted with --resume once no turn runs
        else:
            log.warning("keeper %s: unexpected %s from the supervisor", self.spec.session, type(cmd).__name__)
        return self._take()

    def _interrupt(self, report: bool = False) -> None:
        """Ask Claude to stop its turn; with ``report``, tell the supervisor what became
        of it (once Claude confirmed it, or at once why it could not be asked)."""
        if self._answering:
            self._out.append(self.interrupts.ask(report))
        elif report:
            self._out.append(TOO_LATE)

    def interrupt_not_written(self, request_id: str) -> list[Action]:
        self._out += self.interrupts.not_written(request_id)
        return self._take()

    # messages and turns --------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand the next queued message to Claude if none is in flight."""
        turns = self.turns
        while turns.current is None and turns.queue and not self.ending and self.runs.running is not None \
                and not self.settings.pending:
            msg = turns.queue.popleft()
            # (the caps reached: the room for all went to other sessions' turns; no turn starts)
            line = failed(msg, BUDGET_REACHED) if self.settings.budget_spent else turns.line_or_failure(msg)
            if isinstance(line, Emit):
                self._out.append(line)
                if not turns.queue:
                    self._become_idle(Reason.TURN)
                continue
            self._out.append(turns.begin(msg))  # (its user event before the write: see begin)
            if self.state is not SessionState.BUSY:
                self.change_state(SessionState.BUSY, Reason.MESSAGE)
            self._out.append(Write(line))
            for waiting in turns.waiting_to_steer():  # (they came while Claude was starting)
                self._out += turns.steer(waiting)

    def _become_idle(self, reason: Reason) -> None:
        if self.state is not SessionState.IDLE:
            self.change_state(SessionState.IDLE, reason)
        self._out.append(self.idle.arm())

    # Claude's process ----------------------------------------------------------------------

    def _start_claude(self, reason: Reason, idle_for: float | None = None) -> None:
        resume = self.started
        extra: dict[str, Any] = {"idle_for": idle_for} if resume and idle_for is not None else {}
        if (first := self.turns.first) is not None:  # what caused it, so a front end can answer its sender
            extra["message_id"] = first.id
        target = SessionState.RESUMING if resume else SessionState.STARTING
        if self.state is not target:  # (restarted for a change that came while it started: said already)
            self.change_state(target, reason, **extra)
        self._out.append(self.runs.start(self.settings.launch(self.spec, resume), reason))

    def claude_started(self, run_number: int, pid: int) -> list[Action]:
        if self.ending:  # stopped while Claude was being started
            self._out.append(self.runs.discard(run_number))
            return self._take()
        run = self.runs.started(run_number, pid)
        self._report(_wire.ClaudeStarted(pid))
        if self.settings.pending and self.turns.current is None:
            self._apply_changes()  # a change came while it started: it has the old settings
            return self._take()
        if self.turns.current is not None:
            # carried over, with the messages steered into its turn, from a Claude that
            # exited before it read them (see claude_exited); one whose attachment is gone
            # meanwhile fails alone
            self._out += self.turns.carry_over()
            if self.turns.current is not None:
                self.change_state(SessionState.BUSY, Reason.MESSAGE)
                for waiting in self.turns.waiting_to_steer():  # (they came while this Claude started)
                    self._out += self.turns.steer(waiting)
        self._pump()
        if not self.turns.busy:
            self._become_idle(run.reason)
        return self._take()

    def claude_start_failed(self, run_number: int, error: str) -> list[Action]:
        run = self.runs.start_failed(run_number)
        if not self.ending:
            self._fail(f"Could not start Claude: {error}", {}, run.start_failure_reason)
        return self._take()

    def claude_output(self, run_number: int, parsed: _claude.Parsed) -> list[Action]:
        self._claude_output(self.runs[run_number], parsed)
        return self._take()

    def claude_outputs(self, run_number: int, lines: Iterable[_claude.Parsed]) -> list[Action]:
        """``claude_output`` of each line in turn, the actions of all in one list: what the
        keeper read of Claude's stdout at once (a burst is thousands of lines a second)."""
        run = self.runs[run_number]
        for parsed in lines:
            if parsed.plain:
                self._claude_events(parsed.events)
            else:
                self._claude_output(run, parsed)
        return self._take()

    def _claude_output(self, run: Run, parsed: _claude.Parsed) -> None:
        if parsed.replay is not None:
            self._out += self.turns.echo(parsed.replay)
        if parsed.init_session_id is not None:
            run.init_seen = True
            if not self.started:
                self.started = True
                self._report(_wire.ConversationStarted(parsed.init_session_id))
        if parsed.delta:  # live only: sent while linked (lost deltas are no loss)
            self._report(_wire.Delta(self.turns.current.id if self.turns.current else None, parsed.delta))
        if parsed.model is not None or parsed.mode is not None:
            for changed in self.settings.claude_says(parsed.model, parsed.mode):
                self._emit(EventKind.SETTINGS, **changed)
        self._claude_events(parsed.events)
        if parsed.control_response is not None:
            self._out += self.interrupts.answered(*parsed.control_response, (m.id for m in self.turns.steered))
        if parsed.permission is not None:
            arm, request = self.prompts.ask(parsed.permission, self.turns.turn())
            self._out.append(arm)
            self._out += self.idle.cancel()  # never suspended while Claude waits for the user
            self._out.append(request)
        if parsed.result is not None:
            self._on_result(run, parsed.result)

    def _claude_events(self, events: list[tuple[EventKind, dict[str, Any]]]) -> None:
        """A line's events, each of the turn Claude answers."""
        if not events:
            return
        current = self.turns.current
        if current is None and self.idle.armed and not self.ending:
            # a turn Claude began by itself (a background task ended): the session is not
            # idle while Claude writes it; the countdown starts again from its last line
            self._out.append(self.idle.arm())
        out = self._out
        for kind, body in events:
            if kind is _TOOL_USE:
                self.prompts.tool_use(body)
            # (``**self.turns.turn()``, without a dict for it; the line's own body is never
            # changed: a line may be fed again)
            out.append(Emit(kind, {**body, "message_id": current.id} if current is not None else body))

    def _on_result(self, run: Run, result: dict[str, Any]) -> None:
        if run.resume_failed(self.started, result):
            return  # the process exits next; its exit reports it
        delta = self.settings.count_cost(result.get("cost_usd"))
        self._out += self.prompts.turn_ended(self.turns.turn())
        msg, joined = self.turns.end()
        self._emit(EventKind.RESULT, message_id=msg.id if msg else None, cost_delta=delta, **result,
                   **({"steered": joined} if joined else {}))
        if self.turns.steered:
            self._out.append(self.turns.next_steered())
        elif self.settings.pending:
            self._apply_changes()
        else:
            self._pump()
            if not self.turns.busy:
                self._become_idle(Reason.TURN)

    def _apply_changes(self) -> None:
        if not self.settings.pending or self.ending or self.turns.current is not None \
                or self.runs.starting is not None:
            return  # (a Claude starting takes the change once it runs: claude_started)
        reason = self.settings.apply()
        if self.runs.stopping:
            return  # a restart is under way (a change just before): the Claude it starts takes these too
        self._out += self.idle.cancel()
        self._stop_claude_then(lambda: None if self.ending else self._start_claude(reason))

    def claude_exited(self, run_number: int, code: int, stderr_tail: Sequence[str], overflow: bool) -> list[Action]:
        run = self.runs.exited(run_number)
        if run is None or self.ending:
            return self._take()
        self.runs.running = None
        self._out += self.interrupts.void(f"Claude exited (exit code {code}) before it confirmed the interrupt")
        self._out += self.prompts.void("Claude exited", self.turns.turn())
        self._out += self.idle.cancel()
        meaning = run.exit_meaning(code, stderr_tail, overflow, self.started, self.runs.retried)
        if meaning.retry:
            log.info("keeper %s: conversation exists already; resuming it", self.spec.session)
            self.runs.retried = True
            self.started = True
            self._report(_wire.ConversationStarted(self.spec.session_id))
            self._start_claude(Reason.MESSAGE)
            return self._take()
        about = {"message_id": first.id} if (first := self.turns.first) else {}
        # a resume failure names the message it was resumed for, so a front end shows its
        # offer (a fresh conversation) where that message came from
        extra = {"detail": meaning.detail, **about} if meaning.detail is not None else {}
        self._fail(meaning.text, {"exit_code": code, **about}, meaning.reason, **extra)
        return self._take()

    def _fail(self, text: str, error: dict[str, Any], reason: Reason, **extra: Any) -> None:
        """Claude is gone for good: say why (an ``error`` event), fail every message, end."""
        self._emit(EventKind.ERROR, message=text, **error)
        self._out += self.turns.fail_turn(text) + self.turns.fail_queued(text)
        self._finish(SessionState.FAILED, reason, code=1, **extra)

    # stopping ------------------------------------------------------------------------------

    def _suspend(self, reason: Reason) -> None:
        if self.ending or self.turns.busy or self.prompts.waiting:
            return
        self._out += self.idle.cancel()
        self.change_state(SessionState.SUSPENDING, reason)
        self._stop_claude_then(lambda: self._finish(SessionState.SUSPENDED, reason))

    def _stop_claude_then(self, then: Callable[[], None]) -> None:
        """Stop Claude, then ``then`` (at once if none runs)."""
        if (stop := self.runs.stop(then)) is None:
            then()
            return
        self._out += self.interrupts.void("Claude was stopped before it confirmed the interrupt")
        self._out += self.prompts.void("Claude was stopped", self.turns.turn())
        self._out.append(stop)

    def claude_stopped(self, run_number: int) -> list[Action]:
        if (then := self.runs.stopped(run_number)) is not None:
            then()
        return self._take()

    # a bug ---------------------------------------------------------------------------------

    def internal_error(self, error: str) -> list[Action]:
        """Handling an event raised (``error`` names the exception): a bug, never input.
        What the machine holds may be half-changed, so it does not go on: the session
        fails at once and says so, rather than stay stuck. What that event said already
        is said (it matches what it changed; nothing else it began is done); an ``error``
        event names the internal error; every message held fails (``NOT_ANSWERED``: the
        one answered, those steered into its turn, the queued — none goes to a new Claude
        by itself, as it might trip the bug again); requests and interrupts waiting are
        void; the keeper ends ``failed`` (``internal-error``). The adapter stops Claude
        and the timers itself (what the machine knows of them may be wrong too), and what
        a Claude still wrote is not heard (``runs`` forgets them)."""
        self._out = [action for action in self._out if isinstance(action, (Emit, Report))]
        self.runs = Runs()
        if self.done:
            return self._take()  # (it had ended: its Bye was said)
        about = self.turns.turn() or ({"message_id": first.id} if (first := self.turns.first) else {})
        held = " and the messages it held were not answered" if self.turns.busy or self.turns.steered else ""
        self._emit(EventKind.ERROR, message=f"Internal error in the session's keeper ({error}): the session was"
                   f" stopped{held}. The next message resumes the conversation.", **about)
        turn = self.turns.turn()
        self._out += self.turns.fail_turn(NOT_ANSWERED) + self.turns.fail_queued(NOT_ANSWERED)
        voids: list[Callable[[], list[Action]]] = [
            lambda: self.prompts.void("the session failed", turn),
            lambda: self.interrupts.void("an internal error in the session's keeper stopped the session")]
        for void in voids:
            try:  # (the part that broke may be one of these: what must be said is said anyway)
                self._out += [action for action in void() if isinstance(action, (Emit, Report))]
            except Exception:
                log.exception("keeper %s: after the internal error", self.spec.session)
        # (not through change_state: from wherever it was, even a state the bug left wrong)
        self.state = SessionState.FAILED
        self._emit(EventKind.STATE, state=self.state.value, reason=Reason.INTERNAL_ERROR.value, detail=error, **about)
        self._report(_wire.Bye(self.state.value, Reason.INTERNAL_ERROR.value))
        self._out.append(Finish(1))
        self.done = True
        return self._take()

    def _finish(self, state: SessionState, reason: Reason, code: int = 0, **extra: Any) -> None:
        self.change_state(state, reason, **extra)
        self._report(_wire.Bye(state.value, reason.value))
        self._out.append(Finish(code))
        self.done = True
