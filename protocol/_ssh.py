"""``SshLink``: a remote host's supervisor as a private ipc endpoint of this client.

One long-lived ``ssh … -- DEST supervisord-claude dial-stdio`` child per host (the
remote end relays its stdin/stdout to the remote control socket, as ``docker system
dial-stdio`` does) and a small relay, in a thread, between that child's pipes and a Unix
socket in a fresh 0700 directory of this client. A ZeroMQ DEALER connects to that
socket by ``ipc://`` and speaks ZMTP to the remote ROUTER through the bytes as they are:
ZMTP is a byte protocol, so no frame is decoded on the way.

The socket exists only while ssh is up (the remote supervisor's ZMTP greeting has
arrived): while the host is unreachable ZeroMQ cannot connect, so a client sees the
supervisor as away (``AsyncClient.reachable``) and ZeroMQ reconnects by itself once the
link is back. ssh is redialled after it ends, with backoff (0.5 s doubling to 30 s, back
to 0.5 s after a link that came up). ssh shares one connection per destination between
links, this client's and the next command's (``_hosts``: ControlMaster, ControlPersist), so
a link after the first pays no handshake; if that shared connection dies, every link on it
ends and is redialled like any other, the first redial making a new one (ssh removes a
dead master's socket by itself). Why it ended — ssh's own words on stderr, e.g.
"Permission denied (publickey)" — is ``problem``, turned into a sentence that says what
to do (``_hostproblems.explain``).
"""

from __future__ import annotations

import contextlib
import enum
import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ._errors import ConnectionFailed
from ._hostproblems import explain
from ._hosts import Host, control_dir

#: the first byte a ZMTP 3 peer sends (its greeting's signature)
ZMTP_SIGNATURE = 0xFF
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: what is kept of ssh's stderr for the error message
STDERR_TAIL = 4096
#: stop reading one side while this much waits to be written to the other
MAX_PENDING = 4 * 1024 * 1024
CHUNK = 65536


class LinkState(enum.Enum):
    DOWN = "down"  # no ssh; the next dial is due at ``_next_dial``
    DIALING = "dialing"  # ssh runs; the remote greeting has not arrived
    UP = "up"  # the remote greeting arrived; the socket is there
    CLOSED = "closed"


