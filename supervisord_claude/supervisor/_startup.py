"""Start-up and recovery: the runtime dir and its lock, reaping what a previous
supervisor left, recovering the store, forking the fork server — in that order, all
before any thread or ZeroMQ context exists — then running the ``Supervisor``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import setproctitle

from protocol import LOCK_FILE, EventKind, Reason, SessionState, instance_id, runtime_dir_problem

from .._claude import INSTANCE_ENV, SESSION_ENV
from .._config import Config, find_claude
from .._errors import StartupRefused
from .._os import System
from .._wire import STOP_GRACE
from . import _forkserver
from ._store import FAILED, WRITTEN, Store

log = logging.getLogger("supervisord_claude")

LOCK_PATIENCE = 2.0
#: in the state dir, next to the store (not "lock": the two dirs may be one)
STATE_LOCK_FILE = "supervisor.lock"


#: what a user can do about a runtime dir another user made (they cannot remove it)
ELSEWHERE_HINT = ("you cannot remove it: start the supervisor, claudectl and the bot with --runtime-dir DIR"
                  " (or SUPERVISORD_CLAUDE_RUNTIME_DIR=DIR) on a directory of your own, or set"
                  " XDG_RUNTIME_DIR (e.g. /run/user/<uid>, which systemd-logind makes for you); or ask"
                  " the machine's administrator to remove it")


def title_prefix(instance: str) -> str:
    return f"supervisord-claude[{instance}]:"


def prepare_runtime_dir(path: Path) -> None:
    """Create the runtime dir 0700, or refuse one that others could reach (see
    ``protocol.runtime_dir_problem``: a symlink, another owner, an open mode)."""
    problem = runtime_dir_problem(path)
    if problem is None and not os.path.lexists(path):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = runtime_dir_problem(path)  # (made by someone else in between?)
    if problem is not None:
        if _owned_by_another_user(path):
            # they cannot remove another user's directory (in /tmp, the sticky bit): say
            # what they can do instead
            problem += f"; {ELSEWHERE_HINT}"
        raise StartupRefused(problem)


def _owned_by_another_user(path: Path) -> bool:
    try:
        return os.lstat(path).st_uid != os.getuid()
    except OSError:
        return False


def acquire_lock(path: Path) -> int:
    """Hold an exclusive flock on ``<runtime dir>/lock`` for the supervisor's lifetime."""
    # clients probe the lock for a moment (is a supervisor running?): a supervisor holds
    # it for its whole life, so only a lock still held after a while means one runs
    return _hold_lock(path / LOCK_FILE, LOCK_PATIENCE, f"is already running on {path}")


def acquire_state_lock(state_dir: Path) -> int:
    """Hold an exclusive flock on ``<state dir>/supervisor.lock``: two supervisors on different runtime
    dirs must not share one store (two keepers, two Claudes on one conversation). Nothing
    else probes this lock, so a held one refuses at once."""
    try:
        return _hold_lock(state_dir / STATE_LOCK_FILE, 0.0,
                          f"already uses the state dir {state_dir} (with another runtime dir?); give this"
                          f" supervisor its own --state-dir, or stop that one")
    except OSError as exc:  # e.g. a read-only file system
        why = exc.strerror or str(exc)
        raise StartupRefused(f"cannot lock the state dir {state_dir}, where the store is: {why}") from None


