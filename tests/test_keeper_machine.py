"""The keeper's session logic, in-process: ``KeeperMachine`` fed commands, Claude's lines
(through the real parser), its exits and the timers of a ``FakeClock``. Every race of a
keeper (a message against the suspension, a model change mid-turn, a resume failure, the
"already in use" retry, an interrupt, a permission prompt, Claude exiting mid-turn) is an
ordinary deterministic test here; ``test_keeper`` proves with real processes what only
they can."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import EventKind, Reason, SessionState
from supervisord_claude import _claude, _wire
from supervisord_claude._clock import FakeClock, TimerHandle
from supervisord_claude._wire import QueuedMessage
from supervisord_claude.keeper._actions import (
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
from supervisord_claude.keeper._idle import IDLE_TIMER
from supervisord_claude.keeper._machine import EDGES, IllegalTransition, KeeperMachine

S = SessionState


def line(**obj: Any) -> _claude.Parsed:
    return _claude.parse_line(json.dumps(obj).encode())


INIT = line(type="system", subtype="init", session_id="sid", model="claude-x")


def result(text: str = "done", cost: float = 0.01, **extra: Any) -> _claude.Parsed:
    return line(type="result", subtype="success", result=text, total_cost_usd=cost, **extra)


def permission(request_id: str = "r1") -> _claude.Parsed:
    return line(type="control_request", request_id=request_id,
                request={"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "touch x"}})


class Keeper:
    """The machine, with the adapter's part played in memory: timers on a fake clock,
    every other action recorded."""

    def __init__(self, started: bool = False, idle_timeout: float = 10, **spec: Any) -> None:
        self.clock = FakeClock()
        self.m = KeeperMachine(_wire.KeeperSpec(
            session="s", instance="i", runtime_dir="/nonexistent", claude_bin="claude", cwd="/work",
            session_id="sid", started=started, idle_timeout=idle_timeout, **spec))
        self.actions: list[Action] = []
        self.timers: dict[str, TimerHandle] = {}
        self.pid = 100

    def do(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            self.actions.append(action)
            if isinstance(action, (ArmTimer, CancelTimer)) and action.key in self.timers:
                self.timers.pop(action.key).cancel()
            if isinstance(action, ArmTimer):
                self.timers[action.key] = self.clock.call_later(action.delay, lambda k=action.key: self._fire(k))
        return actions

    def _fire(self, key: str) -> None:
        del self.timers[key]
        self.do(self.m.timer_fired(key))

    # what happens
    def start(self) -> StartClaude:
        self.do(self.m.start())
        return self.last(StartClaude)

    def claude_runs(self) -> None:
        self.pid += 1
        self.do(self.m.claude_started(self.last(StartClaude).run, self.pid))

    def claude_says(self, *parsed: _claude.Parsed) -> None:
        for p in parsed:
            self.do(self.m.claude_output(self.last(StartClaude).run, p))

    def claude_exits(self, code: int, *stderr: str, overflow: bool = False) -> None:
        self.do(self.m.claude_exited(self.last(StartClaude).run, code, stderr, overflow))

    def claude_stopped(self) -> None:
        self.do(self.m.claude_stopped(self.last(StopClaude).run))

    def send(self, *cmds: _wire.Message) -> None:
        for cmd in cmds:
            self.do(self.m.command(cmd))

    def deliver(self, msg_id: int, text: str) -> None:
        self.send(_wire.Deliver(QueuedMessage(msg_id, text)))

    def running(self, started: bool = False) -> None:
        """Claude started, said hello, and the session is idle."""
        self.start()
        self.claude_runs()
        if not started:
            self.claude_says(INIT)

    # what it did
    def last(self, kind: type[Any]) -> Any:
        return [a for a in self.actions if isinstance(a, kind)][-1]

    def of(self, kind: type[Any]) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def events(self, kind: EventKind) -> list[dict[str, Any]]:
        return [a.body for a in self.actions if isinstance(a, Emit) and a.kind is kind]

    def states(self) -> list[str]:
        return [b["state"] for b in self.events(EventKind.STATE)]

    def reports(self, kind: type[Any]) -> list[Any]:
        return [a.msg for a in self.actions if isinstance(a, Report) and isinstance(a.msg, kind)]

    def written(self) -> list[dict[str, Any]]:
        return [json.loads(w.line) for w in self.of(Write)]

    def told(self) -> list[str]:
        """The user messages written to Claude, in order."""
        out = []
        for w in self.written():
            if w["type"] == "user":
                content = w["message"]["content"]
                out.append(content if isinstance(content, str) else content[0]["text"])
        return out


# starting, answering, queueing ---------------------------------------------------------


def test_a_new_session_starts_claude_with_its_session_id_and_waits_idle() -> None:
    k = Keeper()
    start = k.start()
    assert "--session-id" in start.argv and "--resume" not in start.argv and start.cwd == "/work"
    k.claude_runs()
    assert k.states() == ["starting", "idle"] and k.reports(_wire.ClaudeStarted) == [_wire.ClaudeStarted(101)]
    k.claude_says(INIT)
    assert k.reports(_wire.ConversationStarted) == [_wire.ConversationStarted("sid")]
    assert k.events(EventKind.SETTINGS) == [{"claude_model": "claude-x"}]
    assert IDLE_TIMER in k.timers


def test_a_message_goes_to_claude_and_its_result_ends_the_turn_with_the_turns_cost() -> None:
    k = Keeper(cost_baseline=0.5)
    k.running()
    k.deliver(1, "hello")
    assert k.told() == ["hello"]
    assert k.states()[-1] == "busy" and IDLE_TIMER not in k.timers
    assert k.events(EventKind.USER) == [{"message_id": 1, "text": "hello", "attachments": []}]
    k.claude_says(line(type="assistant", message={"content": [{"type": "text", "text": "hi"}]}), result(cost=0.75))
    assert k.events(EventKind.ASSISTANT_TEXT) == [{"text": "hi", "message_id": 1}]
    [res] = k.events(EventKind.RESULT)
    assert res["message_id"] == 1 and res["cost_delta"] == 0.25 and res["text"] == "done"
    assert k.states()[-1] == "idle" and IDLE_TIMER in k.timers


def test_messages_sent_while_busy_wait_their_turn_in_order() -> None:
    k = Keeper()
    k.running()
    for i, text in enumerate(("one", "two", "three"), 1):
        k.deliver(i, text)
    assert len(k.of(Write)) == 1  # one message in flight at a time
    k.claude_says(result())
    k.claude_says(result())
    assert k.told() == ["one", "two", "three"]
    assert [r["message_id"] for r in k.events(EventKind.RESULT)] == [1, 2]


def test_a_message_whose_attachment_cannot_be_read_fails_alone() -> None:
    k = Keeper()
    k.running()
    k.send(_wire.Deliver(QueuedMessage(1, "look", ("/nonexistent/file.png",))))
    k.deliver(2, "next")
    [failed] = k.events(EventKind.MESSAGE_FAILED)
    assert failed == {"message_id": 1, "reason": "attachment /nonexistent/file.png is gone"}
    assert k.told() == ["next"]


def test_every_transition_is_checked_against_the_table() -> None:
    k = Keeper()
    with pytest.raises(IllegalTransition):
        k.m.change_state(S.BUSY, Reason.MESSAGE)  # no Claude was started
    assert k.m.state is S.SUSPENDED and k.m._take() == []
    k.m.change_state(S.RESUMING, Reason.MESSAGE)
    k.m.change_state(S.BUSY, Reason.MESSAGE)
    with pytest.raises(IllegalTransition):
        k.m.change_state(S.SUSPENDED, Reason.IDLE_TIMEOUT)  # only through suspending
    assert EDGES[S.FAILED] == frozenset()  # a failed keeper only exits


# the idle timer against messages --------------------------------------------------------


def test_the_idle_timer_suspends_an_idle_session_and_the_keeper_ends() -> None:
    k = Keeper(idle_timeout=10)
    k.running()
    k.clock.advance(10)
    assert k.states()[-1] == "suspending" and k.of(StopClaude) == [StopClaude(1)]
    k.claude_stopped()
    assert k.states()[-1] == "suspended" and k.reports(_wire.Bye) == [_wire.Bye("suspended", "idle-timeout")]
    assert k.actions[-1] == Finish(0) and k.m.done


def test_a_message_just_before_the_idle_timer_fires_is_answered_and_the_session_not_suspended() -> None:
    k = Keeper(idle_timeout=10)
    k.running()
    k.clock.advance(9.9)
    k.deliver(1, "just in time")
    k.clock.advance(100)
    assert "suspending" not in k.states() and k.told() == ["just in time"]
    k.claude_says(result())
    k.clock.advance(9.9)
    assert "suspending" not in k.states()  # the timer started again at the turn's end
    k.clock.advance(0.1)
    assert k.states()[-1] == "suspending"


def test_a_turn_claude_begins_by_itself_is_not_cut_by_the_idle_timer() -> None:
    """A background task's end starts a turn no message began: while Claude writes it the
    countdown starts again from each line, and the turn's result starts it once more."""
    k = Keeper(idle_timeout=10)
    k.running()
    for _ in range(5):
        k.clock.advance(9)
        k.claude_says(line(type="assistant", message={"content": [{"type": "text", "text": "still on it"}]}))
    assert "suspending" not in k.states()
    k.clock.advance(9)
    k.claude_says(result("the background task ended"))
    k.clock.advance(9.9)
    assert "suspending" not in k.states() and k.events(EventKind.RESULT)[-1]["message_id"] is None
    k.clock.advance(0.1)
    assert k.states()[-1] == "suspending"


