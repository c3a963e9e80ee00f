"""What a user's answer to one of Claude's requests means: the decision that goes back
to Claude, and what the session keeps of it.

Claude asks (``can_use_tool``) for three kinds of things, all answered the same way on
the wire (``_claude.allow_decision`` / ``deny_decision``):

    a tool call        Allow, Deny, or Always allow (an ``addRules`` update for the rest of
                       the session, also kept by the supervisor so a resumed Claude gets it
                       as ``--allowedTools``)
    AskUserQuestion    allowed with the input plus ``answers: {question: label}``
    ExitPlanMode       allowed (Claude leaves plan mode; a ``setMode`` update picks the mode
                       it goes on in) or denied ("keep planning")

Pure functions over ``PendingRequest``; the pool and the ops do the sending and storing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol import ErrorCode, PermissionMode

from ._claude import CLAUDE_MODES
from ._errors import OpError

QUESTION_TOOL = "AskUserQuestion"
PLAN_TOOL = "ExitPlanMode"
#: how many always-allow rules a session keeps (each is one argument to Claude)
MAX_RULES = 200


@dataclass(frozen=True)
class PendingRequest:
    """A ``can_use_tool`` request Claude is waiting on, as its event reported it."""

    request_id: str
    tool_name: str
    input: dict[str, Any]
    suggestions: tuple[dict[str, Any], ...] = ()
    message_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_event(cls, body: dict[str, Any]) -> PendingRequest:
        tool_input = body.get("input")
        return cls(
            request_id=str(body["request_id"]),
            tool_name=str(body.get("tool_name") or ""),
            input=tool_input if isinstance(tool_input, dict) else {},
            suggestions=tuple(s for s in body.get("suggestions") or () if isinstance(s, dict)),
            message_id=body.get("message_id") if isinstance(body.get("message_id"), int) else None,
        )

    def questions(self) -> list[dict[str, Any]]:
        raw = self.input.get("questions")
        return [q for q in raw if isinstance(q, dict) and isinstance(q.get("question"), str)] \
            if isinstance(raw, list) else []


def rule_string(rule: dict[str, Any]) -> str:
    """A rule as Claude Code writes it: ``Bash(npm test:*)``, or just the tool's name."""
    content = rule.get("ruleContent")
    return f"{rule['toolName']}({content})" if content else str(rule["toolName"])


#: tools that write files: Claude Code's ``Edit(<path pattern>)`` rules cover them all
#: (measured with 2.1.331: ``Edit(//dir/**)`` lets Write create files there, not
#: elsewhere; ``Write(//dir/**)`` matches nothing)
FILE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")


def _fallback_rule(req: PendingRequest, cwd: str) -> dict[str, Any]:
    command = req.input.get("command")
    if req.tool_name == "Bash" and isinstance(command, str) and command.split():
        return {"toolName": "Bash", "ruleContent": f"{command.split()[0]}:*"}
    path = req.input.get("file_path") or req.input.get("notebook_path")
    if req.tool_name in FILE_TOOLS and isinstance(path, str) and os.path.isabs(path):
        # a directory, never every file anywhere: the session's own if the file is in
        # it, else the file's ("//" starts an absolute path in a rule)
        target = os.path.normpath(path)
        root = os.path.normpath(cwd)
        inside = target.startswith(root.rstrip("/") + "/")
        directory = root if inside else os.path.dirname(target)
        return {"toolName": "Edit", "ruleContent": f"/{directory.rstrip('/')}/**"}
    return {"toolName": req.tool_name}


def always_allow(req: PendingRequest, cwd: str) -> tuple[dict[str, Any], list[str]]:
    """The update that allows this (tool, Bash command, or file tools in a directory) for
    the rest of the session, and its rules as strings. Claude's own suggestions decide the
    scope where it offers them; they are kept to this session rather than written to the
    project's settings. ``cwd``: the session's directory."""
    rules = [
        {k: v for k, v in rule.items() if k in ("toolName", "ruleContent")}
        for update in req.suggestions
        if update.get("type") == "addRules" and update.get("behavior") == "allow"
        for rule in update.get("rules") or ()
        if isinstance(rule, dict) and isinstance(rule.get("toolName"), str)
    ]
    if not rules:
        rules = [_fallback_rule(req, cwd)]
    update = {"type": "addRules", "rules": rules, "behavior": "allow", "destination": "session"}
    return update, [rule_string(r) for r in rules]


def set_mode_update(mode: PermissionMode) -> dict[str, Any]:
    return {"type": "setMode", "mode": CLAUDE_MODES[mode], "destination": "session"}


def answered_input(req: PendingRequest, answers: Sequence[Sequence[str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The AskUserQuestion input with its answers: one entry per question, in order; a
    single-select question takes one label (an option's, or the user's own words), a
    multi-select one any number of its options (joined as Claude Code shows them)."""
    if req.tool_name != QUESTION_TOOL:
        raise OpError(ErrorCode.BAD_REQUEST, f"request {req.request_id} is a {req.tool_name} request, not a question")
    questions = req.questions()
    if len(answers) != len(questions):
        raise OpError(ErrorCode.BAD_REQUEST, f"request {req.request_id} has {len(questions)} question(s);"
                      f" {len(answers)} answer(s) given")
    chosen: dict[str, str] = {}
    for question, labels in zip(questions, answers, strict=True):
        if not question.get("multiSelect") and len(labels) != 1:
            raise OpError(ErrorCode.BAD_REQUEST, f"'{question['question']}' takes one answer, not {len(labels)}")
        chosen[question["question"]] = ", ".join(labels)
    return {**req.input, "answers": chosen}, chosen


def merged_rules(known: Sequence[str], new: Sequence[str]) -> list[str]:
    out = list(known)
    out += [r for r in new if r not in out]
    return out[-MAX_RULES:]


__all__ = ["PLAN_TOOL", "QUESTION_TOOL", "PendingRequest", "always_allow", "answered_input", "merged_rules",
           "rule_string", "set_mode_update"]