class SshLink:
    """The relay of one host for one client; ``endpoint`` is where its DEALER connects."""

    def __init__(self, host: Host, *, ssh: str = "ssh") -> None:
        assert not host.is_local
        self.host = host
        self._argv = host.ssh_argv(ssh, control_dir())
        base = os.environ.get("XDG_RUNTIME_DIR")
        if not base or not os.path.isdir(base):
            base = tempfile.gettempdir()
        # mkdtemp makes it 0700, with a name no other user can have taken
        self._dir = Path(tempfile.mkdtemp(prefix="scl-ssh-", dir=base))
        self.path = self._dir / "link.sock"
        self.state = LinkState.DOWN
        #: why the last ssh ended (a sentence), None while it has not failed
        self.problem: str | None = None
        #: ssh dials that ended without a link, since the last one that came up
        self.failures = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._proc: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._to_local = bytearray()
        self._to_ssh = bytearray()
        self._stderr = bytearray()
        self._backoff = FIRST_BACKOFF
        self._next_dial = 0.0
        self._thread = threading.Thread(target=self._run, name=f"ssh-link-{host.name}", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.path}"

    @property
    def ssh_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def wait_up(self, timeout: float) -> None:
        """Return once the link is up; raise ConnectionFailed with why it is not — at the
        first failed dial (nothing to wait for: claudectl says why at once) or after
        ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (state := self.state) is not LinkState.UP:
                if self.failures and self.problem:
                    raise ConnectionFailed(self.problem)
                left = deadline - time.monotonic()
                if left <= 0 or state is LinkState.CLOSED:
                    raise ConnectionFailed(self.problem or f"host {self.host.name} ({self.host.ssh}): no answer"
                                           f" through ssh within {timeout:g}s")
                self._changed.wait(left)

    def close(self) -> None:
        with self._lock:
            if self.state is LinkState.CLOSED:
                return
            self.state = LinkState.CLOSED
        self._wake()
        self._thread.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _closed(self) -> bool:
        return self.state is LinkState.CLOSED

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # --- the relay thread -------------------------------------------------------------

    def _set_state(self, state: LinkState, problem: str | None = None) -> None:
        with self._changed:
            if self.state is LinkState.CLOSED:
                return
            self.state = state
            if state is LinkState.UP:
                self.problem, self.failures, self._backoff = None, 0, FIRST_BACKOFF
            elif problem is not None:
                self.problem = problem
                self.failures += 1
            self._changed.notify_all()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while self.state is not LinkState.CLOSED:
                if self.state is LinkState.DOWN and time.monotonic() >= self._next_dial:
                    self._dial(sel)
                timeout = None
                if self.state is LinkState.DOWN:
                    timeout = max(0.0, self._next_dial - time.monotonic())
                self._update_interest(sel)
                for key, events in sel.select(timeout):
                    if self._closed():  # (close() came from another thread)
                        break
                    self._handle(sel, key.data, events)
        finally:
            self._teardown(sel, None)
            sel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _dial(self, sel: selectors.BaseSelector) -> None:
        self._stderr.clear()
        self._to_local.clear()
        self._to_ssh.clear()
        try:
            # an argv, no shell; its own session, so Ctrl-C at the terminal reaches only us
            proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self._fail(f"host {self.host.name}: cannot run {self._argv[0]!r}: {exc.strerror or exc}"
                       " (is OpenSSH's client installed and on PATH?)")
            return
        assert proc.stdin and proc.stdout and proc.stderr
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(pipe.fileno(), False)
        self._proc = proc
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "ssh_out")
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "ssh_err")
        self._set_state(LinkState.DIALING)

    def _fail(self, problem: str) -> None:
        self._next_dial = time.monotonic() + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        self._set_state(LinkState.DOWN, problem)

    def _update_interest(self, sel: selectors.BaseSelector) -> None:
        """Read a side only while the other has room; write a side while something waits."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            self._interest(sel, proc.stdin.fileno(), selectors.EVENT_WRITE if self._to_ssh else 0, "ssh_in")
        if proc is not None and proc.stdout is not None:
            self._interest(sel, proc.stdout.fileno(),
                           selectors.EVENT_READ if len(self._to_local) < MAX_PENDING else 0, "ssh_out")
        if self._conn is not None:
            events = (selectors.EVENT_READ if len(self._to_ssh) < MAX_PENDING else 0) | (
                selectors.EVENT_WRITE if self._to_local else 0)
            self._interest(sel, self._conn.fileno(), events, "conn")
        if self._listener is not None:
            self._interest(sel, self._listener.fileno(), 0 if self._conn is not None else selectors.EVENT_READ,
                           "listener")

    @staticmethod
    def _interest(sel: selectors.BaseSelector, fd: int, events: int, tag: str) -> None:
        try:
            key = sel.get_key(fd)
        except KeyError:
            if events:
                sel.register(fd, events, tag)
            return
        if not events:
            sel.unregister(fd)
        elif key.events != events:
            sel.modify(fd, events, tag)

    def _handle(self, sel: selectors.BaseSelector, tag: str, events: int) -> None:
        proc = self._proc
        if tag == "wake":
            os.read(self._wake_r, 4096)
        elif tag == "ssh_err" and proc is not None and proc.stderr is not None:
            data = _read(proc.stderr.fileno())
            if data:
                self._stderr += data
                del self._stderr[:-STDERR_TAIL]
            elif data is not None:
                sel.unregister(proc.stderr.fileno())
        elif tag == "ssh_out" and proc is not None and proc.stdout is not None:
            data = _read(proc.stdout.fileno())
            if data is None:
                return
            if not data:
                self._ssh_ended(sel)
            elif self.state is LinkState.DIALING and data[0] != ZMTP_SIGNATURE:
                # e.g. a shell startup file of the remote user that prints something
                shown = data[:80].decode(errors="replace")
                self._teardown(sel, f"host {self.host.name} ({self.host.ssh}): the remote side said {shown!r}"
                                    " instead of the supervisor's greeting (does a shell startup file there"
                                    " print to stdout?)")
            else:
                self._to_local += data
                if self.state is LinkState.DIALING:
                    self._listen(sel)
        elif tag == "ssh_in" and proc is not None and proc.stdin is not None:
            try:
                sent = os.write(proc.stdin.fileno(), self._to_ssh)
                del self._to_ssh[:sent]
            except BlockingIOError:
                pass
            except OSError:  # ssh is going away: its stdout will say so
                self._to_ssh.clear()
        elif tag == "listener" and self._listener is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                conn, _ = self._listener.accept()
                conn.setblocking(False)
                self._conn = conn
        elif tag == "conn" and self._conn is not None:
            if events & selectors.EVENT_WRITE and self._to_local:
                try:
                    sent = self._conn.send(self._to_local)
                    del self._to_local[:sent]
                except BlockingIOError:
                    pass
                except OSError:
                    self._local_closed(sel)
                    return
            if events & selectors.EVENT_READ:
                try:
                    data = self._conn.recv(CHUNK)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                if data:
                    self._to_ssh += data
                else:
                    self._local_closed(sel)

    def _listen(self, sel: selectors.BaseSelector) -> None:
        """The remote greeting arrived: the link is up, the socket appears."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        listener.listen(4)
        listener.setblocking(False)
        self._listener = listener
        self._set_state(LinkState.UP)

    def _local_closed(self, sel: selectors.BaseSelector) -> None:
        """The client's socket went away (closed, or ZeroMQ dropped it): that ZMTP
        session is over, and so is this ssh; dial again at once for the next one."""
        self._teardown(sel, None)
        self._next_dial = time.monotonic()
        self._set_state(LinkState.DOWN)

    def _ssh_ended(self, sel: selectors.BaseSelector) -> None:
        proc = self._proc
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(5)
            if proc.stderr is not None:  # what it said last, before its exit
                self._stderr += _drain(proc.stderr.fileno())
        was_up = self.state is LinkState.UP
        problem = explain(self.host, code, self._stderr.decode(errors="replace"))
        if was_up and code in (0, None) and not self._stderr.strip():
            problem = f"host {self.host.name} ({self.host.ssh}): the connection closed"
        self._teardown(sel, problem)

    def _teardown(self, sel: selectors.BaseSelector, problem: str | None) -> None:
        """Close ssh, the socket and the client's connection (ZeroMQ sees the supervisor
        go away). With a ``problem``, the next dial waits out the backoff."""
        for sock in (self._conn, self._listener):
            if sock is not None:
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(sock.fileno())
                sock.close()
        if self._listener is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._conn = self._listener = None
        proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(pipe.fileno())
                    with contextlib.suppress(OSError):
                        pipe.close()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._to_local.clear()
        self._to_ssh.clear()
        if problem is not None:
            self._fail(problem)


def stop_shared_connection(host: Host, *, ssh: str = "ssh", timeout: float = 10.0) -> bool:
    """Ask the shared ssh connection to ``host`` to end now (``ssh -O exit``) rather than
    after ``control_persist``: every link on it ends with it. True if there was one."""
    control = control_dir()
    argv = host.ssh_control_argv("exit", control, ssh) if control is not None else None
    if argv is None:
        return False
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              start_new_session=True)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _read(fd: int) -> bytes | None:
    """What ``fd`` has now: b"" at its end, None if nothing yet."""
    try:
        return os.read(fd, CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _drain(fd: int) -> bytes:
    """Whatever a pipe still holds, without waiting."""
    out = bytearray()
    while data := _read(fd):
        out += data
    return bytes(out)