def test_a_message_after_the_suspension_was_decided_goes_back_to_the_supervisor() -> None:
    k = Keeper(idle_timeout=10)
    k.running()
    k.clock.advance(10)
    k.deliver(41, "late")
    assert k.reports(_wire.Rejected) == [_wire.Rejected((41,))]  # delivered again after the resume
    assert not k.events(EventKind.USER) and not k.of(Write)  # never written to the dying Claude


def test_the_idle_timer_never_suspends_a_busy_session() -> None:
    k = Keeper(idle_timeout=1)
    k.running()
    k.deliver(1, "a long one")
    k.send(_wire.SetTimeout(1))
    k.clock.advance(60)
    assert "suspending" not in k.states() and not k.of(StopClaude)


def test_an_expiry_while_a_message_waits_tries_again_later() -> None:
    k = Keeper(idle_timeout=10)
    k.running()
    k.m.turns.queue.append(QueuedMessage(7, "queued while Claude restarts"))
    k.clock.advance(10)
    assert "suspending" not in k.states() and IDLE_TIMER in k.timers


def test_a_new_timeout_applies_to_the_running_timer_from_now() -> None:
    k = Keeper(idle_timeout=100)
    k.running()
    k.clock.advance(50)
    k.send(_wire.SetTimeout(5))
    k.clock.advance(4.9)
    assert "suspending" not in k.states()
    k.clock.advance(0.1)
    assert k.states()[-1] == "suspending"


def test_an_explicit_suspend_waits_for_no_turn() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "busy")
    k.send(_wire.Suspend(Reason.REQUESTED.value))
    assert "suspending" not in k.states()
    k.claude_says(result())
    k.send(_wire.Suspend(Reason.REQUESTED.value))
    assert k.states()[-1] == "suspending"


