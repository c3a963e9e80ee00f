"""OS calls behind one small object (signals, /proc scans), so tests can replace it; and
``sd_notify``, the service manager's readiness protocol."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def sd_notify(state: str) -> bool:
    """Tell systemd (a ``Type=notify`` unit) how the service is: ``READY=1``,
    ``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``. False where no service manager
    listens (``$NOTIFY_SOCKET`` unset) or it cannot be reached; never raises."""
    address = os.environ.get(NOTIFY_SOCKET_ENV)
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager (%s): %s", address, exc)
        return False
    return True


class System:
    """The real operating system. Every method tolerates processes that vanish meanwhile."""

    def kill(self, pid: int, sig: int) -> bool:
        """Send ``sig`` to ``pid``; False if it no longer exists."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def killpg(self, pgid: int, sig: int) -> bool:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def alive(self, pid: int) -> bool:
        """True if ``pid`` exists and is not a zombie."""
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        # the state letter follows the parenthesised command name
        return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")

    def start_time(self, pid: int) -> int | None:
        """When ``pid`` started (clock ticks since boot, /proc's field 22): with the pid, it
        names one process — a pid reused by another process has another start time. None
        if it is gone."""
        try:
            stat = (PROC / str(pid) / "stat").read_text()
            return int(stat[stat.rfind(")") + 2:].split()[19])
        except (OSError, IndexError, ValueError):
            return None

    def memory(self, pid: int) -> int | None:
        """Resident memory of ``pid`` in bytes (None if it is gone)."""
        try:
            resident = int((PROC / str(pid) / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return resident * os.sysconf("SC_PAGE_SIZE")

    def _pids(self) -> Iterator[int]:
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                yield int(entry.name)

    def title(self, pid: int) -> str:
        try:
            raw = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            return ""
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()

    def uid(self, pid: int) -> int | None:
        """The real uid of ``pid`` (None if it is gone)."""
        try:
            return (PROC / str(pid)).stat().st_uid
        except OSError:
            return None

    def processes_titled(self, prefix: str) -> list[tuple[int, str]]:
        """This user's processes whose title (argv as set by setproctitle) starts with
        ``prefix``: another user's process is never ours to adopt or reap, whatever its title."""
        me, uid = os.getpid(), os.getuid()
        found = []
        for pid in self._pids():
            if pid == me:
                continue
            title = self.title(pid)
            if title.startswith(prefix) and self.uid(pid) == uid:
                found.append((pid, title))
        return found

    def processes_with_env(self, key: str, value: str) -> list[int]:
        """Processes whose initial environment has ``key=value`` (Claude children and
        whatever they started carry the instance marker)."""
        needle = f"{key}={value}".encode()
        me, uid = os.getpid(), os.getuid()
        found = []
        for pid in self._pids():
            if pid == me or self.uid(pid) != uid:
                continue
            try:
                environ = (PROC / str(pid) / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(pid)
        return found

    def environ(self, pid: int) -> dict[str, str]:
        try:
            raw = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            return {}
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}

    def tree_cpu(self, roots: Collection[int]) -> dict[int, float]:
        """CPU seconds used so far by each root's process tree: the root, every process
        of its session or process group (Claude is started in a session of its own), and
        every descendant (also one a tool started in a session of its own). Each process
        counts its own time and that of its children it has reaped (``cutime``,
        ``cstime``), so a test run's short-lived compilers count too. A root that is gone
        is left out. One pass over /proc, whatever the number of roots."""
        wanted = set(roots)
        if not wanted:
            return {}
        parents: dict[int, int] = {}
        cpu: dict[int, int] = {}
        owner: dict[int, int] = {}  # pid -> the root it belongs to (by session or group)
        for name in os.listdir(PROC):  # (plain calls: this runs in the supervisor's loop)
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                fd = os.open(f"{PROC}/{name}/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                raw = os.read(fd, 4096)
            except OSError:
                continue
            finally:
                os.close(fd)
            # the fields after the parenthesised command name (which may hold anything)
            fields = raw[raw.rfind(b")") + 2 :].split()
            try:
                ppid, group, session = int(fields[1]), int(fields[2]), int(fields[3])
                cpu[pid] = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            except (IndexError, ValueError):
                continue
            parents[pid] = ppid
            if pid in wanted:
                owner[pid] = pid
            elif session in wanted:
                owner[pid] = session
            elif group in wanted:
                owner[pid] = group
        totals: dict[int, int] = {}
        for pid, ticks in cpu.items():
            root = self._root_of(pid, wanted, parents, owner)
            if root is not None:
                totals[root] = totals.get(root, 0) + ticks
        per_second = os.sysconf("SC_CLK_TCK")
        return {root: ticks / per_second for root, ticks in totals.items() if root in cpu}

    @staticmethod
    def _root_of(pid: int, roots: set[int], parents: dict[int, int], owner: dict[int, int]) -> int | None:
        """The root whose tree ``pid`` is in (by session or group, else by ancestry)."""
        seen = 0
        while pid > 1 and seen < 1024:  # (a bound, should /proc change under us into a loop)
            if pid in owner:
                return owner[pid]
            if pid in roots:
                return pid
            pid = parents.get(pid, 0)
            seen += 1
        return None

    def terminate(self, pids: Iterable[int], grace: float, poll: float = 0.05) -> int:
        """SIGTERM each pid, wait up to ``grace`` seconds, SIGKILL survivors.

        Returns how many were signalled. Blocking: for start-up and tests only.
        """
        targets = [pid for pid in pids if self.kill(pid, signal.SIGTERM)]
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(self.alive(p) for p in targets):
            time.sleep(poll)
        for pid in targets:
            if self.alive(pid):
                log.warning("pid %d ignored SIGTERM for %.1fs; sending SIGKILL", pid, grace)
                self.kill(pid, signal.SIGKILL)
        return len(targets)
