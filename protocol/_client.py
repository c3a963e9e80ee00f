"""The blocking Python client of the supervisor, ``Client``, and what both clients share
(``AsyncClient``, in ``_aclient``, is imported only by those who use it: a short command
like ``claudectl status`` does not pay for asyncio).

Both use one DEALER socket: replies are matched to requests by ``id``; events pushed for
a subscription are queued until read. A DEALER never deadlocks on a lost peer the way a
bare REQ socket does: a request that gets no reply times out with ``ConnectionFailed``.
"""

from __future__ import annotations

import collections
import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from ._codec import decode, encode
from ._errors import ConnectionFailed, FrameError, RemoteError, VersionMismatch
from ._hosts import CONNECT_TIMEOUT, LOCAL_HOST, Host

if TYPE_CHECKING:
    from . import _ssh
from ._messages import HARD_MAX_FRAME_BYTES, ErrorCode, Op
from ._methods import BlockingOps
from ._paths import control_endpoint, default_runtime_dir, running_problem

Event = dict[str, Any]


def _socket_path(runtime_dir: Path | str | None) -> Path:
    return Path(runtime_dir) if runtime_dir is not None else default_runtime_dir()


def check_running(runtime_dir: Path) -> None:
    """ConnectionFailed unless our own supervisor runs on ``runtime_dir`` (``_paths.running_problem``)."""
    problem = running_problem(runtime_dir)
    if problem is not None:
        raise ConnectionFailed(problem)


def _configure(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_FRAME_BYTES)


def _result_of(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        result = reply.get("result")
        return result if isinstance(result, dict) else {}
    error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    assert isinstance(error, dict)
    raise RemoteError(str(error.get("code", "unknown")), str(error.get("message", "")))


class Client(BlockingOps):
    """A blocking client; fine for scripts and ``claudectl``. Not thread-safe. Its
    methods are the ops (``client.send(session, text)``: ``_methods``); ``request`` is
    the generic call.

    ``host``: a machine reached through ssh (``_ssh.SshLink``); its protocol version is
    checked at connect. Without it, this machine's supervisor on ``runtime_dir``."""

    def __init__(self, runtime_dir: Path | str | None = None, *, timeout: float = 10.0,
                 host: Host | None = None) -> None:
        self.host = host or LOCAL_HOST
        self.runtime_dir = _socket_path(runtime_dir)
        self._link: _ssh.SshLink | None = None
        if self.host.is_local:
            check_running(self.runtime_dir)
            endpoint = control_endpoint(self.runtime_dir)
        else:
            from . import _ssh  # (only for another host: a local command does not load it)

            self._link = _ssh.SshLink(self.host)
            try:
                self._link.wait_up(max(timeout, CONNECT_TIMEOUT + 5))
            except ConnectionFailed:
                self._link.close()
                raise
            endpoint = self._link.endpoint
        self.timeout = timeout
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock: zmq.Socket[Any] = self._ctx.socket(zmq.DEALER)
        _configure(self._sock)
        self._sock.connect(endpoint)
        self._ids = itertools.count(1)
        self._events: collections.deque[Event] = collections.deque()
        if self._link is not None:
            try:
                self._check_version()
            except ConnectionFailed:
                self.close()
                raise

    def _check_version(self) -> None:
        from ._hostproblems import bad_version_problem, version_problem

        try:
            hello = self.request(Op.HELLO, client="protocol.Client")
        except RemoteError as exc:
            if exc.code != ErrorCode.BAD_VERSION:
                raise
            raise VersionMismatch(bad_version_problem(self.host, exc)) from None
        problem = version_problem(self.host, hello)
        if problem is not None:
            raise VersionMismatch(problem)

    def close(self) -> None:
        if self._link is not None:  # first: a closed socket would make it dial again
            self._link.close()
        self._sock.close(0)
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unanswered(self, what: str) -> ConnectionFailed:
        """No reply: for a remote host, why its link is down if it is."""
        if self._link is not None and self._link.problem:
            return ConnectionFailed(f"{what}: {self._link.problem}")
        return ConnectionFailed(what)

    def _recv(self, timeout: float | None = None) -> dict[str, Any]:
        """Receive and decode the next frame, whatever it is."""
        wait = self.timeout if timeout is None else timeout
        if not self._sock.poll(int(wait * 1000)):
            raise self._unanswered(f"no answer from the supervisor within {wait:.1f}s")
        return decode(self._sock.recv(), HARD_MAX_FRAME_BYTES)

    def request(self, op: Op | str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one request and return its ``result``; raise ``RemoteError`` on an error reply.
        (The generic call: an op's own method, e.g. ``send``, is typed.)"""
        req_id = next(self._ids)
        op_name = op.value if isinstance(op, Op) else op
        self._sock.send(encode({"id": req_id, "op": op_name, **args}))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unanswered(f"no reply to '{op_name}' from the supervisor in time")
            msg = self._recv(remaining)
            if msg.get("type") in ("event", "live", "lives"):
                self._events.append(msg)
            elif msg.get("id") == req_id:
                return _result_of(msg)

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next pushed event frame (``{"sub", "event"}``; ``{"sub", "events"}`` of live text
        asked for with ``live_every``), or None after ``timeout``."""
        if self._events:
            return self._events.popleft()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self._sock.poll(int(remaining * 1000)):
                return None
            try:
                msg = decode(self._sock.recv(), HARD_MAX_FRAME_BYTES)
            except FrameError:
                continue
            if msg.get("type") in ("event", "live", "lives"):
                return msg