# a model change mid-turn ----------------------------------------------------------------


def test_a_model_change_mid_turn_waits_for_the_turn_then_restarts_claude_resuming_with_the_model() -> None:
    k = Keeper(model="model-a")
    k.running()
    k.deliver(1, "one")
    k.send(_wire.SetModel("model-b"))
    assert not k.of(StopClaude)  # the turn goes on
    k.deliver(2, "two")
    k.claude_says(result())
    assert k.of(StopClaude) == [StopClaude(1)] and len(k.of(Write)) == 1  # "two" waits for the new Claude
    k.deliver(3, "three")  # arrives while Claude stops
    k.claude_stopped()
    start = k.last(StartClaude)
    assert start.argv[start.argv.index("--model") + 1] == "model-b" and "--resume" in start.argv
    assert k.events(EventKind.STATE)[-1] == {"state": "resuming", "reason": "model-change", "message_id": 2}
    k.claude_runs()
    assert k.told() == ["one", "two"]
    k.claude_says(INIT, result())
    assert k.told()[-1] == "three"


def test_a_mode_change_of_an_idle_session_restarts_claude_at_once() -> None:
    k = Keeper()
    k.running()
    k.send(_wire.SetMode("plan"))
    k.claude_stopped()
    start = k.last(StartClaude)
    assert start.argv[start.argv.index("--permission-mode") + 1] == "plan"
    assert k.states()[-1] == "resuming" and k.events(EventKind.STATE)[-1]["reason"] == "mode-change"


@pytest.mark.parametrize(("change", "reason"), [(_wire.SetRules(("Bash(ls:*)",)), "rules-change"),
                                                (_wire.SetBudget(5.0), "budget-change")])
def test_a_rules_or_budget_change_restarts_claude_saying_which_it_was(change: _wire.Message, reason: str) -> None:
    k = Keeper(budget_usd=2.0)
    k.running()
    k.send(change)
    k.claude_stopped()
    assert k.events(EventKind.STATE)[-1] == {"state": "resuming", "reason": reason}
    k.claude_runs()
    assert k.states()[-1] == "idle" and k.events(EventKind.STATE)[-1]["reason"] == reason


def test_a_stop_while_claude_restarts_for_a_model_change_ends_the_keeper_without_a_new_claude() -> None:
    k = Keeper()
    k.running()
    k.send(_wire.SetModel("model-b"), _wire.Stop(Reason.SHUTDOWN.value))
    assert k.states()[-2:] == ["suspending", "suspended"] and k.m.done
    k.claude_stopped()
    assert len(k.of(StartClaude)) == 1


# a resume failure, the "already in use" retry, Claude exiting -----------------------------


def test_a_resume_failure_is_reported_once_fails_the_message_and_starts_no_fresh_conversation() -> None:
    k = Keeper(started=True, messages=(QueuedMessage(5, "are you there?"),))
    assert "--resume" in k.start().argv
    k.claude_runs()
    k.claude_says(line(type="result", subtype="error_during_execution", is_error=True,
                       errors=["No conversation found with session ID: sid"]))
    assert not k.events(EventKind.RESULT)  # not the message's answer
    k.claude_exits(1, "No conversation found with session ID: sid")
    [error] = k.events(EventKind.ERROR)
    assert error["message"] == "Resume failed: No conversation found with session ID: sid"
    assert error["message_id"] == 5 and error["exit_code"] == 1
    assert [f["message_id"] for f in k.events(EventKind.MESSAGE_FAILED)] == [5]
    failed = k.events(EventKind.STATE)[-1]
    assert failed == {"state": "failed", "reason": "resume-failed", "message_id": 5,
                      "detail": "No conversation found with session ID: sid"}
    assert k.actions[-1] == Finish(1) and len(k.of(StartClaude)) == 1


def test_already_in_use_resumes_the_conversation_once_and_carries_the_message_over() -> None:
    k = Keeper()
    k.start()
    k.claude_runs()
    k.deliver(1, "first")  # Claude saved the conversation with it, then died before its init line
    k.claude_exits(1, "Error: Session ID sid is already in use.")
    assert k.reports(_wire.ConversationStarted) == [_wire.ConversationStarted("sid")]
    assert "--resume" in k.last(StartClaude).argv and not k.events(EventKind.MESSAGE_FAILED)
    k.claude_runs()
    assert k.told() == ["first", "first"]
    assert k.states()[-1] == "busy"
    k.claude_exits(1, "Error: Session ID sid is already in use.")  # no second retry
    assert len(k.of(StartClaude)) == 2 and k.states()[-1] == "failed"
    assert [f["message_id"] for f in k.events(EventKind.MESSAGE_FAILED)] == [1]


def claude_answers_a_message_with_a_note(tmp_path: Any) -> tuple[Keeper, Any]:
    """A new session's Claude runs and was given message 1 with an attached file."""
    note = tmp_path / "note.txt"
    note.write_text("notes")
    k = Keeper()
    k.start()
    k.claude_runs()
    k.send(_wire.Deliver(QueuedMessage(1, "look", (str(note),))))
    return k, note


