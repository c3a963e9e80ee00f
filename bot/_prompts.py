"""Claude's requests as Telegram prompts: a tool call to allow, a question to answer, a
plan to approve. Plain functions, no Telegram or network I/O.

A prompt's state lives in the supervisor's kv (``telegram.perm.<token>``) as a ``Prompt``,
so its buttons keep working after a bot restart. Button callback data (at most 64 bytes):

    perm:<token>:y | n | a          allow, deny, always allow (a tool call)
    perm:<token>:a:<i>              always allow a file tool in directory i of the prompt's dirs
    perm:<token>:q:<i>:<j>          pick option j of question i (toggles if multi-select)
    perm:<token>:d                  done: send the picked answers
    perm:<token>:p:ask | p:edits    approve a plan, going on in mode ask / accept-edits
    perm:<token>:k                  keep planning (reject the plan)

The prompt is edited to show the outcome when the supervisor reports the request
resolved (``permission_resolved``), whoever answered it: a button here, ``claudectl``,
the ``permission_timeout``, or Claude stopping.
"""

from __future__ import annotations

import difflib
import hashlib
import html
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protocol import PermissionRequestEvent, PermissionResolvedEvent, permission_mode_of

from . import _markdown as markdown
from . import _render as render
from ._markdown import utf16_len
from ._render import STALE_PROMPT

QUESTION_TOOL = "AskUserQuestion"
PLAN_TOOL = "ExitPlanMode"
KV_PROMPT = "telegram.perm.{token}"
KV_WAITING = "telegram.waiting.{chat}"  # session -> token of the prompt waiting there (typed text)
MAX_SHOWN = 3000  # characters of a command, diff or plan shown in a prompt
STALE = STALE_PROMPT

Keyboard = list[list[tuple[str, str]]]  # rows of (label, callback data)


@dataclass
class Prompt:
    """One request shown in a chat, as kept in the kv."""

    session: str
    request_id: str
    chat: int
    tool: str
    text: str  # the prompt as sent (HTML)
    message_id: int | None = None
    questions: list[dict[str, Any]] = field(default_factory=list)
    picks: list[list[str]] = field(default_factory=list)  # per question, the labels picked
    always: list[str] = field(default_factory=list)  # the rules "always allow" adds (the event says)
    #: a file tool's: the directories "always allow" may cover instead, widest (the
    #: session's, what ``always`` says) first (``perm:<token>:a:<i>`` picks one)
    dirs: list[str] = field(default_factory=list)

    def to_kv(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kv(cls, value: Any) -> Prompt | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(**value)
        except TypeError:
            return None

    @property
    def is_question(self) -> bool:
        return self.tool == QUESTION_TOOL

    @property
    def is_plan(self) -> bool:
        return self.tool == PLAN_TOOL

    def complete(self) -> bool:
        return len(self.picks) == len(self.questions) and all(self.picks)


def token_of(session: str, request_id: str) -> str:
    """What callback data names a request by: its id (or, for a long one, a hash)."""
    if len(request_id) <= 40 and ":" not in request_id:
        return request_id
    return "h" + hashlib.sha256(f"{session}\0{request_id}".encode()).hexdigest()[:32]


def _clip(text: str, limit: int = MAX_SHOWN) -> str:
    """At most ``limit`` UTF-16 units of ``text`` (Telegram's measure), saying what was cut."""
    if utf16_len(text) <= limit:
        return text
    units = 0
    for i, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:i] + f"… [{len(text) - i} more characters]"
    return text


def _lines(text: Any) -> int:
    return len(str(text).splitlines()) if text else 0


PREVIEW_LINES = 15  # the first lines of a file Claude wants to write, shown in its prompt
SHOWN_CHANGE = 2500  # UTF-16 units of a diff or a file's first lines (the path comes too)


def _changes(tool_input: dict[str, Any]) -> list[dict[str, Any]]:
    raw_edits = tool_input.get("edits")
    edits: list[Any] = raw_edits if isinstance(raw_edits, list) else [tool_input]
    return [ed for ed in edits if isinstance(ed, dict)]