def _hold_lock(lock_path: Path, patience: float, refusal: str) -> int:
    """Take the flock on ``lock_path`` (waiting up to ``patience`` seconds) and write our
    pid into it, or refuse naming the pid written by its holder."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartupRefused(f"another supervisor (pid {holder}) {refusal}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def keepers_left(system: System, instance: str) -> dict[int, str]:
    """pid -> session of every keeper a previous supervisor of this runtime dir left: to
    adopt if it introduces itself, else to reap."""
    prefix = f"{title_prefix(instance)} keeper "
    return {pid: title[len(prefix):].strip() for pid, title in system.processes_titled(prefix)}


def reap_leftovers(system: System, instance: str) -> int:
    """Kill what a previous supervisor left that is no keeper (its fork server)."""
    others = [pid for pid, title in system.processes_titled(title_prefix(instance))
              if not title.startswith(f"{title_prefix(instance)} keeper ")]
    return system.terminate(others, grace=2.0)


def reap_stale(system: System, instance: str, keepers: list[int], live_sessions: set[str]) -> tuple[int, int]:
    """Kill keepers that were not adopted (by title: hung, stopped, another wire version),
    then every Claude process of this instance whose session has no adopted keeper.
    Returns (keepers, Claude processes). Blocking: run it off the event loop."""
    reaped = system.terminate(keepers, grace=STOP_GRACE + 1.0)
    orphans = [pid for pid in system.processes_with_env(INSTANCE_ENV, instance)
               if system.environ(pid).get(SESSION_ENV) not in live_sessions]
    return reaped, system.terminate(orphans, grace=2.0)


def recover_store(store: Store, now: float, adopted: frozenset[str] = frozenset()) -> None:
    """After a restart, only adopted keepers run: every other session is suspended (or
    failed, archived), and every message Claude was answering in one is reported failed,
    to its sender (the event carries its origin) and with its status in one transaction."""
    for rec in store.list_sessions(True):
        if rec.state.live and rec.name not in adopted:
            store.append_event(
                rec.name,
                EventKind.STATE,
                {"state": SessionState.SUSPENDED.value, "reason": Reason.STARTUP.value},
                {"state": SessionState.SUSPENDED, "suspended_at": now},
            )
    for msg in store.messages(None, WRITTEN):
        if msg.session in adopted:
            continue  # its keeper is still answering it
        body: dict[str, Any] = {
            "message_id": msg.id,
            "reason": "the supervisor stopped while Claude was answering; send it again",
        }
        if msg.origin:  # a front end answers its sender by it
            body["origin"] = msg.origin
        store.append_event(msg.session, EventKind.MESSAGE_FAILED, body, message_status=(msg.id, FAILED))


def restart_argv() -> list[str]:
    """What a restart in place runs: this supervisor's command, with the code installed now."""
    return [sys.executable, "-m", "supervisord_claude", *sys.argv[1:]]


#: what a start does before it touches anything: import the daemon, read the configuration
_START_CHECK = "import sys\nfrom supervisord_claude import _config\nfrom supervisord_claude.supervisor import _startup, _supervisor\n_config.parse(sys.argv[1:])\n"


def restart_problem() -> str | None:
    """Why the code installed now would not start (its last line of error), or None. A
    restart in place that would not come back — an upgrade whose new dependency is not
    installed, a configuration the new release refuses — is refused before anything stops,
    and this supervisor goes on."""
    try:
        check = subprocess.run([sys.executable, "-c", _START_CHECK, *sys.argv[1:]], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if check.returncode == 0:
        return None
    lines = check.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {check.returncode}"


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (every client connection and every
    keeper's takes a descriptor; see ``_control.ConnectionGate``). Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # (the kernel takes no more than fs.nr_open)
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            return soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open-files limit raised from %d to %d", soft, target)
        return target
    return soft


def run(config: Config) -> int:
    """Start-up order matters: lock, reap, fork server (no threads yet), then the loop."""
    from ._supervisor import Supervisor

    config = replace(config, claude_bin=find_claude(config.claude_bin))
    raise_open_files_limit()
    prepare_runtime_dir(config.runtime_dir)
    lock_fd = acquire_lock(config.runtime_dir)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_lock_fd = acquire_state_lock(config.state_dir)
    instance = instance_id(config.runtime_dir)
    setproctitle.setproctitle(f"{title_prefix(instance)} supervisor")
    system = System()
    reap_leftovers(system, instance)
    adoptable = keepers_left(system, instance)
    death_r, death_w = os.pipe()  # (the read end is kept: a new fork server needs it)
    fs_title = f"{title_prefix(instance)} forkserver"
    fs_pid, fs_sock = _forkserver.start(fs_title, death_r, close_fds=(lock_fd, state_lock_fd, death_w))
    fs_sock.setblocking(False)
    fork_server = _forkserver.Server(fs_pid, fs_title, death_r)
    store = Store(config.db_path)
    supervisor = Supervisor(config, store, system, _forkserver.Link(fs_sock, fork_server), adoptable=adoptable)
    try:
        asyncio.run(supervisor.serve())
    finally:
        supervisor.close()
        store.close()
        os.close(death_w)  # the fork server sees EOF and exits (its keepers need not)
        fork_server.wait()
        os.close(death_r)
        os.close(state_lock_fd)
        os.close(lock_fd)
    if supervisor.restarting:
        # the same pid (a service manager keeps tracking it) with the code now installed;
        # the keepers wait for it and are adopted, so running turns go on
        log.info("restarting in place")
        logging.shutdown()
        os.execv(sys.executable, restart_argv())
    if supervisor.exit_status:
        log.critical("supervisor stopped (exit status %d); its keepers wait for the next one", supervisor.exit_status)
    else:
        log.info("supervisor stopped")
    return supervisor.exit_status