def test_a_message_carried_over_to_a_resumed_claude_whose_attachment_vanished_fails_alone(tmp_path) -> None:
    # the message was read for the first Claude; it exited "already in use", and its
    # attachment was deleted before the Claude that resumes the conversation could read it
    k, note = claude_answers_a_message_with_a_note(tmp_path)
    k.deliver(2, "next")
    note.unlink()
    k.claude_exits(1, "Error: Session ID sid is already in use.")
    k.claude_runs()
    [failed] = k.events(EventKind.MESSAGE_FAILED)
    assert failed == {"message_id": 1, "reason": f"attachment {note} is gone"}
    # the session goes on: the next message is answered by the resumed Claude
    assert k.reports(_wire.ClaudeStarted)[-1] == _wire.ClaudeStarted(k.pid)
    assert k.told()[-1] == "next" and k.states()[-1] == "busy"
    k.claude_says(INIT, result())
    assert [r["message_id"] for r in k.events(EventKind.RESULT)] == [2] and k.states()[-1] == "idle"


def test_a_message_carried_over_whose_attachment_vanished_leaves_the_session_idle(tmp_path) -> None:
    k, note = claude_answers_a_message_with_a_note(tmp_path)
    note.unlink()
    k.claude_exits(1, "Error: Session ID sid is already in use.")
    k.claude_runs()
    assert [f["message_id"] for f in k.events(EventKind.MESSAGE_FAILED)] == [1]
    assert k.states()[-1] == "idle" and IDLE_TIMER in k.timers
    k.deliver(2, "again")
    assert k.told()[-1] == "again" and k.states()[-1] == "busy"


def test_claude_exiting_mid_turn_fails_the_answered_and_the_queued_messages() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "please crash")
    k.deliver(2, "behind it")
    k.claude_exits(3, "boom")
    [error] = k.events(EventKind.ERROR)
    assert error["message"] == "Claude exited unexpectedly (exit code 3): boom" and error["message_id"] == 1
    assert [f["message_id"] for f in k.events(EventKind.MESSAGE_FAILED)] == [1, 2]
    assert k.events(EventKind.STATE)[-1] == {"state": "failed", "reason": "crashed"} and k.actions[-1] == Finish(1)


def test_an_output_line_over_the_limit_fails_the_turn_clearly() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "hugeline")
    k.claude_exits(-9, overflow=True)
    assert "over the 64 MiB limit" in k.events(EventKind.MESSAGE_FAILED)[0]["reason"]


def test_claude_that_cannot_be_started_fails_the_session() -> None:
    k = Keeper(messages=(QueuedMessage(1, "hi"),))
    k.do(k.m.claude_start_failed(k.start().run, "No such file or directory"))
    assert k.events(EventKind.ERROR)[0]["message"] == "Could not start Claude: No such file or directory"
    assert [f["message_id"] for f in k.events(EventKind.MESSAGE_FAILED)] == [1] and k.states()[-1] == "failed"


def test_the_exit_of_a_claude_that_was_stopped_is_no_crash() -> None:
    k = Keeper()
    k.running()
    k.send(_wire.SetModel("model-b"))
    k.claude_exits(-15)  # the old Claude's exit, after the stop
    assert not k.events(EventKind.ERROR) and "failed" not in k.states()


# stopping --------------------------------------------------------------------------------


def test_a_stop_mid_turn_gives_back_the_queue_and_fails_the_answered_message() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "long")
    k.deliver(2, "queued")
    k.send(_wire.Stop(Reason.SHUTDOWN.value))
    assert k.reports(_wire.Rejected) == [_wire.Rejected((2,))] and k.states()[-1] == "suspending"
    k.claude_stopped()
    [failed] = k.events(EventKind.MESSAGE_FAILED)
    assert failed == {"message_id": 1, "reason": "Claude was stopped before it finished answering (supervisor"
                      " shutdown)"}
    assert k.states()[-1] == "suspended" and k.actions[-1] == Finish(0)


def test_a_claude_that_starts_after_the_keeper_began_to_stop_is_killed_at_once() -> None:
    k = Keeper()
    start = k.start()
    k.send(_wire.Stop(Reason.REQUESTED.value))
    assert k.m.done
    k.claude_runs()
    assert k.actions[-1] == StopClaude(start.run, at_once=True) and not k.reports(_wire.ClaudeStarted)


# interrupts -------------------------------------------------------------------------------


def _interrupted() -> tuple[Keeper, str]:
    k = Keeper()
    k.running()
    k.deliver(1, "slow")
    k.send(_wire.Interrupt())
    request = k.written()[-1]
    assert request["type"] == "control_request" and request["request"]["subtype"] == "interrupt"
    return k, request["request_id"]


def test_an_interrupt_confirmed_by_claude_is_reported_confirmed() -> None:
    k, request_id = _interrupted()
    k.claude_says(line(type="control_response", response={"subtype": "success", "request_id": request_id}))
    assert k.reports(_wire.InterruptReport) == [_wire.InterruptReport(True, "confirmed by Claude")]


def test_an_interrupt_claude_refuses_is_reported_refused() -> None:
    k, request_id = _interrupted()
    k.claude_says(line(type="control_response", response={"subtype": "error", "request_id": request_id,
                                                           "error": "no turn"}))
    assert k.reports(_wire.InterruptReport) == [_wire.InterruptReport(False, "Claude refused it: no turn")]


def test_an_interrupt_claude_never_confirms_is_reported_when_it_exits() -> None:
    k, _ = _interrupted()
    k.claude_exits(3)
    [report] = k.reports(_wire.InterruptReport)
    assert not report.confirmed and "exited (exit code 3) before it confirmed" in report.detail


def test_an_interrupt_that_cannot_be_written_is_reported_at_once() -> None:
    k, request_id = _interrupted()
    k.do(k.m.interrupt_not_written(request_id))
    assert k.reports(_wire.InterruptReport) == [_wire.InterruptReport(False, "Claude's input is closed (it is exiting)")]


