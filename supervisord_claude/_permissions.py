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

import itertools
import os
import re
import shlex
import urllib.parse
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


#: commands whose first argument is a subcommand: "Always allow" covers that subcommand
#: (``git commit …``), not every use of the tool (as Claude Code's terminal offers it)
SUBCOMMAND_TOOLS = frozenset({
    "git", "npm", "pnpm", "yarn", "bun", "cargo", "go", "docker", "podman", "kubectl", "helm", "pip", "pip3",
    "poetry", "uv", "gh", "make", "terraform", "brew", "apt", "apt-get", "dotnet", "mvn", "gradle", "systemctl",
})
#: what joins the commands of a compound one (every part must be allowed on its own)
COMPOUND_OPERATORS = frozenset({"&&", "||", ";", "|", "&", "|&", ";;"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def command_parts(command: str) -> list[list[str]] | None:
    """A Bash command's simple commands (each as its words), split at ``&&``, ``||``,
    ``;``, ``|``, ``&`` and line breaks; None when it cannot be told apart safely
    (unbalanced quotes, command substitution, subshells, here-documents)."""
    if any(marker in command for marker in ("$(", "`", "<<", "<(", ">(")):
        return None
    lexer = shlex.shlex(command.replace("\n", " ; "), posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in COMPOUND_OPERATORS:
            parts.append([])
        elif token in ("(", ")", "{", "}"):
            return None
        else:
            parts[-1].append(token)
    return [p for p in parts if p]


def command_prefix(words: list[str]) -> str | None:
    """The prefix "Always allow" saves for one simple command: its name, and its
    subcommand for tools like git, npm and cargo (``git commit``); None if it has none
    (an assignment alone, a redirection only)."""
    words = list(itertools.dropwhile(lambda w: _ASSIGNMENT.match(w) is not None, words))
    if not words or not words[0] or set(words[0]) & set("<>*?[]$"):
        return None
    name = words[0]
    if name in SUBCOMMAND_TOOLS and len(words) > 1 and re.fullmatch(r"[A-Za-z][\w:.-]*", words[1]):
        return f"{name} {words[1]}"
    return name


def _wildcard_stem(content: str) -> str | None:
    """``npm test`` of a prefix rule ``npm test *`` (or the older ``npm test:*``)."""
    for wildcard in (" *", ":*"):
        if content.endswith(wildcard):
            return content.removesuffix(wildcard).strip()
    return None


def bash_rules(command: str, suggested: Sequence[str]) -> list[str]:
    """The ``Bash(...)`` contents "Always allow" saves for ``command``: one per part of a
    compound command (Claude Code allows one only when each part is allowed) — Claude's
    own prefix suggestion for that part where it is wider than the part itself
    (``npm test *``), else the part's name and subcommand (``touch *``, ``git commit *``).
    A command that cannot be split safely gets Claude's wider suggestion, else itself."""
    stems = [(content, stem) for content in suggested if (stem := _wildcard_stem(content))]
    parts = command_parts(command)
    out: list[str] = []
    for words in parts or ():
        text = " ".join(words)
        # a suggestion is wider only if it is a proper prefix (in words) of the part
        claude = next((c for c, stem in stems if text.startswith(stem + " ") and stem != text), None)
        prefix = command_prefix(words)
        if claude is None and prefix is None:
            out = []
            break
        out.append(claude or f"{prefix} *")
    if out:
        return list(dict.fromkeys(out))
    wider = [c for c, stem in stems if command.strip().startswith(stem + " ")]
    return wider or [command]


#: directories offered for a file tool's "always allow" at most (the session's, then the
#: ones nearest the file)
MAX_DIR_CHOICES = 4


def _file_target(req: PendingRequest, cwd: str) -> str | None:
    path = req.input.get("file_path") or req.input.get("notebook_path")
    return os.path.normpath(os.path.join(cwd, path)) if isinstance(path, str) and path else None


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def edit_rule(directory: str) -> dict[str, Any]:
    """Edits anywhere under ``directory`` (absolute; ``//`` starts an absolute path in a rule)."""
    return {"toolName": "Edit", "ruleContent": f"/{directory.rstrip('/')}/**"}


def file_rule_dirs(req: PendingRequest, cwd: str) -> list[str]:
    """The directories "always allow" may cover for a file tool's call, widest first: the
    session's own (when the file is in it) and each directory below it down to the
    file's, or the file's own directory for a file outside the session's. Never ``/``."""
    target = _file_target(req, cwd) if req.tool_name in FILE_TOOLS else None
    if target is None:
        return []
    root = os.path.normpath(cwd)
    nearest = os.path.dirname(target)
    if not _inside(target, root):
        return [nearest] if nearest != "/" else []
    below = []
    while nearest != root:
        below.append(nearest)
        nearest = os.path.dirname(nearest)
    return [root, *reversed(below[:MAX_DIR_CHOICES - 1])]


def _file_rule(req: PendingRequest, cwd: str, directory: str | None = None) -> dict[str, Any] | None:
    """A directory, never every file anywhere: ``directory`` if the user picked one (it
    must hold the file), else the session's own if the file is in it, else the file's."""
    target = _file_target(req, cwd)
    if target is None:
        return None
    if directory is not None:
        directory = os.path.normpath(directory)
        if directory == "/" or not _inside(target, directory):
            raise OpError(ErrorCode.BAD_REQUEST, f"{directory} does not hold {target} (or is every file): pick one"
                          " of the directories above it")
        return edit_rule(directory)
    choices = file_rule_dirs(req, cwd)
    return edit_rule(choices[0]) if choices else None


def _fetch_rule(req: PendingRequest) -> dict[str, Any] | None:
    host = urllib.parse.urlsplit(str(req.input.get("url") or "")).hostname
    return {"toolName": "WebFetch", "ruleContent": f"domain:{host}"} if host else None


def _too_broad(rule: dict[str, Any]) -> bool:
    """Never Bash without a command, nor a file tool everywhere (whatever Claude suggests)."""
    tool, content = rule.get("toolName"), str(rule.get("ruleContent") or "").strip()
    if tool == "Bash":
        return content.removesuffix(":*").strip(" *") == ""
    if tool in FILE_TOOLS:
        return content.strip("/*") == ""
    if tool == "WebFetch":
        # (the real CLI reads ``domain:*.x.org`` as every subdomain of x.org: ``*.org`` would be a
        # whole top-level domain)
        host = content.removeprefix("domain:")
        return not content.startswith("domain:") or "." not in host.removeprefix("*.").strip(". ") \
            or "*" in host.removeprefix("*.")
    return False


def _derived_rules(req: PendingRequest, cwd: str, suggested: list[dict[str, Any]],
                   directory: str | None = None) -> list[dict[str, Any]]:
    command = req.input.get("command")
    if req.tool_name == "Bash":
        if not isinstance(command, str) or not command.strip():
            return []
        claude = [str(r.get("ruleContent") or "") for r in suggested if r.get("toolName") == "Bash"]
        return [{"toolName": "Bash", "ruleContent": content} for content in bash_rules(command, claude)]
    if req.tool_name in FILE_TOOLS:
        rule = _file_rule(req, cwd, directory)
        return [rule] if rule else []
    if req.tool_name == "WebFetch":
        rule = _fetch_rule(req)
        return [rule] if rule else []
    return suggested or [{"toolName": req.tool_name}]


def always_allow(req: PendingRequest, cwd: str, directory: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The update that allows this for the rest of the session, and its rules as strings:
    for Bash a command prefix per part of the command (Claude's own suggestion where it
    is broader than the exact command, else the command's name, plus its subcommand for
    git, npm, cargo …), for a file tool edits in one directory (the session's if the file
    is in it), for WebFetch the URL's domain, for another tool Claude's suggestion or the
    tool. Never Bash or a file tool everywhere: where no such scope can be said the rules
    are empty (and "always" is refused). Rules are kept to this session rather than
    written to the project's settings. ``cwd``: the session's directory; ``directory``:
    the one the user picked for a file tool (``file_rule_dirs``; it must hold the file)."""
    suggested = [
        {k: v for k, v in rule.items() if k in ("toolName", "ruleContent")}
        for update in req.suggestions
        if update.get("type") == "addRules" and update.get("behavior") == "allow"
        for rule in update.get("rules") or ()
        if isinstance(rule, dict) and isinstance(rule.get("toolName"), str)
    ]
    if directory is not None and req.tool_name not in FILE_TOOLS:
        raise OpError(ErrorCode.BAD_REQUEST, f"a directory is picked for a file tool's rule, not for {req.tool_name}")
    rules = [r for r in _derived_rules(req, cwd, [r for r in suggested if not _too_broad(r)], directory)
             if not _too_broad(r)]
    update = {"type": "addRules", "rules": rules, "behavior": "allow", "destination": "session"}
    return update, [rule_string(r) for r in rules]


def user_rule(tool: str, scope: str, cwd: str) -> str:
    """A rule the user names (``/rules add``, ``claudectl``): a file tool in a directory
    (absolute, ``~/…``, or relative to the session's ``cwd``; it must exist), a Bash
    command prefix (``npm test``), or WebFetch for a domain. ``bad_request`` for
    anything else, and for every command or every file."""
    scope = scope.strip()
    if tool in FILE_TOOLS:
        directory = os.path.normpath(os.path.join(cwd, os.path.expanduser(scope)))
        if directory == "/":
            raise OpError(ErrorCode.BAD_REQUEST, "never every file: name a directory below /")
        if not os.path.isdir(directory):
            raise OpError(ErrorCode.BAD_REQUEST, f"{directory} is not a directory")
        return rule_string(edit_rule(directory))
    if tool == "Bash":
        parts = command_parts(scope) or []
        if len(parts) != 1 or command_prefix(parts[0]) is None:
            raise OpError(ErrorCode.BAD_REQUEST, f"{scope!r} is not one command to allow (e.g. 'npm test')")
        return rule_string({"toolName": "Bash", "ruleContent": " ".join(parts[0]) + " *"})
    if tool == "WebFetch":
        host = urllib.parse.urlsplit(scope if "//" in scope else f"//{scope}").hostname
        rule = {"toolName": "WebFetch", "ruleContent": f"domain:{host}"}
        if not host or _too_broad(rule):
            raise OpError(ErrorCode.BAD_REQUEST, f"{scope!r} is not a domain (e.g. docs.python.org)")
        return rule_string(rule)
    raise OpError(ErrorCode.BAD_REQUEST, f"rules are added for {', '.join(FILE_TOOLS)} (a directory), Bash (a"
                  f" command) or WebFetch (a domain), not {tool!r}")


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


__all__ = ["PLAN_TOOL", "QUESTION_TOOL", "PendingRequest", "always_allow", "answered_input", "edit_rule",
           "file_rule_dirs", "merged_rules", "rule_string", "set_mode_update", "user_rule"]
