"""The fork server: a thread-free process that forks session keepers.

The supervisor runs an event loop and libzmq I/O threads, and ``fork()`` in a threaded
process can copy a held lock into the child. So the supervisor forks this server once at
start-up, before any ZeroMQ context or thread exists. The server imports the keeper
code, calls ``gc.freeze()`` so forked keepers share those pages, and then forks a keeper
per request. It reports every keeper's pid and exit status back over a socketpair.

Messages (``_wire``: Spawn one way; Spawned, SpawnFailed, Exited the other) travel one
datagram each over a SOCK_SEQPACKET socketpair. The server exits when the supervisor's
death pipe reaches EOF or the socket closes.

If the server dies (kill -9, a bug), the supervisor starts a new one (``Link.respawn``):
by fork and exec this time, since the supervisor has threads by then. The dead server's
keepers live on, re-parented; their exits are watched as an adopted keeper's are.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import select
import signal
import socket
import subprocess
import sys
import traceback

import setproctitle

from .. import _wire
from ..keeper import _keeper  # imported here so that forked keepers share its pages

MAX_SPEC_BYTES = 1 << 20


class Server:
    """The fork server process: its pid, and what a new one needs (its title, a read end
    of the supervisor's death pipe, which the keepers it forks inherit)."""

    def __init__(self, pid: int, title: str, death_fd: int) -> None:
        self.pid = pid
        self.title = title
        self.death_fd = death_fd
        self._proc: subprocess.Popen[bytes] | None = None

    def respawn(self) -> socket.socket:
        """Reap the dead server and start a new one; returns the supervisor's end of its
        socketpair (blocking). Fork and exec, not a bare fork: the supervisor has threads."""
        self.wait()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "supervisord_claude.supervisor._forkserver", self.title, str(child_sock.fileno()),
                 str(self.death_fd)],
                pass_fds=(child_sock.fileno(), self.death_fd), stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        self.pid = self._proc.pid
        return parent_sock

    def wait(self) -> None:
        """Wait for the server to exit (it has, or it is on its way: its socket or the death
        pipe is closed)."""
        if self._proc is not None:
            self._proc.wait()
            return
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class Link:
    """The supervisor's end of the socketpair (non-blocking). Spawn requests the socket
    cannot take now (hundreds at once fill its buffer) wait in ``backlog``, in order, and
    go out as soon as it can take them (to a new server, if the old one died)."""

    def __init__(self, sock: socket.socket, server: Server | None = None) -> None:
        self.sock = sock
        self.server = server
        self.backlog: collections.deque[bytes] = collections.deque()

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None

    def respawn(self) -> None:
        """The server died: start a new one; what was waiting in the backlog goes to it.
        (Spawn requests the old one read and never answered are the pool's to settle.)"""
        if self.server is None:
            raise RuntimeError("no fork server process to respawn")
        with contextlib.suppress(RuntimeError):  # (no loop: a script)
            asyncio.get_running_loop().remove_writer(self.sock.fileno())
        self.sock.close()
        self.sock = self.server.respawn()
        self.sock.setblocking(False)
        if self.backlog and not self._flush():
            self._wait_writable()

    def fileno(self) -> int:
        return self.sock.fileno()

    def spawn(self, token: int, spec: _wire.KeeperSpec) -> None:
        self.backlog.append(_wire.encode(_wire.Spawn(token, spec)))
        if len(self.backlog) == 1 and not self._flush():
            self._wait_writable()

    def _flush(self) -> bool:
        """Send what the socket takes; True once the backlog is empty."""
        while self.backlog:
            try:
                self.sock.send(self.backlog[0])
            except BlockingIOError:
                return False
            self.backlog.popleft()
        return True

    def _wait_writable(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script): wait here
            while not self._flush():
                select.select([], [self.sock], [], 1.0)
            return

        def writable() -> None:
            if self._flush():
                loop.remove_writer(self.sock.fileno())
        loop.add_writer(self.sock.fileno(), writable)

    def reports(self) -> list[_wire.Message] | None:
        """Every report waiting now; None once the server is gone."""
        out: list[_wire.Message] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out
            if not data:
                return out or None  # the next call sees the end again
            out.append(_wire.decode(data))


def start(
    title: str, death_fd: int, close_fds: tuple[int, ...], freeze: bool = True
) -> tuple[int, socket.socket]:
    """Fork the server. Returns (pid, the supervisor's end of the socketpair).
    ``freeze=False`` exists only so the benchmark can show what ``gc.freeze()`` saves."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            parent_sock.close()
            for fd in close_fds:
                os.close(fd)
            _serve(title, child_sock, death_fd, freeze)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    child_sock.close()
    return pid, parent_sock


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _at_eof(fd: int) -> bool:
    try:
        return not os.read(fd, 1)
    except BlockingIOError:  # keepers share the pipe and set it non-blocking
        return False


def _serve(title: str, sock: socket.socket, death_fd: int, freeze: bool) -> None:
    setproctitle.setproctitle(title)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C is for the supervisor
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    gc.collect()
    if freeze:
        # keep the imported keeper code out of the collector's reach, so forked keepers
        # never write to (and so never copy) those pages
        gc.freeze()

    def send(msg: _wire.Message) -> None:
        try:
            sock.send(_wire.encode(msg))
        except OSError:
            pass

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            send(_wire.Exited(pid, _exit_status(status)))

    while True:
        try:
            ready, _, _ = select.select([sock.fileno(), death_fd, wake_r], [], [], 1.0)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
        reap()
        if death_fd in ready and _at_eof(death_fd):
            return  # supervisor gone; keepers notice on their own copy of the pipe
        if sock.fileno() in ready:
            data = sock.recv(MAX_SPEC_BYTES)
            if not data:
                return
            try:
                request = _wire.decode(data)
            except _wire.WireError as exc:
                sys.stderr.write(f"fork server: bad request dropped: {exc}\n")
                continue
            if not isinstance(request, _wire.Spawn):
                continue
            try:
                pid = os.fork()
            except OSError as exc:  # EAGAIN/ENOMEM: tell the supervisor, keep serving
                send(_wire.SpawnFailed(request.token, str(exc)))
                continue
            if pid == 0:
                code = 1
                try:
                    sock.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    code = _keeper.main(request.spec, death_fd)
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            send(_wire.Spawned(request.token, pid))


def exec_main(argv: list[str]) -> int:
    """A server started by ``Server.respawn``: ``TITLE SOCKET_FD DEATH_FD``."""
    title, sock_fd, death_fd = argv
    _serve(title, socket.socket(fileno=int(sock_fd)), int(death_fd), freeze=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - runs in the respawned server
    sys.exit(exec_main(sys.argv[1:]))