def test_an_interrupt_with_no_turn_running_is_answered_at_once() -> None:
    k = Keeper()
    k.running()
    k.send(_wire.Interrupt())
    [report] = k.reports(_wire.InterruptReport)
    assert not report.confirmed and "turn had ended" in report.detail and not k.of(Write)


def test_a_supervisor_away_too_long_interrupts_the_turn_and_says_why() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "long")
    k.do(k.m.supervisor_away_too_long())
    assert k.written()[-1]["request"]["subtype"] == "interrupt"
    assert "away for too long" in k.events(EventKind.ERROR)[0]["message"]



def test_a_supervisor_away_too_long_while_claude_restarts_reports_no_interrupt_nobody_asked_for() -> None:
    k = Keeper()
    k.start()
    k.claude_runs()
    k.deliver(1, "long")
    k.claude_exits(1, "Error: Session ID sid is already in use.")  # the turn waits for the next Claude
    k.do(k.m.supervisor_away_too_long())
    assert not k.reports(_wire.InterruptReport) and k.told() == ["long"]
    assert "away for too long" in k.events(EventKind.ERROR)[0]["message"]


# permission requests ---------------------------------------------------------------------


def test_a_permission_request_waits_for_the_answer_and_blocks_the_suspension() -> None:
    k = Keeper(idle_timeout=1, permission_timeout=600)
    k.running()
    k.deliver(1, "needperm")
    k.claude_says(permission("r1"))
    [request] = k.events(EventKind.PERMISSION_REQUEST)
    assert request["request_id"] == "r1" and request["tool_name"] == "Bash" and request["message_id"] == 1
    assert k.m.hello(1).pending == (request,)  # a new supervisor learns of it
    k.clock.advance(300)  # many idle timeouts pass while Claude waits for the user
    assert "suspending" not in k.states()
    decision = _claude.allow_decision({"command": "touch x"})
    k.send(_wire.Permit("r1", decision, {"allow": True, "by": "user"}, rules=("Bash(touch:*)",)))
    assert k.written()[-1]["response"]["response"] == decision
    assert k.events(EventKind.PERMISSION_RESOLVED) == [{"request_id": "r1", "allow": True, "by": "user",
                                                         "message_id": 1}]
    k.clock.advance(600)
    assert len(k.events(EventKind.PERMISSION_RESOLVED)) == 1  # its timeout was cancelled
    k.send(_wire.Permit("r1", decision, {"allow": True}))  # a second answer is no answer
    assert len(k.events(EventKind.PERMISSION_RESOLVED)) == 1
    k.claude_says(result())
    k.send(_wire.SetModel("m"))
    k.claude_stopped()
    assert "Bash(touch:*)" in k.last(StartClaude).argv  # the rule goes to the next Claude


def test_an_unanswered_permission_request_is_denied_at_its_timeout() -> None:
    k = Keeper(permission_timeout=60)
    k.running()
    k.deliver(1, "needperm")
    k.claude_says(permission("r1"))
    k.clock.advance(60)
    [resolved] = k.events(EventKind.PERMISSION_RESOLVED)
    assert resolved["by"] == "timeout" and resolved["allow"] is False
    assert k.written()[-1]["response"]["response"]["behavior"] == "deny"


def test_a_permission_request_is_void_when_the_turn_ends_or_claude_exits() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "needperm")
    k.claude_says(permission("r1"), result())
    assert k.events(EventKind.PERMISSION_RESOLVED)[0]["message"] == "the turn ended"
    k.deliver(2, "needperm")
    k.claude_says(permission("r2"))
    k.claude_exits(3)
    assert k.events(EventKind.PERMISSION_RESOLVED)[1]["message"] == "Claude exited"
    assert not k.timers.get("permission r2")


def test_the_machine_itself_does_no_io() -> None:
    import ast
    import importlib
    import inspect

    imported = set()
    for part in ("_machine", "_actions", "_turns", "_prompts", "_interrupts", "_settings", "_runs", "_idle"):
        module = importlib.import_module(f"supervisord_claude.keeper.{part}")
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "os", "zmq", "socket", "subprocess", "signal", "time", "threading", "selectors"}


# steering: a message while a turn runs ------------------------------------------------------


def steer(k: Keeper, msg_id: int, text: str) -> str:
    """Deliver a message that asks to steer; the uuid it was written to Claude with."""
    k.send(_wire.Deliver(QueuedMessage(msg_id, text, steer=True)))
    return str(k.written()[-1]["uuid"])


def echo(uuid: str, text: str = "") -> _claude.Parsed:
    """Claude's echo of a user message it took (--replay-user-messages)."""
    return line(type="user", message={"role": "user", "content": text}, isReplay=True, uuid=uuid)


