"""The permission requests Claude waits on (``can_use_tool``): the keeper's ``Prompts``.

It owns each request from the moment Claude asks until it is answered: by the user (a
``Permit`` of the supervisor), by nobody within ``permission_timeout`` (denied, said so),
or by Claude itself (its turn ended, or it exited or was stopped: the request is void).
A request is reported with what a front end shows before a button is pressed: what
"always allow" would add, the directories a file rule may name instead, and the plan of
an ``ExitPlanMode`` (Claude's request comes without it; its tool call, seen earlier in
the turn, has it). Each request has a timer (``timer_key``), armed and cancelled through
the actions returned. Pure: no I/O, no clock (the timer's expiry is fed in).
"""

from __future__ import annotations

from typing import Any

from protocol import EventKind

from .. import _claude, _wire
from .. import _permissions as permissions
from ._actions import Action, ArmTimer, CancelTimer, Emit, Write

TIMER_PREFIX = "permission "


def timer_key(request_id: str) -> str:
    return TIMER_PREFIX + request_id


def _resolved(request_id: str, turn: dict[str, Any], **body: Any) -> Emit:
    return Emit(EventKind.PERMISSION_RESOLVED, {"request_id": request_id, **body, **turn})


class Prompts:
    """The requests Claude waits on, by request id; ``turn`` (``message_id`` of the
    message Claude answers, or nothing) goes into every event about them."""

    def __init__(self, cwd: str, timeout: float) -> None:
        self.cwd = cwd
        self.timeout = timeout
        self.waiting: dict[str, dict[str, Any]] = {}  # each as reported (a new supervisor is told again)
        self._tool_inputs: dict[str, Any] = {}  # this turn's tool_use inputs, by tool_use id

    def tool_use(self, body: dict[str, Any]) -> None:
        """Claude called a tool (a ``tool_use`` event): its input, should a request lack it."""
        if isinstance(body.get("tool_use_id"), str):
            self._tool_inputs[body["tool_use_id"]] = body.get("input")

    def ask(self, request: dict[str, Any], turn: dict[str, Any]) -> tuple[ArmTimer, Emit]:
        """Claude asks: the request's timer and its ``permission_request`` event."""
        body = dict(request)
        if not body.get("input") and body.get("tool_use_id") in self._tool_inputs:
            # ExitPlanMode's request comes without the plan; Claude's tool call has it
            body["tool_use_input"] = self._tool_inputs[body["tool_use_id"]]
        if body.get("tool_name") not in (permissions.QUESTION_TOOL, permissions.PLAN_TOOL):
            # what "always allow" would add, for a front end to show before it is pressed
            pending = permissions.PendingRequest.from_event(body)
            body["always"] = permissions.always_allow(pending, self.cwd)[1]
            dirs = permissions.file_rule_dirs(pending, self.cwd)
            if len(dirs) > 1:  # (a file tool: the directories the user may pick instead)
                body["always_dirs"] = dirs
        body.update(turn)
        request_id = str(body["request_id"])
        self.waiting[request_id] = body
        return ArmTimer(timer_key(request_id), self.timeout), Emit(EventKind.PERMISSION_REQUEST, dict(body))

    def answer(self, permit: _wire.Permit, turn: dict[str, Any]) -> list[Action]:
        """The user's answer, for Claude; nothing when the request was settled meanwhile
        (timed out, or the turn ended)."""
        if self.waiting.pop(permit.request_id, None) is None:
            return []
        return [CancelTimer(timer_key(permit.request_id)),
                Write(_claude.permission_line(permit.request_id, permit.decision)),
                _resolved(permit.request_id, turn, **permit.report)]

    def timed_out(self, key: str, turn: dict[str, Any]) -> list[Action]:
        """Timer ``key`` expired: a request still waiting is denied, and that is said."""
        request_id = key.removeprefix(TIMER_PREFIX)
        if self.waiting.pop(request_id, None) is None:
            return []
        amount = f"{self.timeout:g} seconds" if self.timeout < 90 else f"{self.timeout / 60:g} minutes"
        text = f"No answer within {amount}: denied."
        return [Write(_claude.permission_line(request_id, _claude.deny_decision(text))),
                _resolved(request_id, turn, allow=False, by="timeout", message=text)]

    def void(self, why: str, turn: dict[str, Any]) -> list[Action]:
        """Claude no longer waits (it exited or was stopped): every request is void."""
        actions: list[Action] = []
        for request_id in self.waiting:
            actions += [CancelTimer(timer_key(request_id)),
                        _resolved(request_id, turn, allow=False, by="claude", message=why)]
        self.waiting.clear()
        return actions

    def turn_ended(self, turn: dict[str, Any]) -> list[Action]:
        """The turn's result came: its requests are void, its tool inputs forgotten."""
        self._tool_inputs.clear()
        return self.void("the turn ended", turn)
