"""Start-up: the runtime dir and its lock, the state dir's lock, reaping what a previous
supervisor left (``_succession``), forking the fork server — in that order, all before
any thread or ZeroMQ context exists — then running the ``Supervisor`` (which adopts the
keepers left and recovers the store through its event log: ``Core.recover``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import setproctitle

from protocol import LOCK_FILE, instance_id, runtime_dir_problem

from .._config import find_claude
from .._configkeys import Config
from .._errors import StartupRefused
from .._os import System
from . import _forkserver
from ._store import Store
from ._succession import keepers_left, reap_leftovers, restart_argv, title_prefix
from ._supervisor import Supervisor

log = logging.getLogger("supervisord_claude")

LOCK_PATIENCE = 2.0
#: in the state dir, next to the store (not "lock": the two dirs may be one)
STATE_LOCK_FILE = "supervisor.lock"


#: what a user can do about a runtime dir another user made (they cannot remove it)
ELSEWHERE_HINT = ("you cannot remove it: start the supervisor, claudectl and the bot with --runtime-dir DIR"
                  " (or SUPERVISORD_CLAUDE_RUNTIME_DIR=DIR) on a directory of your own, or set"
                  " XDG_RUNTIME_DIR (e.g. /run/user/<uid>, which systemd-logind makes for you); or ask"
                  " the machine's administrator to remove it")


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


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (every client connection and every
    keeper's takes a descriptor; see ``_clientlimits.ConnectionGate``). Returns the soft limit."""
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