TOOL_RESULT = line(type="user", message={"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]})


def test_claude_runs_with_replayed_user_messages() -> None:
    k = Keeper()
    assert "--replay-user-messages" in k.start().argv


def test_a_message_while_a_turn_runs_is_written_at_once_and_joins_the_turn_when_claude_takes_it() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "run the tests")
    k.claude_says(echo(k.written()[-1]["uuid"], "run the tests"))
    uuid = steer(k, 2, "only the fast ones")
    assert k.told() == ["run the tests", "only the fast ones"]  # at once, not after the turn
    assert k.events(EventKind.STEERED) == [{"message_id": 2, "turn": 1, "text": "only the fast ones",
                                            "attachments": []}]
    assert k.events(EventKind.TAKEN) == []  # written is not taken
    k.claude_says(TOOL_RESULT, echo(uuid, "only the fast ones"))
    assert k.events(EventKind.TAKEN) == [{"message_id": 2, "turn": 1}]
    k.claude_says(result("fast tests pass"))
    [res] = k.events(EventKind.RESULT)
    assert res["message_id"] == 1 and res["steered"] == [2]  # one result for both
    assert k.states()[-1] == "idle" and len(k.of(Write)) == 2  # nothing written again


def test_a_message_marked_queue_waits_for_its_own_turn() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    k.deliver(2, "second")  # steer=False: what `send --queue` sends
    assert k.told() == ["first"] and k.events(EventKind.STEERED) == []
    k.claude_says(result())
    assert k.told() == ["first", "second"] and k.events(EventKind.USER)[-1]["message_id"] == 2


def test_a_message_to_an_idle_session_begins_a_turn_as_before() -> None:
    k = Keeper()
    k.running()
    steer(k, 1, "hello")
    assert k.events(EventKind.USER) == [{"message_id": 1, "text": "hello", "attachments": []}]
    assert k.events(EventKind.STEERED) == [] and k.states()[-1] == "busy"


def test_a_steered_message_claude_had_not_taken_when_the_turn_ended_becomes_the_next_turn_once() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "write the essay")
    uuid = steer(k, 2, "in French")  # too late: the final answer is already streaming
    k.claude_says(result("essay"))
    [first] = k.events(EventKind.RESULT)
    assert first["message_id"] == 1 and "steered" not in first
    # Claude has it in its input and answers it next by itself: not written again, not lost
    assert k.told() == ["write the essay", "in French"] and k.states()[-1] == "busy"
    assert k.events(EventKind.USER)[-1] == {"message_id": 2, "text": "in French", "attachments": [],
                                            "steered": True}
    k.claude_says(INIT, echo(uuid, "in French"), result("essai"))
    assert [r["message_id"] for r in k.events(EventKind.RESULT)] == [1, 2]
    assert k.events(EventKind.TAKEN) == [] and k.states()[-1] == "idle" and len(k.of(Write)) == 2


def test_several_late_messages_claude_takes_as_one_turn_end_in_that_turn() -> None:
    """Claude joins messages that waited for the next turn into one user message, with an
    echo of its own (no uuid of ours): each is answered by that one turn."""
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    steer(k, 2, "late A")
    steer(k, 3, "late B")
    k.claude_says(result())
    k.claude_says(INIT, echo("a-uuid-claude-made", "late A\nlate B"))
    assert k.events(EventKind.TAKEN) == [{"message_id": 3, "turn": 2}]
    k.claude_says(result())
    assert [(r["message_id"], r.get("steered")) for r in k.events(EventKind.RESULT)] == [(1, None), (2, [3])]
    assert k.states()[-1] == "idle" and k.events(EventKind.MESSAGE_FAILED) == []


def test_queued_messages_wait_behind_a_steered_message_that_became_the_next_turn() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    k.deliver(2, "queued")
    steer(k, 3, "steered late")
    k.claude_says(result())
    assert k.told() == ["first", "steered late"]  # Claude answers the steered one next
    k.claude_says(result())
    assert k.told() == ["first", "steered late", "queued"]
    assert [r["message_id"] for r in k.events(EventKind.RESULT)] == [1, 3]


def test_steer_messages_that_came_while_claude_started_join_the_first_turn() -> None:
    k = Keeper(started=True)
    k.start()
    k.send(_wire.Deliver(QueuedMessage(1, "first", steer=True)), _wire.Deliver(QueuedMessage(2, "more", steer=True)),
           _wire.Deliver(QueuedMessage(3, "own turn")))
    assert k.told() == []  # Claude is not running yet
    k.claude_runs()
    assert k.told() == ["first", "more"]
    assert [e["message_id"] for e in k.events(EventKind.STEERED)] == [2]
    k.claude_says(INIT, echo(k.written()[-1]["uuid"]), result())
    assert k.told() == ["first", "more", "own turn"]
    assert [r.get("steered") for r in k.events(EventKind.RESULT)] == [[2]]


def test_an_interrupt_says_which_steered_messages_claude_answers_next() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "slow work")
    taken = steer(k, 2, "taken one")
    steer(k, 3, "not taken")
    k.claude_says(echo(taken))
    k.send(_wire.Interrupt())
    k.claude_says(line(type="control_response", response={"subtype": "success",
                                                          "request_id": k.written()[-1]["request_id"]}))
    assert k.reports(_wire.InterruptReport) == [_wire.InterruptReport(True, "confirmed by Claude", (3,))]
    k.claude_says(line(type="result", subtype="error_during_execution", is_error=True,
                       terminal_reason="aborted_streaming"))
    [res] = k.events(EventKind.RESULT)
    assert res["interrupted"] and res["steered"] == [2]
    assert k.events(EventKind.USER)[-1]["message_id"] == 3  # Claude's next turn, as the CLI does


def test_drop_queued_leaves_steered_messages_claude_already_has() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    k.deliver(2, "queued")
    steer(k, 3, "steered")
    k.send(_wire.DropQueued())
    assert [e["message_id"] for e in k.events(EventKind.MESSAGE_FAILED)] == [2]
    assert k.m.hello(7).steered == (3,) and k.m.hello(7).queued == ()


def test_claude_exiting_mid_turn_fails_the_steered_messages_it_had_not_taken_only() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    taken = steer(k, 2, "taken")
    steer(k, 3, "not taken")
    k.claude_says(echo(taken))
    k.claude_exits(1, "boom")
    assert [e["message_id"] for e in k.events(EventKind.MESSAGE_FAILED)] == [1, 3]
    assert k.events(EventKind.TAKEN) == [{"message_id": 2, "turn": 1}]  # ended with its turn, which failed


