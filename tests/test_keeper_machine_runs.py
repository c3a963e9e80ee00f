"""What the end of a Claude process means to its keeper (``keeper._runs``): the
"already in use" retry, a resume failure and its cause said once, a crash, an overflow."""

from __future__ import annotations

from protocol import Reason
from supervisord_claude.keeper._runs import RETRY, Run


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
