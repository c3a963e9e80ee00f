"""``claudectl attach`` and ``claudectl conversations``: a session's conversation in
Claude Code's own terminal UI, and the conversations Claude Code keeps on disk.

``attach`` forks first: the child, which becomes the TUI, waits on a pipe while the
supervisor frees the session (``attach`` op, naming the child's pid); then it is told
what to run — the session's ``claude --resume <id>`` with its model, mode, directory and
environment — and execs it, attached to this terminal. The supervisor watches that pid,
not claudectl's: if claudectl is killed the TUI runs on and still holds the session; if
claudectl dies before the go-ahead, the child reads end-of-file and exits, and the
session is handed back.

On another host (``--host NAME``) the TUI runs there: claudectl runs that machine's own
claudectl (``supervisord-claude ctl attach NAME``) in this terminal through ``ssh -t`` —
an argv, each word quoted for the remote shell — and returns its exit status. That is
the one ssh connection: no link to the remote supervisor beside it (its claudectl says
plainly if there is no such session); ssh's own words are passed on as they come, and
kept to say what to do when ssh itself fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from protocol import Client, control_dir, explain_ssh_failure, relative_time

from ._common import fail
from ._views import cut

#: how much of a first prompt a listing shows, in a terminal's columns
PROMPT_CHARS = 60


def _child_waits_then_execs(read_fd: int) -> None:
    """The forked child: read what to run, then become it. Never returns."""
    try:
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
        if not chunks:  # claudectl went away (or gave up): nothing to run
            os._exit(1)
        launch = json.loads(b"".join(chunks))
        os.chdir(launch["cwd"])
        os.execvpe(launch["argv"][0], launch["argv"], launch["env"])
    except BaseException as exc:  # (nothing of claudectl's may run in this process)
        try:
            os.write(2, f"claudectl: could not start Claude Code: {exc}\n".encode())
        finally:
            os._exit(127)


def _exit_status(status: int) -> int:
    """A shell's view of how the TUI ended: its exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


#: what ssh exits with when it failed itself (the remote command's status otherwise)
SSH_FAILED = 255
#: how much of ssh's stderr is kept to explain its failure, and read at a time
STDERR_TAIL = 4096
CHUNK = 65536
#: how long ssh's last words are waited for once it exited
STDERR_GRACE = 5.0


def attach_elsewhere(args: argparse.Namespace) -> int:
    """``--host NAME attach``: the session's TUI on its own machine, in this terminal,
    through one ssh (made without a ``Client``: a link to the remote supervisor would be a
    second connection, held open for nothing while the TUI runs)."""
    host = args.on_host
    words = ["ctl", "attach", args.name, *(["--now"] if args.now else []), *(["--json"] if args.json else [])]
    if not args.json:
        print(f"claudectl: opening '{args.name}' on {host.name} through ssh", file=sys.stderr)
    # the terminal's Ctrl-C and Ctrl-\\ are the remote TUI's (ssh passes them on)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    argv = host.ssh_terminal_argv(words, control=control_dir())  # (the shared connection, if there is one)
    try:
        code, said = _run_passing_stderr_on(argv)
    except OSError as exc:
        return fail(args, f"host {host.name}: cannot run {argv[0]!r}: {exc.strerror or exc} (is OpenSSH's client"
                    " installed and on PATH?)", "connection")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    if code == SSH_FAILED:  # (what to do about it, as any command over ssh says)
        fail(args, explain_ssh_failure(host, code, said), "connection")
    return code


def _run_passing_stderr_on(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` in this terminal; its stderr goes on to ours as it comes (with ``-t``
    it is ssh's own words: the remote TUI writes to its terminal), and the last of it is
    kept. Its exit status, and that last part."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    pipe, tail = proc.stderr.fileno(), bytearray()

    def pass_on() -> None:
        while chunk := os.read(pipe, CHUNK):
            with contextlib.suppress(OSError):  # (our stderr gone: ssh must not block on its own)
                os.write(2, chunk)
            tail.extend(chunk)
            del tail[:-STDERR_TAIL]

    sys.stderr.flush()
    reader = threading.Thread(target=pass_on, name="ssh-stderr", daemon=True)
    reader.start()
    code = proc.wait()
    # (a process ssh left behind may hold the pipe: its words are not waited for long)
    reader.join(STDERR_GRACE)
    if not reader.is_alive():
        proc.stderr.close()
    return code, tail.decode(errors="replace")


def cmd_attach(client: Client, args: argparse.Namespace) -> int:
    """``attach`` on this machine (on another: ``attach_elsewhere``, which needs no client)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_fd)
        _child_waits_then_execs(read_fd)
    os.close(read_fd)
    try:
        tty = os.ttyname(0) if os.isatty(0) else None
        if not args.json:
            print(f"claudectl: opening '{args.name}' here once no Claude of the supervisor holds it"
                  + (" (stopping its running answer)" if args.now else " (after its running answer, if any)"),
                  file=sys.stderr)
        reply = client.attach(args.name, pid, tty=tty or None, now=args.now, timeout=args.timeout)
    except BaseException:
        os.close(write_fd)  # the child reads end-of-file and exits
        os.waitpid(pid, 0)
        raise
    if not reply.get("attached"):
        os.close(write_fd)
        os.waitpid(pid, 0)
        print(f"claudectl: not attached: {reply.get('detail')}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"claudectl: '{args.name}' is open in Claude Code (conversation {reply['session_id']}); messages"
              " sent to it meanwhile wait, and are answered when you /exit", file=sys.stderr)
    launch = {"argv": reply["argv"], "cwd": reply["cwd"], "env": {**os.environ, **reply["env"]}}
    # the terminal's Ctrl-C and Ctrl-\\ are the TUI's now (as a shell running a command)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    try:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(json.dumps(launch).encode())
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    code = _exit_status(status)
    if args.json:
        print(json.dumps({"session": args.name, "exit_status": code}))
    return code


def conversation_rows(found: list[dict[str, Any]]) -> str:
    """One line per conversation: id, last activity, messages, what it is about, marks."""
    lines = []
    for c in found:
        about = c.get("summary") or c.get("first_prompt") or ""
        about = cut(" ".join(about.split()), PROMPT_CHARS)
        marks = []
        if c.get("held_by"):
            marks.append(f"session '{c['held_by']}'")
        if c.get("open_pid"):
            marks.append(f"open in claude pid {c['open_pid']}")
        mark = f"  [{'; '.join(marks)}]" if marks else ""
        lines.append(f"{c['session_id']}  {relative_time(c['last_active']):>10}  {c['messages']:>4}{'' if c.get('counted_all', True) else '+'} msgs  {about}{mark}")
    return "\n".join(lines)


def cmd_conversations(client: Client, args: argparse.Namespace) -> int:
    cwd = os.path.abspath(os.path.expanduser(args.cwd or os.getcwd()))
    found = client.conversations(cwd=cwd)
    if args.json:
        print(json.dumps(found))
    else:
        print(conversation_rows(found) if found else f"No Claude Code conversations in {cwd}.")
    return 0
