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
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import setproctitle

from protocol import LOCK_FILE, EventKind, Reason, SessionState, instance_id, runtime_dir_problem

from . import _forkserver
from ._claude import INSTANCE_ENV, SESSION_ENV
from ._config import Config, find_claude
from ._errors import StartupRefused
from ._keeper import STOP_GRACE
from ._os import System
from ._store import FAILED, WRITTEN, Store

log = logging.getLogger("supervisord_claude")

LOCK_PATIENCE = 2.0


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
        raise StartupRefused(problem)


def acquire_lock(path: Path) -> int:
    """Hold an exclusive flock on ``<runtime dir>/lock`` for the supervisor's lifetime."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    # clients probe the lock for a moment (is a supervisor running?): a supervisor holds
    # it for its whole life, so only a lock still held after a while means one runs
    deadline = time.monotonic() + LOCK_PATIENCE
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
            raise StartupRefused(
                f"another supervisor (pid {holder}) is already running on {path}"
            ) from None
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
    instance = instance_id(config.runtime_dir)
    setproctitle.setproctitle(f"{title_prefix(instance)} supervisor")
    system = System()
    reap_leftovers(system, instance)
    adoptable = keepers_left(system, instance)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    death_r, death_w = os.pipe()
    fs_pid, fs_sock = _forkserver.start(
        f"{title_prefix(instance)} forkserver", death_r, close_fds=(lock_fd, death_w)
    )
    os.close(death_r)
    fs_sock.setblocking(False)
    store = Store(config.db_path)
    supervisor = Supervisor(config, store, system, _forkserver.Link(fs_sock), adoptable=adoptable)
    try:
        asyncio.run(supervisor.serve())
    finally:
        supervisor.close()
        store.close()
        os.close(death_w)  # the fork server sees EOF and exits (its keepers need not)
        try:
            os.waitpid(fs_pid, 0)
        except ChildProcessError:
            pass
        os.close(lock_fd)
    if supervisor.restarting:
        # the same pid (a service manager keeps tracking it) with the code now installed;
        # the keepers wait for it and are adopted, so running turns go on
        log.info("restarting in place")
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, "-m", "supervisord_claude", *sys.argv[1:]])
    log.info("supervisor stopped")
    return 0