def _diff(changes: list[dict[str, Any]]) -> str:
    """An edit's changes as unified-diff hunks (without the file headers)."""
    hunks = []
    for ed in changes:
        old = str(ed.get("old_string") or "").splitlines()
        new = str(ed.get("new_string") or ed.get("new_source") or "").splitlines()
        hunks += [line for line in difflib.unified_diff(old, new, lineterm="", n=2)
                  if not line.startswith(("---", "+++"))]
    return "\n".join(hunks)


def whole(tool: str, tool_input: dict[str, Any]) -> tuple[str, str] | None:
    """(file name, text) of what a prompt shows only in part — a long command, a file's
    content beyond its first lines, a long diff — to send with it as a document, so all
    of it can be read before Allow. None when the prompt shows it all."""
    if tool == "Bash" and isinstance(tool_input.get("command"), str):
        command = tool_input["command"]
        return ("command.sh", command) if utf16_len(command) > MAX_SHOWN else None
    path = tool_input.get("file_path") or tool_input.get("notebook_path") or tool_input.get("path")
    if tool == "Write" and isinstance(path, str):
        content = str(tool_input.get("content") or "")
        lines = content.splitlines()
        shown = "\n".join(lines[:PREVIEW_LINES])
        cut = len(lines) > PREVIEW_LINES or utf16_len(shown) > SHOWN_CHANGE
        return (Path(path).name or "content.txt", content) if cut else None
    if tool in ("Edit", "MultiEdit", "NotebookEdit") and isinstance(path, str):
        diff = _diff(_changes(tool_input))
        return (f"{Path(path).name or 'edit'}.diff", diff) if utf16_len(diff) > SHOWN_CHANGE else None
    return None


def _tool_text(tool: str, tool_input: dict[str, Any]) -> str:
    """What the tool call will do, not just its name (HTML): the command, the first lines
    of a file to write, the diff of an edit (``whole`` has what is cut)."""
    e = html.escape
    cut = " <i>(cut: the whole of it comes as a file below)</i>" if whole(tool, tool_input) else ""
    if tool == "Bash" and isinstance(tool_input.get("command"), str):
        text = f"🔐 Claude wants to run{cut}:\n<pre>{e(_clip(tool_input['command']))}</pre>"
        if isinstance(tool_input.get("description"), str):
            text += f"\n<i>{e(_clip(tool_input['description'], 300))}</i>"
        return text
    path = tool_input.get("file_path") or tool_input.get("notebook_path") or tool_input.get("path")
    if tool == "Write" and isinstance(path, str):
        content = str(tool_input.get("content") or "")
        first = "\n".join(content.splitlines()[:PREVIEW_LINES])
        preview = f"\n<pre>{e(_clip(first, SHOWN_CHANGE))}</pre>" if first.strip() else ""
        return (f"🔐 Claude wants to write <code>{e(_clip(path, 1000))}</code>\n"
                f"{render.counted(_lines(content), 'line')}, {render.counted(len(content.encode()), 'byte')}{cut}{preview}")
    if tool in ("Edit", "MultiEdit", "NotebookEdit") and isinstance(path, str):
        changes = _changes(tool_input)
        removed = sum(_lines(ed.get("old_string")) for ed in changes)
        added = sum(_lines(ed.get("new_string") or ed.get("new_source")) for ed in changes)
        count = f"{len(changes)} edits, " if len(changes) > 1 else ""
        diff = _diff(changes)
        shown = f"\n<pre>{e(_clip(diff, SHOWN_CHANGE))}</pre>" if diff.strip() else ""
        return (f"🔐 Claude wants to edit <code>{e(_clip(path, 1000))}</code>\n{count}-{removed} +{added}"
                f" {'line' if removed + added == 1 else 'lines'}{cut}{shown}")
    if tool in ("WebFetch", "WebSearch"):
        target = tool_input.get("url") or tool_input.get("query") or ""
        return f"🔐 Claude wants to use {e(tool)}:\n{e(_clip(str(target), 1000))}"
    shown = json.dumps(tool_input, ensure_ascii=False, indent=1) if tool_input else ""
    return f"🔐 Claude wants to use {e(_clip(tool or 'a tool', 100))}" + (f"\n<pre>{e(_clip(shown, 1500))}</pre>" if shown else "")


