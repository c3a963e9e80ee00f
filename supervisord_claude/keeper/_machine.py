"""The keeper's session logic as a state machine without I/O (the h11/wsproto pattern).

It is fed events: a command of the supervisor (``command``), a parsed line of Claude's
output (``claude_output``), Claude started, could not start, exited or was stopped, a
timer's expiry, and the keeper's own start and stop. Each call returns the actions to
take, in order: write a line to Claude's stdin, report to the supervisor, start or stop
Claude, arm or cancel a timer, finish. It owns the queue, the message Claude is
answering, the session's state, the permission requests Claude waits on, the idle
timer's decisions, interrupts, model and mode changes, what Claude's exit means
(a resume failure, the "already in use" retry, a crash), and steering: a message that
comes while a turn runs is written to Claude at once unless it asked to wait; Claude's
echo of it (``--replay-user-messages``, matched by the uuid it was written with) says
whether it joined the running turn (``taken``) or, too late for that turn's last model
request, becomes the next turn. ``_keeper`` runs it: Claude's
process, the supervisor's socket and the clock live there. The one thing it reads is a
message's attachments (through ``read_message``), when that message goes to Claude.

Its lifecycle is ``state`` alone, changed only by ``change_state``, which checks the edge
against ``EDGES`` (as supervisord's ``Subprocess.change_state`` does). Each event is
handled whole in one call: a message comes either before the idle timer's expiry (and is
answered) or after the suspension was decided (and is rejected: the supervisor delivers
it again after the resume).
"""

from __future__ import annotations

import collections
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol import EventKind, PermissionMode, Reason, SessionState

from .. import _claude, _wire
from .. import _permissions as permissions
from .._wire import QueuedMessage
from ._actions import (
    Action,
    ArmTimer,
    CancelTimer,
    Emit,
    Finish,
    Report,
    StartClaude,
    StopClaude,
    Write,
)

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
#: what is left of a budget below which no turn starts (a rounding's worth above nothing)
BUDGET_SPENT = 1e-9
BUDGET_REACHED = ("not sent: the daily cap is reached — what was left of it went to the turns of this and other"
                  " sessions answering at the same time. Raise it (/budget, claudectl budget) or wait for tomorrow")
IDLE_TIMER = "idle"
#: the written limit on one line of Claude's output (the process adapter enforces it)
STDOUT_LIMIT = 64 * 1024 * 1024


class IllegalTransition(RuntimeError):
    """A transition that ``EDGES`` does not allow: a bug, never input."""


@dataclass
class Run:
    """One Claude process and what the keeper learned from it."""

    number: int
    resume: bool
    pid: int | None = None
    init_seen: bool = False  # Claude confirmed the conversation (its init line)
    resume_failure: str | None = None


def _permission_timer(request_id: str) -> str:
    return f"permission {request_id}"


def message_line(msg: QueuedMessage, echo_id: str | None = None) -> bytes:
    return _claude.user_line(msg.text, msg.attachments, echo_id)


