"""The ops on what Claude asks: permission requests (allow, deny, always, a plan's mode),
questions, and the always-allow rules a session keeps.
"""

from __future__ import annotations

from typing import Any

from protocol import (
    ErrorCode,
    EventKind,
    PermissionMode,
    mode_fields,
)

from .. import _claude, _wire
from .. import _permissions as permissions
from .._errors import OpError
from ._opbase import OpsBase


class PromptOps(OpsBase):
    """Answers to Claude's requests, and the rules they leave."""

    def _pending(self, session: str, request_id: str) -> permissions.PendingRequest:
        self._session(session)
        req = self.pool.session(session).pending(request_id)
        if req is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no pending request {request_id} in '{session}' (answered"
                          " already, timed out, or its Claude stopped)")
        return req

    def _send_answer(self, session: str, permit: _wire.Permit) -> None:
        if not self.pool.session(session).answer(permit):
            raise OpError(ErrorCode.NOT_FOUND, f"no pending request {permit.request_id} in '{session}'")

    def op_permit(self, ident: bytes, session: str, request_id: str, allow: bool, message: str | None = None,
                  always: bool = False, permission_mode: PermissionMode | None = None,
                  directory: str | None = None) -> dict[str, Any]:
        mode = permission_mode
        req = self._pending(session, request_id)
        if directory is not None and not always:
            raise OpError(ErrorCode.BAD_REQUEST, "'directory' is where 'always' allows a file tool, with 'always'")
        plan = req.tool_name == permissions.PLAN_TOOL
        if not allow:
            if always or mode is not None:
                raise OpError(ErrorCode.BAD_REQUEST, "'always' and 'permission_mode' go with allow, not deny")
            text = message or ("The user wants to keep planning: revise the plan." if plan else None)
            decision = _claude.deny_decision(text)
            self._send_answer(session, _wire.Permit(request_id, decision, {"allow": False, "by": "user",
                                                                            "message": decision["message"]}))
            return {"allow": False}
        if req.tool_name == permissions.QUESTION_TOOL:
            raise OpError(ErrorCode.BAD_REQUEST, "a question is answered with 'answer' (its labels), or denied")
        if always and plan:
            raise OpError(ErrorCode.BAD_REQUEST, "a plan is approved once; 'always' is for tool calls")
        if mode is not None and not plan:
            raise OpError(ErrorCode.BAD_REQUEST, "'permission_mode' goes with approving a plan (ExitPlanMode)")
        updates: list[dict[str, Any]] = []
        rules: list[str] = []
        report: dict[str, Any] = {"allow": True, "by": "user"}
        if always:
            update, rules = permissions.always_allow(req, self._session(session).cwd, directory)
            if not rules:
                raise OpError(ErrorCode.BAD_REQUEST, f"a {req.tool_name} call here has no scope 'always' could"
                              " be kept to (never every command or every file): allow it once instead")
            updates.append(update)
            report["always"] = rules
        if plan:  # approved: Claude leaves plan mode, into the mode the user picked
            mode = mode or PermissionMode.ASK
            if mode is PermissionMode.PLAN:
                raise OpError(ErrorCode.BAD_REQUEST, "approving a plan leaves plan mode: pick ask or accept-edits")
            self._check_mode(mode)
            updates.append(permissions.set_mode_update(mode))
            report.update(mode_fields(mode.value))
        self._send_answer(session, _wire.Permit(request_id, _claude.allow_decision(req.input, updates), report,
                                                rules=tuple(rules), mode=mode.value if mode else None))
        settings: dict[str, Any] = {}
        if rules:
            rec = self._session(session)
            settings["allowed_tools"] = permissions.merged_rules(rec.allowed_tools, rules)
        if mode is not None:
            settings["permission_mode"] = mode.value
        if settings:
            self.events.record(session, EventKind.SETTINGS, settings)
        return {"allow": True, **({"always": rules} if rules else {}), **mode_fields(mode.value if mode else None)}

    def op_answer(self, ident: bytes, session: str, request_id: str, answers: list[list[str]]) -> dict[str, Any]:
        req = self._pending(session, request_id)
        updated, chosen = permissions.answered_input(req, answers)
        self._send_answer(session, _wire.Permit(request_id, _claude.allow_decision(updated),
                                                {"allow": True, "by": "user", "answers": chosen}))
        return {"answers": chosen}

    # always-allow rules -------------------------------------------------------------------

    def op_rules(self, ident: bytes, session: str) -> dict[str, Any]:
        """The session's always-allow rules, numbered from 1 in the order they were given."""
        return {"rules": list(self._session(session, allow_archived=True).allowed_tools)}

    def op_remove_rule(self, ident: bytes, session: str, index: int | None = None,
                       rule: str | None = None) -> dict[str, Any]:
        """Forget one rule (by its number, or by its text): kept in the store at once, and
        a live Claude restarts with the rest (``--resume``) once no turn runs."""
        rec = self._session(session)
        rules = list(rec.allowed_tools)
        if (index is None) == (rule is None):
            raise OpError(ErrorCode.BAD_REQUEST, "give the rule's 'index' or its text ('rule'), one of them")
        if rule is not None:
            if rule not in rules:
                raise OpError(ErrorCode.NOT_FOUND, f"session '{session}' has no rule {rule}")
            index = rules.index(rule) + 1
        assert index is not None
        if not 1 <= index <= len(rules):
            raise OpError(ErrorCode.NOT_FOUND, f"session '{session}' has {len(rules)} rule(s); no rule {index}")
        removed = rules.pop(index - 1)
        self.events.record(session, EventKind.SETTINGS, {"allowed_tools": rules})
        self.pool.session(session).command(_wire.SetRules(tuple(rules)))
        return {"removed": removed, "rules": rules}