def _question_text(questions: list[dict[str, Any]], brief: bool = False) -> str:
    """The questions with their options; ``brief`` (when the full text would be too
    long for one message) leaves out the descriptions and shortens the rest."""
    e = html.escape
    q_limit, label_limit = (150, 30) if brief else (500, 100)
    parts = ["❓ Claude asks:"]
    for i, q in enumerate(questions):
        number = f"{i + 1}. " if len(questions) > 1 else ""
        many = " <i>(pick any, then Done)</i>" if q.get("multiSelect") else ""
        parts.append(f"\n<b>{number}{e(_clip(str(q.get('question')), q_limit))}</b>{many}")
        for option in (q.get("options") or [])[:10]:
            if isinstance(option, dict):
                note = "" if brief or not option.get("description") else \
                    f" — {e(_clip(str(option['description']), 200))}"
                parts.append(f"• {e(_clip(str(option.get('label')), label_limit))}{note}")
    parts.append("\nTap an answer, or send your own as a message.")
    text = "\n".join(parts)
    return _question_text(questions, brief=True) if not brief and utf16_len(text) > MAX_SHOWN + 500 else text


def _plan_text(plan: str) -> str:
    return f"📋 Claude's plan:\n\n{markdown.markdown_html(_clip(plan or '(no plan text)'))}\n\nApprove it?"


def build(event: PermissionRequestEvent, chat: int) -> tuple[Prompt, str]:
    """The prompt for a ``permission_request`` event, and the token its buttons carry."""
    session, request_id = str(event.get("session")), str(event.get("request_id"))
    tool = str(event.get("tool_name") or "")
    raw = event.get("input")
    tool_input: dict[str, Any] = raw if isinstance(raw, dict) else {}
    questions: list[dict[str, Any]] = []
    if tool == QUESTION_TOOL:
        questions = [q for q in tool_input.get("questions") or [] if isinstance(q, dict)][:4]
        text = _question_text(questions)
    elif tool == PLAN_TOOL:
        used = event.get("tool_use_input")
        plan = tool_input.get("plan") or (used.get("plan") if isinstance(used, dict) else None)
        text = _plan_text(str(plan or ""))
    else:
        text = _tool_text(tool, tool_input)
    always = [str(r) for r in event.get("always") or [] if isinstance(r, str)]
    dirs = [str(d) for d in event.get("always_dirs") or [] if isinstance(d, str)]
    prompt = Prompt(session, request_id, chat, tool, text, questions=questions, picks=[[] for _ in questions],
                    always=always, dirs=dirs)
    return prompt, token_of(session, request_id)


ALWAYS_LABEL = 60  # characters of the "always allow" button (Telegram cuts longer ones)


def scope_text(rule: str) -> str:
    """A rule as people say it: ``Bash(npm test *)`` → "`npm test …`", ``Edit(//src/**)``
    → "edits in /src", ``WebFetch(domain:x.org)`` → "fetches from x.org"."""
    tool, _, content = rule.partition("(")
    content = content.removesuffix(")")
    if tool == "Edit" and content.startswith("//"):
        return f"edits in {content[1:].removesuffix('/**') or '/'}"
    if tool == "Bash" and content:
        for wildcard in (" *", ":*"):
            if content.endswith(wildcard):
                return f"`{content.removesuffix(wildcard)} …`"
        return f"`{content}`"
    if tool == "WebFetch" and content.startswith("domain:"):
        return f"fetches from {content.removeprefix('domain:')}"
    return f"{rule} (any use)" if not content else rule


def always_label(rules: list[str]) -> str:
    """The "always allow" button says what it will allow from now on, before it is
    pressed ("♾ Always allow `npm test …` here": in this session)."""
    label = "♾ Always allow " + ", ".join(scope_text(r) for r in rules) + " here"
    return label if len(label) <= ALWAYS_LABEL else label[:ALWAYS_LABEL - 1] + "…"


def dir_label(root: str, directory: str) -> str:
    """The button for "always allow" in a narrower directory than the session's: its path
    below ``root`` ("♾ Always allow edits only in src/pkg/"), cut from the left to fit."""
    shown = os.path.relpath(directory, root) + "/"
    label = "♾ Always allow edits only in " + shown
    return label if len(label) <= ALWAYS_LABEL else "♾ Always allow edits only in …" + shown[-(ALWAYS_LABEL - 31):]