class KeeperMachine:
    def __init__(self, spec: _wire.KeeperSpec,
                 read_message: Callable[[QueuedMessage, str | None], bytes] = message_line):
        self.spec = spec
        self.read_message = read_message
        self.state = SessionState.SUSPENDED  # until Claude is started
        self.started = spec.started
        self.model = spec.model
        self.mode = PermissionMode(spec.permission_mode)
        self.claude_model: str | None = None
        self.allowed_tools = list(spec.allowed_tools)
        self.queue: collections.deque[QueuedMessage] = collections.deque(spec.messages)
        self.current: QueuedMessage | None = None
        #: messages written to Claude while the current turn runs that it has not taken yet
        self.steered: list[QueuedMessage] = []
        #: steered messages Claude took into the current turn (its result names them)
        self.joined: list[int] = []
        #: the uuid each message not taken yet was written with (its echo carries it)
        self._echo_ids: dict[str, int] = {}
        self._began = False  # Claude echoed the current turn's own message
        #: launch settings changed while Claude was busy: applied (by a restart) after the turn
        self.pending_changes: dict[str, Any] = {}
        # Claude's total_cost_usd is cumulative for the conversation, across --resume: the
        # last total seen is the baseline for the next result's cost delta
        self.last_cost = spec.cost_baseline
        #: what this session may still spend today (None: no cap), less each turn's cost
        self.budget_left = spec.budget_usd
        self.permissions: dict[str, dict[str, Any]] = {}  # can_use_tool requests Claude waits on
        self._tool_inputs: dict[str, Any] = {}  # this turn's tool_use inputs, by tool_use id
        self.idle_timeout = spec.idle_timeout
        self.idle_armed = False
        self.claude: Run | None = None  # the Claude that runs (None while one starts or stops)
        self._runs: dict[int, Run] = {}
        self._start_reason = Reason.REQUESTED
        self._after_stop: tuple[int, Callable[[], None]] | None = None
        self._fresh_retried = False
        self._ctrl_ids = 0
        self._interrupts_asked: set[str] = set()  # interrupts the supervisor waits to hear about
        self.done = False
        self._out: list[Action] = []

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _emit(self, kind: EventKind, **body: Any) -> None:
        self._out.append(Emit(kind, body))

    def _report(self, msg: _wire.Message) -> None:
        self._out.append(Report(msg))

    def _turn(self) -> dict[str, Any]:
        """``message_id`` of the message Claude is answering, for events of its turn."""
        return {"message_id": self.current.id} if self.current is not None else {}

    @property
    def ending(self) -> bool:
        return self.state in ENDING or self.done

    def change_state(self, new: SessionState, reason: Reason, **extra: Any) -> None:
        """The only writer of ``state``: check the edge, then tell the supervisor."""
        if new not in EDGES[self.state]:
            raise IllegalTransition(f"keeper {self.spec.session}: {self.state} -> {new} ({reason})")
        self.state = new
        self._emit(EventKind.STATE, state=new.value, reason=reason.value, **extra)

    def hello(self, pid: int) -> _wire.Hello:
        return _wire.Hello(
            pid=pid, version=_wire.WIRE_VERSION, session=self.spec.session,
            claude_pid=self.claude.pid if self.claude is not None else None, state=self.state.value,
            current=self.current.id if self.current else None, queued=tuple(m.id for m in self.queue),
            started=self.started, pending=tuple(self.permissions.values()),
            steered=tuple(m.id for m in self.steered),
        )

    # events: the keeper's own --------------------------------------------------------------

    def start(self) -> list[Action]:
        self._start_claude(Reason.MESSAGE if self.started else Reason.REQUESTED, idle_for=self.spec.idle_for)
        return self._take()

    def stop(self, reason: Reason) -> list[Action]:
        """Stop for shutdown or archive: queued messages go back to the supervisor."""
        if not self.ending:
            self._cancel_idle()
            if self.queue:
                self._report(_wire.Rejected(tuple(m.id for m in self.queue)))
                self.queue.clear()
            self.change_state(SessionState.SUSPENDING, reason)
            self._stop_claude_then(lambda: self._stopped(reason))
        return self._take()

    def _stopped(self, reason: Reason) -> None:
        if self.current is not None:
            why = {Reason.SHUTDOWN: "supervisor shutdown",
                   Reason.ATTACHED: "the conversation was opened in a terminal"}.get(reason, "session archived")
            for msg in [self.current, *self.steered]:
                self._emit(EventKind.MESSAGE_FAILED, message_id=msg.id,
                           reason=f"Claude was stopped before it finished answering ({why})")
            self._turn_over()
        self._finish(SessionState.SUSPENDED, reason)

    def supervisor_away_too_long(self) -> list[Action]:
        if self.current is not None:
            self._interrupt()
            self._emit(EventKind.ERROR, message="The supervisor was away for too long: the answer was"
                       " interrupted (its output so far is kept)", **self._turn())
        return self._take()

    def timer_fired(self, key: str) -> list[Action]:
        if key == IDLE_TIMER:
            self.idle_armed = False
            if self.current is not None or self.queue or self.permissions or self.ending:
                self._arm_idle()  # busy or asking: try again later, never suspend mid-turn
            else:
                self._suspend(Reason.IDLE_TIMEOUT)
        elif (request_id := key.removeprefix(_permission_timer(""))) in self.permissions:
            del self.permissions[request_id]
            seconds = self.spec.permission_timeout
            amount = f"{seconds:g} seconds" if seconds < 90 else f"{seconds / 60:g} minutes"
            text = f"No answer within {amount}: denied."
            self._out.append(Write(_claude.permission_line(request_id, _claude.deny_decision(text))))
            self._emit(EventKind.PERMISSION_RESOLVED, request_id=request_id, allow=False, by="timeout",
                       message=text, **self._turn())
        return self._take()

    # events: the supervisor's commands ----------------------------------------------------

    def command(self, cmd: _wire.Message) -> list[Action]:
        if isinstance(cmd, _wire.Deliver):
            if self.ending:
                # lost the race with suspension: the supervisor re-delivers it after resume
                self._report(_wire.Rejected((cmd.message.id,)))
            else:
                self._cancel_idle()
                if cmd.message.steer and self._steering():
                    self._steer(cmd.message)
                else:
                    self.queue.append(cmd.message)
                    self._pump()
        elif isinstance(cmd, _wire.Interrupt):
            self._interrupt(report=True)
        elif isinstance(cmd, _wire.DropQueued):
            for msg in self.queue:
                self._emit(EventKind.MESSAGE_FAILED, message_id=msg.id, reason=DROPPED)
            self.queue.clear()
        elif isinstance(cmd, _wire.Suspend):
            if self.current is None and not self.queue:
                self._suspend(Reason(cmd.reason))
        elif isinstance(cmd, _wire.Stop):
            return self.stop(Reason(cmd.reason))
        elif isinstance(cmd, _wire.Permit):
            self._answer(cmd)
        elif isinstance(cmd, _wire.SetTimeout):
            self.idle_timeout = cmd.seconds
            if self.idle_armed:
                self._arm_idle()
        elif isinstance(cmd, (_wire.SetModel, _wire.SetMode)):
            # Claude is restarted with --resume once no turn runs
            self.pending_changes.update({"model": cmd.model} if isinstance(cmd, _wire.SetModel)
                                        else {"mode": PermissionMode(cmd.mode)})
            if self.current is None:
                self._apply_changes()
        elif isinstance(cmd, _wire.SetRules):
            self.pending_changes["rules"] = list(cmd.rules)
            if self.current is None:
                self._apply_changes()
        elif isinstance(cmd, _wire.SetBudget):
            if cmd.usd == self.budget_left or (cmd.usd is not None and self.budget_left is not None
                                               and abs(cmd.usd - self.budget_left) < 1e-9):
                return self._take()  # (what it counted itself, or no cap still: its Claude has that limit)
            self.budget_left = cmd.usd
            if self.claude is not None:  # the running Claude has the old limit
                self.pending_changes["budget"] = cmd.usd
                if self.current is None:
                    self._apply_changes()
        else:
            log.warning("keeper %s: unexpected %s from the supervisor", self.spec.session, type(cmd).__name__)
        return self._take()

    def _answer(self, cmd: _wire.Permit) -> None:
        if self.permissions.pop(cmd.request_id, None) is None:
            return  # answered meanwhile (timed out, or the turn ended)
        self._out += [CancelTimer(_permission_timer(cmd.request_id)),
                      Write(_claude.permission_line(cmd.request_id, cmd.decision))]
        self.allowed_tools += [rule for rule in dict.fromkeys(cmd.rules) if rule not in self.allowed_tools]
        if cmd.mode is not None:
            self.mode = PermissionMode(cmd.mode)  # Claude switches itself (a setMode update)
        self._emit(EventKind.PERMISSION_RESOLVED, request_id=cmd.request_id, **cmd.report, **self._turn())

    def _interrupt(self, report: bool = False) -> None:
        """Ask Claude to stop its turn; with ``report``, tell the supervisor what became
        of it (once Claude confirmed it, or at once why it could not be asked)."""
        if self.current is None or self.claude is None:
            if report:
                self._report(_wire.InterruptReport(False, "Claude was not answering anything any more when it"
                                                          " arrived (the turn had ended)"))
            return
        self._ctrl_ids += 1
        request_id = f"interrupt-{self._ctrl_ids}"
        if report:
            self._interrupts_asked.add(request_id)
        self._out.append(Write(_claude.control_line(request_id, "interrupt"), request_id if report else None))

    def interrupt_not_written(self, request_id: str) -> list[Action]:
        if request_id in self._interrupts_asked:
            self._interrupts_asked.discard(request_id)
            self._report(_wire.InterruptReport(False, "Claude's input is closed (it is exiting)"))
        return self._take()

    def _interrupts_void(self, why: str) -> None:
        """Claude is gone: the interrupts it did not confirm never will be."""
        for _ in self._interrupts_asked:
            self._report(_wire.InterruptReport(False, why))
        self._interrupts_asked.clear()

    def _drop_permissions(self, why: str) -> None:
        """Claude no longer waits (its turn ended, or it stopped): the requests are void."""
        for request_id in list(self.permissions):
            del self.permissions[request_id]
            self._out.append(CancelTimer(_permission_timer(request_id)))
            self._emit(EventKind.PERMISSION_RESOLVED, request_id=request_id, allow=False, by="claude",
                       message=why, **self._turn())

    # messages and turns --------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand the next queued message to Claude if none is in flight."""
        while self.current is None and self.queue and not self.ending and self.claude is not None \
                and not self.pending_changes:
            msg = self.queue.popleft()
            if self.budget_left is not None and self.budget_left <= BUDGET_SPENT:
                # the caps are reached (the room for all went to other sessions' turns): no turn starts
                self._emit(EventKind.MESSAGE_FAILED, message_id=msg.id, reason=BUDGET_REACHED)
                if not self.queue:
                    self._become_idle(Reason.TURN)
                continue
            try:
                line = self._message_line(msg)
            except OSError as exc:
                self._emit(EventKind.MESSAGE_FAILED, message_id=msg.id,
                           reason=f"cannot read attachment: {exc.strerror or exc}")
                if not self.queue:
                    self._become_idle(Reason.TURN)
                continue
            self.current = msg
            self._began = False
            # reported before the write: a keeper killed in between leaves the message marked
            # as handed over, so it is reported failed rather than delivered twice
            self._emit(EventKind.USER, message_id=msg.id, text=msg.text, attachments=list(msg.attachments))
            if self.state is not SessionState.BUSY:
                self.change_state(SessionState.BUSY, Reason.MESSAGE)
            self._out.append(Write(line))
            # the messages that came while Claude was starting and asked to steer join this turn
            for waiting in [m for m in self.queue if m.steer]:
                self.queue.remove(waiting)
                self._steer(waiting)

    def _message_line(self, msg: QueuedMessage) -> bytes:
        """The stdin line of a message, with a new uuid its echo will carry (OSError: an
        attachment cannot be read)."""
        echo_id = str(uuid.uuid4())
        line = self.read_message(msg, echo_id)
        self._echo_ids[echo_id] = msg.id
        return line

    # steering ------------------------------------------------------------------------------

    def _steering(self) -> bool:
        """Whether a message now would join a running turn (rather than wait for its own)."""
        return self.current is not None and self.claude is not None and not self.ending

    def _steer(self, msg: QueuedMessage) -> None:
        """Write a message to Claude in the middle of the current turn: it joins the turn
        at Claude's next model request, or becomes the next turn if none comes."""
        assert self.current is not None
        try:
            line = self._message_line(msg)
        except OSError as exc:
            self._emit(EventKind.MESSAGE_FAILED, message_id=msg.id,
                       reason=f"cannot read attachment: {exc.strerror or exc}")
            return
        self.steered.append(msg)
        # reported before the write, as a turn's own message is (never delivered twice)
        self._emit(EventKind.STEERED, message_id=msg.id, turn=self.current.id, text=msg.text,
                   attachments=list(msg.attachments))
        self._out.append(Write(line))

    def _on_echo(self, echo_id: str) -> None:
        """Claude took a user message into the conversation (its echo)."""
        message_id = self._echo_ids.pop(echo_id, None)
        if self.current is None:
            return
        if message_id == self.current.id:
            self._began = True
            return
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
            return
        for msg in taken:
            self._echo_ids = {k: v for k, v in self._echo_ids.items() if v != msg.id}
            self.joined.append(msg.id)
            self._emit(EventKind.TAKEN, message_id=msg.id, turn=self.current.id)

    def _next_steered_turn(self) -> None:
        """The turn ended before Claude took the first steered message: Claude answers it
        (with any after it) as its next turn by itself, as it is already in its input."""
        msg = self.steered.pop(0)
        self.current = msg
        self._began = False
        self._emit(EventKind.USER, message_id=msg.id, text=msg.text, attachments=list(msg.attachments),
                   steered=True)

    def _turn_over(self) -> None:
        """Forget the turn: its message, and what was steered into it."""
        self.current = None
        self.steered.clear()
        self.joined.clear()
        self._echo_ids.clear()

    def _become_idle(self, reason: Reason) -> None:
        if self.state is not SessionState.IDLE:
            self.change_state(SessionState.IDLE, reason)
        self._arm_idle()

    def _arm_idle(self) -> None:
        self.idle_armed = True
        self._out.append(ArmTimer(IDLE_TIMER, self.idle_timeout))

    def _cancel_idle(self) -> None:
        if self.idle_armed:
            self.idle_armed = False
            self._out.append(CancelTimer(IDLE_TIMER))

    # Claude's process ----------------------------------------------------------------------

    def _start_claude(self, reason: Reason, idle_for: float | None = None) -> None:
        resume = self.started
        launch = _claude.LaunchSpec(
            claude_bin=self.spec.claude_bin, cwd=self.spec.cwd, session_id=self.spec.session_id, resume=resume,
            model=self.model, system_prompt=self.spec.system_prompt, permission_mode=self.mode,
            allowed_tools=tuple(self.allowed_tools), extra_args=self.spec.extra_args,
            max_budget_usd=None if self.budget_left is None else max(0.0, self.budget_left),
            fork_from=self.spec.fork_from,
        )
        extra: dict[str, Any] = {}
        if resume and idle_for is not None:
            extra["idle_for"] = idle_for
        first = self.current or (self.queue[0] if self.queue else None)
        if first is not None:  # the message that caused this start, so a front end can answer its sender
            extra["message_id"] = first.id
        self.change_state(SessionState.RESUMING if resume else SessionState.STARTING, reason, **extra)
        run = Run(max(self._runs, default=0) + 1, resume)
        self._runs[run.number] = run
        self._start_reason = reason
        self._out.append(StartClaude(run.number, _claude.build_argv(launch), launch.cwd))

    def claude_started(self, run_number: int, pid: int) -> list[Action]:
        run = self._runs[run_number]
        if self.ending:  # stopped while Claude was being started
            del self._runs[run_number]
            self._out.append(StopClaude(run_number, at_once=True))
            return self._take()
        run.pid = pid
        self.claude = run
        self._report(_wire.ClaudeStarted(pid))
        if self.current is not None:
            # carried over from a Claude that exited before it read it (see claude_exited)
            self._out.append(Write(self._message_line(self.current)))
            self.change_state(SessionState.BUSY, Reason.MESSAGE)
        self._pump()
        if self.current is None and not self.queue:
            self._become_idle(self._start_reason)
        return self._take()

    def claude_start_failed(self, run_number: int, error: str) -> list[Action]:
        run = self._runs.pop(run_number)
        if not self.ending:
            self._emit(EventKind.ERROR, message=f"Could not start Claude: {error}")
            self._fail_all(f"Could not start Claude: {error}")
            self._finish(SessionState.FAILED, Reason.RESUME_FAILED if run.resume else Reason.CRASHED, code=1)
        return self._take()

    def claude_output(self, run_number: int, parsed: _claude.Parsed) -> list[Action]:
        run = self._runs[run_number]
        if parsed.replay is not None:
            self._on_echo(parsed.replay)
        if parsed.init_session_id is not None:
            run.init_seen = True
            if not self.started:
                self.started = True
                self._report(_wire.ConversationStarted(parsed.init_session_id))
        if parsed.delta:  # live only: sent while linked (lost deltas are no loss)
            self._report(_wire.Delta(self.current.id if self.current else None, parsed.delta))
        if parsed.model is not None and parsed.model != self.claude_model:
            self.claude_model = parsed.model  # what a front end shows as "the model"
            self._emit(EventKind.SETTINGS, claude_model=parsed.model)
        if parsed.mode is not None and parsed.mode is not self.mode:
            self.mode = parsed.mode  # e.g. Claude left plan mode by itself
            self._emit(EventKind.SETTINGS, mode=parsed.mode.value)
        if parsed.events and self.current is None and self.idle_armed and not self.ending:
            # a turn Claude began by itself (a background task ended): the session is not
            # idle while Claude writes it; the countdown starts again from its last line
            self._arm_idle()
        for kind, body in parsed.events:
            if kind is _TOOL_USE and isinstance(body.get("tool_use_id"), str):
                self._tool_inputs[body["tool_use_id"]] = body.get("input")
            self._emit(kind, **body, **self._turn())
        if parsed.control_response is not None:
            request_id, error = parsed.control_response
            if request_id in self._interrupts_asked:
                self._interrupts_asked.discard(request_id)
                # what Claude has not taken of the steered messages, it answers next
                self._report(_wire.InterruptReport(error is None, "confirmed by Claude" if error is None
                                                   else f"Claude refused it: {error}",
                                                   tuple(m.id for m in self.steered)))
        if parsed.permission is not None:
            self._on_permission_request(parsed.permission)
        if parsed.result is not None:
            self._on_result(run, parsed.result)
        return self._take()

    def _on_permission_request(self, request: dict[str, Any]) -> None:
        body = dict(request)
        if not body.get("input") and body.get("tool_use_id") in self._tool_inputs:
            # ExitPlanMode's request comes without the plan; Claude's tool call has it
            body["tool_use_input"] = self._tool_inputs[body["tool_use_id"]]
        if body.get("tool_name") not in (permissions.QUESTION_TOOL, permissions.PLAN_TOOL):
            # what "always allow" would add, for a front end to show before it is pressed
            pending = permissions.PendingRequest.from_event(body)
            body["always"] = permissions.always_allow(pending, self.spec.cwd)[1]
            dirs = permissions.file_rule_dirs(pending, self.spec.cwd)
            if len(dirs) > 1:  # (a file tool: the directories the user may pick instead)
                body["always_dirs"] = dirs
        body.update(self._turn())
        request_id = str(body["request_id"])
        self.permissions[request_id] = body
        self._out.append(ArmTimer(_permission_timer(request_id), self.spec.permission_timeout))
        self._cancel_idle()  # never suspended while Claude waits for the user
        self._emit(EventKind.PERMISSION_REQUEST, **body)

    def _on_result(self, run: Run, result: dict[str, Any]) -> None:
        if self.started and not run.init_seen:
            # e.g. "No conversation found": the process exits next; report it then
            run.resume_failure = "; ".join(result.get("errors") or []) or result.get("text") or "resume failed"
            return
        cost = result.get("cost_usd")
        delta = 0.0
        if isinstance(cost, (int, float)):
            delta = cost - self.last_cost if cost >= self.last_cost else float(cost)
            self.last_cost = float(cost)
            if self.budget_left is not None:
                self.budget_left -= delta
        msg = self.current
        self._drop_permissions("the turn ended")
        self._tool_inputs.clear()
        self.current = None
        joined, self.joined = self.joined, []
        self._echo_ids = {k: v for k, v in self._echo_ids.items() if v in {m.id for m in self.steered}}
        self._emit(EventKind.RESULT, message_id=msg.id if msg else None, cost_delta=delta, **result,
                   **({"steered": joined} if joined else {}))
        if self.steered:
            self._next_steered_turn()
            return
        if self.pending_changes:
            self._apply_changes()
            return
        self._pump()
        if self.current is None and not self.queue:
            self._become_idle(Reason.TURN)

    def _apply_changes(self) -> None:
        if not self.pending_changes or self.ending or self.current is not None:
            return
        changes, self.pending_changes = self.pending_changes, {}
        self.model = changes.get("model", self.model)
        self.mode = changes.get("mode", self.mode)
        self.allowed_tools = changes.get("rules", self.allowed_tools)
        if self._after_stop is not None and self.claude is None:
            return  # a restart is under way (a change just before): the Claude it starts takes these too
        self._cancel_idle()
        reason = Reason.MODEL_CHANGE if "model" in changes else Reason.MODE_CHANGE
        self._stop_claude_then(lambda: None if self.ending else self._start_claude(reason))

    def claude_exited(self, run_number: int, code: int, stderr_tail: Sequence[str], overflow: bool) -> list[Action]:
        run = self._runs.pop(run_number, None)
        if run is None or run is not self.claude or self.ending:
            return self._take()
        self.claude = None
        self._interrupts_void(f"Claude exited (exit code {code}) before it confirmed the interrupt")
        self._drop_permissions("Claude exited")
        self._cancel_idle()
        tail = " | ".join(stderr_tail)
        if not self.started and not run.init_seen and not self._fresh_retried and "already in use" in tail:
            # an earlier Claude saved this conversation (it had the first message) but died
            # before its init line reached a keeper: it exists, so resume it
            log.info("keeper %s: conversation exists already; resuming it", self.spec.session)
            self._fresh_retried = True
            self.started = True
            self._report(_wire.ConversationStarted(self.spec.session_id))
            self._start_claude(Reason.MESSAGE)
            return self._take()
        extra: dict[str, Any] = {}
        reason = Reason.CRASHED
        if overflow:
            text = f"Claude wrote an output line over the {STDOUT_LIMIT // (1024 * 1024)} MiB limit; it was stopped"
        elif self.started and not run.init_seen:
            # Claude prints the reason both in its result and on stderr; say it once
            parts = [run.resume_failure] if run.resume_failure else []
            parts += [line for line in stderr_tail if line not in (run.resume_failure or "")]
            extra["detail"] = "; ".join(parts) or f"exit code {code}"
            text = f"Resume failed: {extra['detail']}"
            reason = Reason.RESUME_FAILED
            # the failed state names the message it was resumed for, so a front end shows
            # its offer (a fresh conversation) where that message came from
            if (first := self.current or (self.queue[0] if self.queue else None)) is not None:
                extra["message_id"] = first.id
        else:
            text = f"Claude exited unexpectedly (exit code {code})" + (f": {tail}" if tail else "")
        first = self.current or (self.queue[0] if self.queue else None)
        self._emit(EventKind.ERROR, message=text, exit_code=code, **({"message_id": first.id} if first else {}))
        self._fail_all(text)
        self._finish(SessionState.FAILED, reason, code=1, **extra)
        return self._take()

    def _fail_all(self, reason: str) -> None:
        # (steered messages Claude took are answered in the current turn: its failure is theirs)
        for msg in ([self.current] if self.current else []) + self.steered + list(self.queue):
            self._emit(EventKind.MESSAGE_FAILED, message_id=msg.id, reason=reason)
        self._turn_over()
        self.queue.clear()

    # stopping ------------------------------------------------------------------------------

    def _suspend(self, reason: Reason) -> None:
        if self.ending or self.current is not None or self.queue or self.permissions:
            return
        self._cancel_idle()
        self.change_state(SessionState.SUSPENDING, reason)
        self._stop_claude_then(lambda: self._finish(SessionState.SUSPENDED, reason))

    def _stop_claude_then(self, then: Callable[[], None]) -> None:
        """Stop Claude, then ``then`` (at once if none runs)."""
        run, self.claude = self.claude, None
        if run is None:
            then()
            return
        self._interrupts_void("Claude was stopped before it confirmed the interrupt")
        self._drop_permissions("Claude was stopped")
        self._after_stop = (run.number, then)
        self._out.append(StopClaude(run.number))

    def claude_stopped(self, run_number: int) -> list[Action]:
        if self._after_stop is not None and self._after_stop[0] == run_number:
            then, self._after_stop = self._after_stop[1], None
            then()
        return self._take()

    def _finish(self, state: SessionState, reason: Reason, code: int = 0, **extra: Any) -> None:
        self.change_state(state, reason, **extra)
        self._report(_wire.Bye(state.value, reason.value))
        self._out.append(Finish(code))
        self.done = True