@pytest.mark.parametrize("reason", [Reason.SHUTDOWN, Reason.ATTACHED, Reason.REQUESTED])
def test_a_stop_mid_turn_gives_back_the_steered_messages_claude_never_took_as_the_queued_ones(reason: Reason) -> None:
    """A message written into the running turn that Claude had not taken when it was
    stopped is not in the conversation (Claude echoes one when it takes it): it is given
    back to the supervisor as a queued one is — delivered after the next start (or the
    terminal), failed with the archive — not failed while the queued ones are kept. One
    Claude took is the turn's, and fails with it."""
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    k.claude_says(echo(k.written()[-1]["uuid"], "first"))
    taken = steer(k, 2, "taken")
    steer(k, 3, "never taken")
    k.deliver(4, "queued")
    k.claude_says(echo(taken))
    k.send(_wire.Stop(reason.value))
    k.claude_stopped()
    assert [e["message_id"] for e in k.events(EventKind.MESSAGE_FAILED)] == [1]
    assert [i for r in k.reports(_wire.Rejected) for i in r.ids] == [4, 3]
    assert k.states()[-1] == "suspended" and k.actions[-1] == Finish(0)


def test_a_steered_message_whose_attachment_cannot_be_read_fails_alone() -> None:
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    k.send(_wire.Deliver(QueuedMessage(2, "look", ("/nonexistent/file.png",), steer=True)))
    [failed] = k.events(EventKind.MESSAGE_FAILED)
    assert failed["message_id"] == 2 and k.events(EventKind.STEERED) == [] and k.told() == ["first"]
    k.claude_says(result())
    assert k.states()[-1] == "idle"


def test_a_steered_message_is_reported_before_it_is_written() -> None:
    """A keeper killed between the two leaves it 'written' (reported not delivered by the
    supervisor), never sent twice."""
    k = Keeper()
    k.running()
    k.deliver(1, "first")
    steer(k, 2, "steered")
    kinds = [a.kind if isinstance(a, Emit) else type(a) for a in k.actions[-2:]]
    assert kinds == [EventKind.STEERED, Write]


def test_a_budget_it_counted_itself_restarts_nothing_and_none_left_starts_no_turn() -> None:
    k = Keeper(budget_usd=0.02)
    k.running()
    k.deliver(1, "one")
    k.claude_says(result(cost=0.01))  # $0.01 of its $0.02 spent: $0.01 left, as it counts itself
    starts = len(k.of(StartClaude))
    k.send(_wire.SetBudget(0.01))  # the supervisor's count says the same: its Claude has that limit
    assert len(k.of(StartClaude)) == starts and not k.of(StopClaude)
    uncapped = Keeper()
    uncapped.running()
    uncapped.send(_wire.SetBudget(None))  # (no cap, still: e.g. told so after a supervisor restart)
    assert not uncapped.of(StopClaude)
    k.send(_wire.SetBudget(0.0))  # other sessions spent the rest of the cap for all
    k.deliver(2, "two")
    k.claude_stopped()  # (restarted with the new limit, between turns)
    k.claude_runs()
    k.claude_says(INIT)
    [failed] = k.events(EventKind.MESSAGE_FAILED)
    assert failed["message_id"] == 2 and failed["reason"].startswith("not sent: the daily cap is reached")
    assert not [w for w in k.of(Write) if b"two" in w.line]  # no turn started


def test_two_changes_in_a_row_restart_claude_once_with_both() -> None:
    k = Keeper()
    k.running()
    k.send(_wire.SetRules(()), _wire.SetRules(("WebFetch(domain:*.example.com)",)))  # before Claude stopped
    assert len(k.of(StopClaude)) == 1
    starts = len(k.of(StartClaude))
    k.claude_stopped()
    assert len(k.of(StartClaude)) == starts + 1  # one Claude, not two of the same conversation
    argv = k.last(StartClaude).argv
    assert argv[argv.index("--allowedTools") + 1] == "WebFetch(domain:*.example.com)"


def test_a_change_while_the_restarted_claude_starts_restarts_it_once_it_runs_and_no_message_reaches_the_old_one() -> None:
    """(The CI failure of stop 34: a rule removed, then one added while the Claude started for
    the removal was starting: a second Claude was started beside it, and the next message
    went to whichever said it ran first — the one without the new rule.)"""
    k = Keeper()
    k.running()
    k.send(_wire.SetRules(()))
    k.claude_stopped()
    assert len(k.of(StartClaude)) == 2  # the Claude without the rule is starting
    k.send(_wire.SetRules(("WebFetch(domain:*.example.com)",)))
    k.deliver(1, "one")
    assert len(k.of(StartClaude)) == 2  # not a second Claude of the same conversation beside it
    k.claude_runs()  # it runs: it is stopped for the change before it is given anything
    assert not k.of(Write) and k.last(StopClaude).run == 2
    k.claude_stopped()
    argv = k.last(StartClaude).argv
    assert len(k.of(StartClaude)) == 3
    assert argv[argv.index("--allowedTools") + 1] == "WebFetch(domain:*.example.com)"
    k.claude_runs()
    k.claude_says(INIT)
    assert k.told() == ["one"]


def test_a_model_change_while_a_new_sessions_first_claude_starts_starts_it_again_with_the_model() -> None:
    k = Keeper(model="model-a")
    k.start()
    k.send(_wire.SetModel("model-b"))  # before the first Claude said it runs
    k.claude_runs()
    k.claude_stopped()
    argv = k.last(StartClaude).argv
    assert argv[argv.index("--model") + 1] == "model-b" and "--resume" not in argv
    k.claude_runs()
    k.claude_says(INIT)
    assert k.states() == ["starting", "idle"] and len(k.of(StartClaude)) == 2


# a steered message and the "already in use" retry ---------------------------------------

ALREADY_IN_USE = "Error: Session ID sid is already in use."


