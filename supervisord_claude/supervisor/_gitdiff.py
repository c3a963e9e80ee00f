"""A session's git working-tree changes (``diff`` op, ``/diff``): staged and unstaged
apart, each as a per-file summary (lines added and removed) and the whole diff, plus untracked files.

git runs as an argv list (never a shell), in the session's directory, with a timeout,
without external diff drivers or text conversion (a repository's config must not make
the supervisor run its programs), and without taking the index lock
(``GIT_OPTIONAL_LOCKS=0``: Claude may be committing at the same moment).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from protocol import ErrorCode

from .._clock import Clock, wait_for
from .._errors import OpError

GIT_TIMEOUT = 20.0
#: each diff is cut here (the reply must stay well under what a client pipe holds)
MAX_DIFF_BYTES = 1024 * 1024
_GIT = ("git", "-c", "core.quotepath=off", "--no-pager")


async def _git(clock: Clock, cwd: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        proc = await asyncio.create_subprocess_exec(
            *_GIT, *args, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise OpError(ErrorCode.BAD_REQUEST, "git is not installed on the supervisor's machine") from None
    except OSError as exc:
        raise OpError(ErrorCode.BAD_REQUEST, f"cannot run git in {cwd}: {exc.strerror or exc}") from None
    try:
        out, err = await wait_for(clock, proc.communicate(), GIT_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise OpError(ErrorCode.BUSY, f"git took more than {GIT_TIMEOUT:g} s in {cwd}; try again") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()


def _numstat(text: str) -> list[dict[str, Any]]:
    files = []
    for line in text.splitlines():
        added, removed, path = [*line.split("\t", 2), "", ""][:3]
        binary = added == "-"
        files.append({"path": path, "added": 0 if binary else int(added or 0),
                      "removed": 0 if binary else int(removed or 0), "binary": binary})
    return files


async def _side(clock: Clock, cwd: str, staged: bool, pathspec: list[str]) -> dict[str, Any]:
    cached = ["--cached"] if staged else []
    flags = ["--no-color", "--no-ext-diff", "--no-textconv", *cached]
    code, numstat, err = await _git(clock, cwd, "diff", "--numstat", *flags, "--", *pathspec)
    if code != 0:
        raise OpError(ErrorCode.BAD_REQUEST, f"git diff failed: {err.splitlines()[-1] if err else f'exit {code}'}")
    _, diff, _ = await _git(clock, cwd, "diff", *flags, "--", *pathspec)
    data = diff.encode()
    return {"files": _numstat(numstat), "diff": data[:MAX_DIFF_BYTES].decode(errors="ignore"),
            "truncated": len(data) > MAX_DIFF_BYTES}


async def working_tree_diff(clock: Clock, cwd: str, path: str | None) -> dict[str, Any]:
    """``{repo: false}`` outside a git repository; else ``{repo, root, staged, unstaged,
    untracked}`` (``path``: only changes under it, relative to ``cwd``)."""
    if not os.path.isdir(cwd):
        raise OpError(ErrorCode.BAD_REQUEST, f"the session's directory {cwd} is gone")
    code, root, _ = await _git(clock, cwd, "rev-parse", "--show-toplevel")
    if code != 0:
        return {"repo": False, "cwd": cwd}
    pathspec = [path] if path else []
    if path:
        target = os.path.realpath(os.path.join(cwd, path))
        top = os.path.realpath(root.strip())
        if target != top and not target.startswith(top.rstrip("/") + "/"):
            raise OpError(ErrorCode.BAD_REQUEST, f"{path} is outside the repository ({top})")
    staged, unstaged = await _side(clock, cwd, True, pathspec), await _side(clock, cwd, False, pathspec)
    _, untracked, _ = await _git(clock, cwd, "ls-files", "--others", "--exclude-standard", "--", *pathspec)
    return {"repo": True, "cwd": cwd, "root": root.strip(), "staged": staged, "unstaged": unstaged,
            "untracked": untracked.splitlines()[:200]}


__all__ = ["GIT_TIMEOUT", "MAX_DIFF_BYTES", "working_tree_diff"]
