"""``/diff``: the git working-tree changes of the chat's session — a summary in the chat,
the whole diff as a ``.diff`` document. Part of the daily commands (``_daily``).
"""

from __future__ import annotations

from protocol import Diff, DiffSide

from . import _render as render
from ._commands import Link, Reply
from ._reply import Answer, Document

#: files listed per side in the chat (the document has them all)
DIFF_FILES_SHOWN = 15
MINUS = "\N{MINUS SIGN}"  # (lines removed, as git hosts show them)


def _side_lines(title: str, side: DiffSide) -> list[str]:
    files = side["files"]
    if not files:
        return []
    added, removed = sum(f["added"] for f in files), sum(f["removed"] for f in files)
    lines = [f"{title} ({len(files)} file{'s' if len(files) != 1 else ''}, +{added} {MINUS}{removed}):"]
    for f in files[:DIFF_FILES_SHOWN]:
        lines.append(f"  {f['path']}  " + ("binary" if f["binary"] else f"+{f['added']} {MINUS}{f['removed']}"))
    if len(files) > DIFF_FILES_SHOWN:
        lines.append(f"  … and {len(files) - DIFF_FILES_SHOWN} more (in the document)")
    return lines


def diff_answer(session: str, result: Diff) -> Answer:
    """The summary for the chat and the whole diff as a ``.diff`` document."""
    if not result["repo"]:
        return Answer(Reply(f"📝 '{session}' works in {result['cwd']}, which is not in a git repository: there are"
                            " no changes to show."), [])
    staged, unstaged, untracked = result["staged"], result["unstaged"], result["untracked"]
    lines = [f"📝 Changes in '{session}' ({result['root']})"]
    lines += _side_lines("Staged", staged) + _side_lines("Not staged", unstaged)
    if untracked:
        shown = ", ".join(untracked[:DIFF_FILES_SHOWN]) + (" …" if len(untracked) > DIFF_FILES_SHOWN else "")
        lines.append(f"Untracked ({len(untracked)}): {shown}")
    if len(lines) == 1:
        return Answer(Reply(lines[0] + "\nNo changes: the working tree matches the last commit."), [])
    parts = []
    for title, side in (("staged", staged), ("not staged", unstaged)):
        if side["diff"]:
            cut = "\n# … cut here: longer than the supervisor sends\n" if side["truncated"] else ""
            parts.append(f"# {title}\n{side['diff']}{cut}")
    documents = [Document(f"{session}.diff", "\n".join(parts).encode(), "The whole diff, staged first")] \
        if parts else []
    return Answer(Reply("\n".join(lines)), documents)


async def diff(link: Link, chat: int, args: list[str]) -> Reply | Answer:
    """``/diff [path]``: the active session's git working-tree changes."""
    active = await link.active(chat)
    if active is None:
        return Reply(render.NO_ACTIVE)
    return diff_answer(active, await link.diff(active, path=" ".join(args) or None))


__all__ = [
    "DIFF_FILES_SHOWN",
    "MINUS",
    "diff",
    "diff_answer",
]
