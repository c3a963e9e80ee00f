"""One Claude process as the keeper's machine knows it (a ``Run``), and what its end means.

A ``Run`` learns from Claude's lines whether it confirmed the conversation (its init
line) and, when a resumed Claude never did, why the resume failed (its ``result`` says
so before it exits). When the running Claude exits, ``Run.exit_meaning`` says what the
keeper makes of it: the conversation exists already and is resumed instead (the "already
in use" retry: an earlier Claude saved it but died before its init line reached a
keeper), a resume failure (the session fails with ``resume-failed``, the cause named
once), or a crash. Pure: it decides from what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol import Reason

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
