"""The Claude processes of a keeper (``keeper._runs``): what the end of one means (the
"already in use" retry, a resume failure and its cause said once, a crash, an overflow),
and which is which (a stopped or replaced Claude's exit is not the running one's)."""

from __future__ import annotations

from protocol import Reason
from supervisord_claude import _claude
from supervisord_claude.keeper._actions import StopClaude
from supervisord_claude.keeper._runs import RETRY, Run, Runs


def test_a_new_conversation_already_in_use_before_its_init_line_is_resumed_instead_once() -> None:
    run = Run(1, resume=False)
    tail = ["Error: Session ID sid is already in use"]
    assert run.exit_meaning(1, tail, False, started=False, retried=False) == RETRY
    again = run.exit_meaning(1, tail, False, started=False, retried=True)
    assert not again.retry and again.reason is Reason.CRASHED and again.text.endswith(tail[0])


def test_already_in_use_after_claude_confirmed_the_conversation_is_a_crash() -> None:
    run = Run(1, resume=False, init_seen=True)
    meaning = run.exit_meaning(1, ["already in use"], False, started=True, retried=False)
    assert meaning.reason is Reason.CRASHED and meaning.text == "Claude exited unexpectedly (exit code 1): already in use"


def test_a_resumed_claude_that_never_confirmed_the_conversation_failed_to_resume_for_its_results_cause() -> None:
    run = Run(1, resume=True)
    assert run.resume_failed(True, {"errors": ["No conversation found with session ID: sid"]})
    # Claude says it on stderr too: the cause is named once, other stderr lines after it
    meaning = run.exit_meaning(1, ["No conversation found with session ID: sid", "bye"], False, started=True,
                               retried=False)
    assert meaning.reason is Reason.RESUME_FAILED
    assert meaning.detail == "No conversation found with session ID: sid; bye"
    assert meaning.text == "Resume failed: No conversation found with session ID: sid; bye"


def test_a_resume_failure_with_nothing_said_names_the_exit_code() -> None:
    meaning = Run(1, resume=True).exit_meaning(3, [], False, started=True, retried=False)
    assert meaning.reason is Reason.RESUME_FAILED and meaning.detail == "exit code 3"


def test_a_result_after_the_init_line_or_of_a_new_conversation_is_a_turns_end() -> None:
    confirmed = Run(1, resume=True, init_seen=True)
    assert not confirmed.resume_failed(True, {"text": "done"}) and confirmed.resume_failure is None
    assert not Run(1, resume=False).resume_failed(False, {"text": "done"})


def test_an_output_line_over_the_limit_is_said_whatever_else_happened() -> None:
    meaning = Run(1, resume=True).exit_meaning(-9, ["x"], True, started=True, retried=False)
    assert meaning.reason is Reason.CRASHED and "over the 64 MiB limit" in meaning.text


def test_a_claude_that_could_not_start_fails_the_resume_or_crashes() -> None:
    assert Run(1, resume=True).start_failure_reason is Reason.RESUME_FAILED
    assert Run(1, resume=False).start_failure_reason is Reason.CRASHED


# which Claude is which -------------------------------------------------------------------


def launch(resume: bool = True) -> _claude.LaunchSpec:
    return _claude.LaunchSpec(claude_bin="claude", cwd="/work", session_id="sid", resume=resume)


def test_each_claude_started_has_its_own_number_and_remembers_why_it_was_started() -> None:
    runs = Runs()
    first, second = runs.start(launch(False), Reason.REQUESTED), runs.start(launch(), Reason.MODEL_CHANGE)
    assert (first.run, second.run) == (1, 2) and "--resume" in second.argv and first.cwd == "/work"
    assert runs.started(2, 42) is runs[2] and runs.running is runs[2] and runs[2].pid == 42
    assert runs[2].resume and runs[2].reason is Reason.MODEL_CHANGE


def test_only_the_running_claudes_exit_means_something() -> None:
    runs = Runs()
    runs.start(launch(), Reason.MESSAGE)
    runs.started(1, 10)
    assert runs.stop(lambda: None) == StopClaude(1) and runs.running is None
    runs.start(launch(), Reason.MODEL_CHANGE)
    runs.started(2, 11)
    assert runs.exited(1) is None  # the one stopped for the restart
    assert runs.exited(2) is runs.running is not None


def test_what_follows_a_stop_happens_once_when_that_claude_stopped() -> None:
    runs, done = Runs(), []
    assert runs.stop(lambda: done.append("now")) is None and done == []  # none runs: the caller goes on at once
    runs.start(launch(), Reason.MESSAGE)
    runs.started(1, 10)
    runs.stop(lambda: done.append("restart"))
    assert runs.stopping and runs.stopped(2) is None
    then = runs.stopped(1)
    assert then is not None and not runs.stopping and runs.stopped(1) is None
    then()
    assert done == ["restart"]


def test_a_claude_started_after_the_keeper_began_to_end_is_killed_at_once_and_forgotten() -> None:
    runs = Runs()
    runs.start(launch(), Reason.MESSAGE)
    assert runs.discard(1) == StopClaude(1, at_once=True) and runs.running is None and runs.exited(1) is None