def told_since_the_last_start(k: Keeper) -> list[str]:
    """The user messages written to the Claude started last."""
    start = max(i for i, action in enumerate(k.actions) if isinstance(action, StartClaude))
    return [json.loads(a.line)["message"]["content"] for a in k.actions[start:]
            if isinstance(a, Write) and json.loads(a.line)["type"] == "user"]


def test_a_steered_message_to_a_claude_that_exits_already_in_use_is_written_once_to_the_resumed_one() -> None:
    k = Keeper()
    k.start()
    k.claude_runs()
    k.deliver(1, "first")
    steer(k, 2, "and also this")  # written to the Claude that then exits before its init line
    k.claude_exits(1, ALREADY_IN_USE)
    assert "--resume" in k.last(StartClaude).argv and not k.events(EventKind.MESSAGE_FAILED)
    k.claude_runs()
    assert told_since_the_last_start(k) == ["first", "and also this"]  # both again, each once, in order
    assert len(k.events(EventKind.STEERED)) == 1  # the user was told once
    uuid = k.written()[-1]["uuid"]
    k.claude_says(INIT, echo(uuid, "and also this"), result("both done"))
    [res] = k.events(EventKind.RESULT)
    assert res["message_id"] == 1 and res["steered"] == [2] and k.states()[-1] == "idle"


def test_a_steered_message_not_taken_by_the_resumed_claude_is_its_next_turn_and_answered() -> None:
    k = Keeper()
    k.start()
    k.claude_runs()
    k.deliver(1, "first")
    steer(k, 2, "late")
    k.claude_exits(1, ALREADY_IN_USE)
    k.claude_runs()
    k.claude_says(INIT, result("first done"))  # the resumed Claude answers "first" alone
    assert k.events(EventKind.USER)[-1]["message_id"] == 2 and k.states()[-1] == "busy"
    k.claude_says(result("late done"))  # … and "late" next, as it has it in its input
    assert [r["message_id"] for r in k.events(EventKind.RESULT)] == [1, 2] and k.states()[-1] == "idle"
    assert told_since_the_last_start(k) == ["first", "late"]


def test_when_the_carried_over_message_fails_the_steered_one_is_still_written_and_answered(tmp_path) -> None:
    k, note = claude_answers_a_message_with_a_note(tmp_path)
    steer(k, 2, "then this")
    note.unlink()
    k.claude_exits(1, ALREADY_IN_USE)
    k.claude_runs()
    assert [f["message_id"] for f in k.events(EventKind.MESSAGE_FAILED)] == [1]  # alone
    assert told_since_the_last_start(k) == ["then this"]
    assert k.events(EventKind.USER)[-1] == {"message_id": 2, "text": "then this", "attachments": [],
                                            "steered": True}
    k.claude_says(INIT, result("done"))
    assert [r["message_id"] for r in k.events(EventKind.RESULT)] == [2] and k.states()[-1] == "idle"


def test_a_message_to_steer_that_came_while_the_resumed_claude_started_joins_the_carried_over_turn() -> None:
    k = Keeper()
    k.start()
    k.claude_runs()
    k.deliver(1, "first")
    k.claude_exits(1, ALREADY_IN_USE)
    steer(k, 2, "meanwhile")  # no Claude runs to write it to: it waits
    k.claude_runs()
    assert told_since_the_last_start(k) == ["first", "meanwhile"]
    assert [e["message_id"] for e in k.events(EventKind.STEERED)] == [2] and k.states()[-1] == "busy"


# a message handed over again (adoption) ------------------------------------------------

@pytest.mark.parametrize("when", ["queued", "answering", "steered", "answered", "in the spec"])
def test_a_message_handed_to_the_keeper_again_is_not_given_to_claude_twice(when: str) -> None:
    """A supervisor that dies just after it sent a message leaves it ``queued`` in the store;
    its successor may hand it to the adopted keeper again (the keeper read the first
    ``Deliver`` after its hello, which therefore did not name it). The keeper knows the
    messages it was given: the second is ignored, whatever became of the first — Claude
    answers it once, and nothing about it is reported twice."""
    k = Keeper(messages=(QueuedMessage(1, "in the spec"),) if when == "in the spec" else ())
    k.running()
    if when != "in the spec":
        k.deliver(1, "long job")
    if when == "queued":
        k.deliver(2, "again?")
        again = _wire.Deliver(QueuedMessage(2, "again?"))
    elif when == "steered":
        steer(k, 2, "again?")
        again = _wire.Deliver(QueuedMessage(2, "again?", steer=True))
    else:
        if when == "answered":
            k.claude_says(result())
        again = _wire.Deliver(QueuedMessage(1, "again?"))
    events = len(k.of(Emit))
    k.send(again)
    assert len(k.of(Emit)) == events and k.reports(_wire.Rejected) == []  # (not sent back either)
    k.claude_says(result(), result(), result())
    told = k.told()
    assert len(told) == len(set(told)) and k.states()[-1] == "idle"  # each written to Claude once
    answered = [r["message_id"] for r in k.events(EventKind.RESULT)]
    assert answered.count(1) == 1 and answered.count(2) <= 1


def test_a_message_a_stopping_keeper_gave_back_is_given_back_again_if_it_comes_again() -> None:
    """What it gave back is no longer its own: handed to it again, it is given back again
    (ignored, it would wait for nothing)."""
    k = Keeper()
    k.running()
    k.deliver(1, "long")
    k.deliver(2, "queued")
    k.send(_wire.Stop(Reason.SHUTDOWN.value))
    k.deliver(2, "queued")
    assert k.reports(_wire.Rejected) == [_wire.Rejected((2,)), _wire.Rejected((2,))]
