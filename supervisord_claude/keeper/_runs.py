"""The Claude processes as the keeper's machine knows them (``Runs``), and what an end means.

Each Claude the keeper starts is a ``Run``, named by a number in every event fed back
about it, so that what a Claude being stopped still writes, or its exit, is never taken
for the running one's. ``Runs`` knows which one runs (none while one starts or stops)
and what the machine does once the one it stops has stopped (suspend, finish, or start
the next: a restart for a setting).

A ``Run`` learns from Claude's lines whether it confirmed the conversation (its init
line) and, when a resumed Claude never did, why the resume failed (its ``result`` says
so before it exits). When the running Claude exits, ``Run.exit_meaning`` says what the
keeper makes of it: the conversation exists already and is resumed instead (the "already
in use" retry: an earlier Claude saved it but died before its init line reached a
keeper), a resume failure (the session fails with ``resume-failed``, the cause named
once), or a crash. Pure: it decides from what it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol import Reason

from .. import _claude
from ._actions import StartClaude, StopClaude

#: the written limit on one line of Claude's output (the process adapter enforces it)
STDOUT_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class ExitMeaning:
    """What the exit of the running Claude means: resume the conversation (``retry``), or
    fail the session for ``reason``, saying ``text`` (and ``detail``: a resume failure's cause)."""

    retry: bool = False
    reason: Reason = Reason.CRASHED
    text: str = ""
    detail: str | None = None


RETRY = ExitMeaning(retry=True)


@dataclass
class Run:
    """One Claude process and what the keeper learned from it."""

    number: int
    resume: bool
    reason: Reason = Reason.REQUESTED  # why it was started (the state it reaches says it)
    pid: int | None = None
    init_seen: bool = False  # Claude confirmed the conversation (its init line)
    resume_failure: str | None = None

    @property
    def start_failure_reason(self) -> Reason:
        """Why the session fails when this Claude could not be started at all."""
        return Reason.RESUME_FAILED if self.resume else Reason.CRASHED

    def resume_failed(self, started: bool, result: dict[str, Any]) -> bool:
        """Whether ``result`` is a resume's failure rather than a turn's end (a resumed
        Claude that never confirmed the conversation, e.g. "No conversation found"); it
        is kept for the exit that follows."""
        if not started or self.init_seen:
            return False
        self.resume_failure = "; ".join(result.get("errors") or []) or result.get("text") or "resume failed"
        return True

    def exit_meaning(self, code: int, stderr_tail: Sequence[str], overflow: bool, started: bool,
                     retried: bool) -> ExitMeaning:
        """What this Claude's exit means, ``started`` telling whether the keeper knows the
        conversation exists, ``retried`` whether it already resumed one "already in use"."""
        tail = " | ".join(stderr_tail)
        if not started and not self.init_seen and not retried and "already in use" in tail:
            return RETRY
        if overflow:
            return ExitMeaning(text=f"Claude wrote an output line over the {STDOUT_LIMIT // (1024 * 1024)} MiB"
                                    " limit; it was stopped")
        if started and not self.init_seen:
            # Claude prints the reason both in its result and on stderr; say it once
            parts = [self.resume_failure] if self.resume_failure else []
            parts += [line for line in stderr_tail if line not in (self.resume_failure or "")]
            detail = "; ".join(parts) or f"exit code {code}"
            return ExitMeaning(reason=Reason.RESUME_FAILED, text=f"Resume failed: {detail}", detail=detail)
        return ExitMeaning(text=f"Claude exited unexpectedly (exit code {code})" + (f": {tail}" if tail else ""))


class Runs:
    """The Claude processes started and not yet ended, by number; the one running."""

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}
        self.running: Run | None = None
        #: a new conversation was "already in use" once and resumed instead (never twice)
        self.retried = False
        self._after_stop: tuple[int, Callable[[], None]] | None = None
        #: the Claude asked to start that has not said whether it runs yet
        self.starting: int | None = None

    def __getitem__(self, number: int) -> Run:
        return self._runs[number]

    def start(self, launch: _claude.LaunchSpec, reason: Reason) -> StartClaude:
        run = Run(max(self._runs, default=0) + 1, launch.resume, reason)
        self._runs[run.number] = run
        self.starting = run.number
        return StartClaude(run.number, _claude.build_argv(launch), launch.cwd)

    def started(self, number: int, pid: int) -> Run:
        """Claude ``number`` runs (with ``pid``): it is the running one now."""
        run = self.running = self._runs[number]
        run.pid = pid
        self._started(number)
        return run

    def discard(self, number: int) -> StopClaude:
        """Claude ``number`` started after the keeper began to end: killed at once, unheard of."""
        del self._runs[number]
        self._started(number)
        return StopClaude(number, at_once=True)

    def start_failed(self, number: int) -> Run:
        self._started(number)
        return self._runs.pop(number)

    def _started(self, number: int) -> None:
        if self.starting == number:
            self.starting = None

    def exited(self, number: int) -> Run | None:
        """Claude ``number`` exited: its run if it is the running one (the exit of one
        being stopped, or already replaced, means nothing)."""
        run = self._runs.pop(number, None)
        return run if run is not None and run is self.running else None

    def stop(self, then: Callable[[], None]) -> StopClaude | None:
        """Stop the running Claude, ``then`` once it stopped; None: none runs (do ``then`` now)."""
        run, self.running = self.running, None
        if run is None:
            return None
        self._after_stop = (run.number, then)
        return StopClaude(run.number)

    @property
    def stopping(self) -> bool:
        """A Claude is being stopped with something to follow (e.g. a restart)."""
        return self._after_stop is not None and self.running is None

    def stopped(self, number: int) -> Callable[[], None] | None:
        """Claude ``number`` stopped: what follows, if it was the one stopped last."""
        if self._after_stop is None or self._after_stop[0] != number:
            return None
        then, self._after_stop = self._after_stop[1], None
        return then