def keyboard(prompt: Prompt, token: str) -> Keyboard:
    base = f"perm:{token}"
    if prompt.tool == PLAN_TOOL:
        return [[("✅ Approve", f"{base}:p:ask")], [("✅ Approve, accept edits", f"{base}:p:edits")],
                [("✏️ Keep planning", f"{base}:k")]]
    if not prompt.is_question:
        answers: Keyboard = [[("✅ Allow", f"{base}:y"), ("🚫 Deny", f"{base}:n")]]
        if prompt.always:  # (none where no scope short of "everything" exists: allow once)
            answers.append([(always_label(prompt.always), f"{base}:a")])
            answers += [[(dir_label(prompt.dirs[0], d), f"{base}:a:{i}")] for i, d in enumerate(prompt.dirs) if i]
        return answers
    rows: Keyboard = []
    several = len(prompt.questions) > 1
    for i, q in enumerate(prompt.questions):
        picked = prompt.picks[i] if i < len(prompt.picks) else []
        options = [o for o in q.get("options") or [] if isinstance(o, dict)]
        for j, option in enumerate(options[:10]):
            label = str(option.get("label"))
            mark = ("☑️ " if label in picked else "⬜ ") if q.get("multiSelect") else ("✅ " if label in picked else "")
            rows.append([(f"{mark}{f'{i + 1}. ' if several else ''}{label}"[:60], f"{base}:q:{i}:{j}")])
    if several or any(q.get("multiSelect") for q in prompt.questions):
        rows.append([("Done", f"{base}:d")])
    return rows


def pick(prompt: Prompt, question: int, option: int) -> bool:
    """Record a tap on an option; True if that settles every question (send the answer:
    only single-select questions are settled by a tap alone)."""
    if not 0 <= question < len(prompt.questions):
        return False
    options = [o for o in prompt.questions[question].get("options") or [] if isinstance(o, dict)]
    if not 0 <= option < len(options):
        return False
    label = str(options[option].get("label"))
    picked = prompt.picks[question]
    if prompt.questions[question].get("multiSelect"):
        if label in picked:
            picked.remove(label)
        else:
            picked.append(label)
        return False
    prompt.picks[question] = [label]
    return len(prompt.questions) == 1


def typed(prompt: Prompt, text: str) -> bool:
    """A typed message answers the first question without an answer (or, if all have one,
    replaces the last); True once every question has its answer."""
    open_ = [i for i, p in enumerate(prompt.picks) if not p]
    index = open_[0] if open_ else len(prompt.picks) - 1
    prompt.picks[index] = [text]
    return prompt.complete()


def outcome(event: PermissionResolvedEvent) -> str:
    """How a ``permission_resolved`` event reads under its prompt."""
    by = event.get("by")
    if by == "timeout":
        return f"⏱ No answer in time: denied. ({html.escape(str(event.get('message') or ''))})"
    if by == "claude":
        return f"⌛ No longer pending: {html.escape(str(event.get('message') or 'Claude stopped'))}"
    if isinstance(event.get("answers"), dict):
        shown = "; ".join(f"{html.escape(str(q))} → <b>{html.escape(str(a))}</b>" for q, a in event["answers"].items())
        return f"✅ Answered: {shown}"
    if mode := permission_mode_of(event):
        return f"✅ Plan approved; mode {html.escape(mode)}"
    if event.get("always"):
        return "♾ Always allowed for this session: " + ", ".join(
            f"<code>{html.escape(str(r))}</code>" for r in event["always"])
    if event.get("allow"):
        return "✅ Allowed"
    return "🚫 Denied" + (f": {html.escape(str(event['message']))}" if event.get("message") else "")


def toast(action: str) -> str:
    """The short answer on a pressed button."""
    return {"y": "✅ Allowed", "n": "🚫 Denied", "a": "♾ Always allowed", "k": "✏️ Claude keeps planning",
            "p": "✅ Plan approved", "d": "✅ Answer sent"}.get(action, "OK")


__all__ = [
    "KV_PROMPT",
    "KV_WAITING",
    "STALE",
    "Keyboard",
    "Prompt",
    "always_label",
    "build",
    "keyboard",
    "outcome",
    "pick",
    "scope_text",
    "toast",
    "token_of",
    "typed",
    "whole",
]
