"""The supervisor daemon: client protocol, session dispatch, event log, keeper lifecycle.

One asyncio loop. Clients talk to a ROUTER socket (``control.sock``), keepers to another
(``keepers.sock``). Keepers are forked by the fork server, which was itself forked before
this process created any thread or ZeroMQ context.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import signal
import socket
import stat
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import setproctitle
import zmq
import zmq.asyncio

from protocol import (
    HARD_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ErrorCode,
    EventKind,
    FrameError,
    Op,
    Reason,
    Request,
    SessionState,
    ValidationError,
    control_endpoint,
    decode,
    encode,
    instance_id,
    request_id_of,
    validate_request,
)
from protocol._paths import CONTROL_SOCKET, KEEPER_SOCKET

from . import __version__, _forkserver
from ._claude import INSTANCE_ENV
from ._config import Config, find_claude
from ._errors import StartupRefused, StoreError
from ._keeper import STOP_GRACE
from ._os import System
from ._sockets import send_now
from ._store import DONE, FAILED, QUEUED, WRITTEN, Store

log = logging.getLogger("supervisord_claude")

DEFAULT_WINDOW = 256
BYE_GRACE = 1.0
MAX_WINDOW = 4096


def title_prefix(instance: str) -> str:
    return f"supervisord-claude[{instance}]:"


#: read-only ops and acks (so no delivered event is re-sent after a restart)
_ALLOWED_WHILE_STOPPING = frozenset(
    {Op.HELLO, Op.STATUS, Op.LIST, Op.PING, Op.ACK, Op.UNSUBSCRIBE, Op.KV_GET, Op.SHUTDOWN}
)


class OpError(Exception):
    """A request that is well-formed but cannot be carried out."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Live:
    """The supervisor's view of one session's keeper."""

    session: str
    keeper_pid: int | None = None
    ident: bytes | None = None
    claude_pid: int | None = None
    accepting: bool = True
    queue: collections.deque[int] = field(default_factory=collections.deque)
    forwarded: list[int] = field(default_factory=list)
    bye: tuple[str, str] | None = None
    archive_after: bool = False
    spawning: bool = False
    exit_status: int | None = None  # set when the fork server reported the exit first
    permissions: set[str] = field(default_factory=set)


@dataclass
class Subscription:
    sub_id: int
    ident: bytes
    session: str | None
    consumer: str | None
    window: int
    sent: int  # global id of the last event sent
    inflight: collections.deque[int] = field(default_factory=collections.deque)


# start-up helpers (run before any thread or ZeroMQ context exists) ---------------------


def prepare_runtime_dir(path: Path) -> None:
    """Create the runtime dir 0700, or refuse one that others could reach."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise StartupRefused(
            f"runtime dir {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise StartupRefused(
            f"runtime dir {path} is accessible to group/others (mode {stat.S_IMODE(st.st_mode):o});"
            f" run: chmod 700 {path}"
        )


def acquire_lock(path: Path) -> int:
    """Hold an exclusive flock on ``<runtime dir>/lock`` for the supervisor's lifetime."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartupRefused(
            f"another supervisor (pid {holder}) is already running on {path}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def reap_stale(system: System, instance: str) -> tuple[int, int]:
    """Kill what a previous supervisor of this runtime dir left: keepers (by title), then
    Claude children (by environment marker). Returns (keepers, claude processes)."""
    keepers = [pid for pid, _ in system.processes_titled(title_prefix(instance))]
    reaped = system.terminate(keepers, grace=STOP_GRACE + 1.0)
    leftovers = system.processes_with_env(INSTANCE_ENV, instance)
    orphans = system.terminate(leftovers, grace=2.0)
    log.info("Reaped %d stale keepers", reaped)
    if orphans:
        log.info("Reaped %d orphaned Claude processes", orphans)
    return reaped, orphans


class Supervisor:
    def __init__(
        self,
        config: Config,
        store: Store,
        system: System,
        forkserver: tuple[int, socket.socket],
    ) -> None:
        self.config = config
        self.store = store
        self.system = system
        self.instance = instance_id(config.runtime_dir)
        self.fs_pid, self.fs_sock = forkserver
        self.started_at = time.time()
        self.live: dict[str, Live] = {}
        self.by_pid: dict[int, Live] = {}
        self.subs: dict[int, Subscription] = {}
        self._origins: dict[int, str] = {}
        # events from keepers that the store could not take yet (disk full), in order
        self._unstored: collections.deque[tuple[str, EventKind, dict[str, Any]]] = collections.deque()
        self._store_retry_armed = False
        self._store_failing = False
        # random start: a client that outlived a previous supervisor never sees its old
        # subscription ids reused for new subscriptions
        self._sub_ids = secrets.randbelow(1 << 40)
        self._spawn_tokens = 0
        self._spawn_waiters: dict[int, asyncio.Future[int]] = {}
        self.stopping = False
        self.stopped = asyncio.Event()
        self._all_keepers_gone = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # setup ----------------------------------------------------------------------------

    def _bind(self, sock: zmq.asyncio.Socket, name: str) -> None:
        path = self.config.runtime_dir / name
        path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            sock.bind(f"ipc://{path}")
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.ctx = zmq.asyncio.Context()
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.control.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_FRAME_BYTES)
        self.control.setsockopt(zmq.LINGER, 500)
        # a reply is never dropped, however many events a client has not read yet; what a
        # subscriber can have in flight is bounded by its window (MAX_WINDOW) instead
        self.control.setsockopt(zmq.SNDHWM, 0)
        self.keepers = self.ctx.socket(zmq.ROUTER)
        self.keepers.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.keepers.setsockopt(zmq.LINGER, 500)
        # neither keepers' events nor messages forwarded to a keeper are ever dropped
        self.keepers.setsockopt(zmq.RCVHWM, 0)
        self.keepers.setsockopt(zmq.SNDHWM, 0)
        self._bind(self.keepers, KEEPER_SOCKET)
        self._bind(self.control, CONTROL_SOCKET)
        loop.add_reader(self.fs_sock.fileno(), self._on_forkserver)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown)
        self._task(self._control_loop())
        self._task(self._keeper_loop())
        self._task(self._prune_loop())
        # messages accepted before a restart are still owed, in the order they came
        for msg in self.store.messages(None, QUEUED):
            self.live.setdefault(msg.session, Live(msg.session)).queue.append(msg.id)
        for name in sorted(self.live):
            self._dispatch(name)
        log.info(
            "supervisor ready: instance %s, control %s, %d sessions",
            self.instance,
            control_endpoint(self.config.runtime_dir),
            len(self.store.list_sessions(True)),
        )
        await self.stopped.wait()

    def _task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task failed", exc_info=task.exception())

    # client protocol ------------------------------------------------------------------

    def _reply(self, ident: bytes, msg: dict[str, Any]) -> bool:
        try:
            send_now(self.control, [ident, encode(msg)])
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                self._drop_client(ident)
            else:
                log.warning("reply to a client dropped: %s", exc)
            return False
        return True

    def _error(self, ident: bytes, req_id: Any, code: ErrorCode, message: str) -> None:
        self._reply(
            ident,
            {"type": "reply", "id": req_id, "ok": False, "error": {"code": code.value, "message": message}},
        )

    async def _control_loop(self) -> None:
        while True:
            frames = await self.control.recv_multipart()
            ident = frames[0]
            try:
                self._on_client_frames(ident, frames[1:])
            except Exception:  # the daemon never dies on input (the request id is lost here)
                log.exception("unexpected error while handling a client request")
                self._error(ident, None, ErrorCode.INTERNAL, "internal error; see the supervisor log")

    def _on_client_frames(self, ident: bytes, frames: list[bytes]) -> None:
        if len(frames) != 1:
            log.warning("client sent %d frames in one message; expected 1", len(frames))
            self._error(ident, None, ErrorCode.BAD_FRAME, "a request is exactly one frame")
            return
        try:
            msg = decode(frames[0])
        except FrameError as exc:
            log.warning("bad frame from a client: %s", exc.message)
            self._error(ident, None, exc.code, exc.message)
            return
        req_id = request_id_of(msg)
        try:
            request = validate_request(msg)
            result = self._handle(ident, request)
        except ValidationError as exc:
            self._error(ident, req_id, exc.code, exc.message)
            return
        except OpError as exc:
            self._error(ident, req_id, exc.code, exc.message)
            return
        except StoreError as exc:
            log.error("store error: %s", exc)
            self._error(ident, req_id, ErrorCode.STORAGE, f"the supervisor's store failed: {exc}")
            return
        except Exception as exc:  # a bug or an OS error: answer this request, keep serving
            log.exception("unexpected error while handling %r", msg.get("op"))
            self._error(ident, req_id, ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}: {exc}); see the supervisor log")
            return
        self._reply(ident, {"type": "reply", "id": req_id, "ok": True, "result": result})
        if request.op is Op.SUBSCRIBE:
            self._pump(self.subs[result["sub"]])

    def _handle(self, ident: bytes, req: Request) -> dict[str, Any]:
        a = req.args
        if self.stopping and req.op not in _ALLOWED_WHILE_STOPPING:
            raise OpError(ErrorCode.SHUTTING_DOWN, "the supervisor is shutting down")
        handler = getattr(self, f"op_{req.op.value}")
        result: dict[str, Any] = handler(ident, **a)
        return result

    def _session(self, name: str, allow_archived: bool = False) -> Any:
        rec = self.store.get_session(name)
        if rec is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no session named '{name}'")
        if rec.state is SessionState.ARCHIVED and not allow_archived:
            raise OpError(ErrorCode.ARCHIVED, f"session '{name}' is archived")
        return rec

    def op_hello(self, ident: bytes, client: str | None = None) -> dict[str, Any]:
        return {
            "server": "supervisord-claude",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "instance": self.instance,
        }

    def op_status(self, ident: bytes, session: str | None = None) -> dict[str, Any]:
        if session is not None:
            rec = self._session(session, allow_archived=True)
            live = self.live.get(session)
            out: dict[str, Any] = rec.public(self.config.idle_timeout)
            out["keeper_pid"] = live.keeper_pid if live else None
            out["claude_pid"] = live.claude_pid if live else None
            out["queued"] = len(live.queue) + len(live.forwarded) if live else 0
            return out
        sessions = self.store.list_sessions(True)
        return {
            "pid": os.getpid(),
            "version": __version__,
            "instance": self.instance,
            "uptime": time.time() - self.started_at,
            "runtime_dir": str(self.config.runtime_dir),
            "state_dir": str(self.config.state_dir),
            "claude_bin": self.config.claude_bin,
            "default_idle_timeout": self.config.idle_timeout,
            "sessions": len([s for s in sessions if s.state is not SessionState.ARCHIVED]),
            "live": len(self.by_pid),
            "subscriptions": len(self.subs),
            "last_event_id": self.store.last_event_id(),
            "consumers": self.store.cursors(),
            "personas": sorted(self.config.personas),
        }

    def op_list(self, ident: bytes, all: bool = False) -> dict[str, Any]:
        recs = self.store.list_sessions(include_archived=all)
        return {"sessions": [r.public(self.config.idle_timeout) for r in recs]}

    def op_create(
        self,
        ident: bytes,
        session: str,
        model: str | None = None,
        cwd: str | None = None,
        persona: str | None = None,
    ) -> dict[str, Any]:
        if self.store.get_session(session) is not None:
            raise OpError(ErrorCode.EXISTS, f"a session named '{session}' already exists")
        if persona is not None and persona not in self.config.personas:
            known = ", ".join(sorted(self.config.personas)) or "none configured"
            raise OpError(ErrorCode.BAD_REQUEST, f"unknown persona '{persona}' (known: {known})")
        if cwd is not None and not os.path.isdir(cwd):
            raise OpError(ErrorCode.BAD_REQUEST, f"cwd {cwd} is not an existing directory")
        made: Path | None = None
        if cwd is None:
            path = self.config.base_cwd / session
            if not path.exists():
                made = path
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OpError(ErrorCode.BAD_REQUEST,
                              f"cannot create the session directory {path}: {exc.strerror or exc}") from None
            cwd = str(path)
        if model is None and persona is not None:
            model = self.config.personas[persona].model
        model = model or self.config.model
        try:
            rec = self.store.create_session(session, str(uuid.uuid4()), cwd, model, persona)
        except BaseException:
            if made is not None:  # a failed create leaves nothing behind
                with contextlib.suppress(OSError):
                    made.rmdir()
            raise
        self._record(
            session,
            EventKind.STATE,
            {"state": SessionState.SUSPENDED.value, "reason": Reason.REQUESTED.value, "detail": "created"},
        )
        return rec.public(self.config.idle_timeout)

    def op_send(
        self,
        ident: bytes,
        session: str,
        text: str,
        attachments: list[str] | None = None,
        origin: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        rec = self._session(session)
        files = attachments or []
        for path in files:
            if not os.path.isfile(path):
                raise OpError(ErrorCode.BAD_REQUEST, f"attachment {path} is not a readable file")
        if not text.strip() and not files:
            raise OpError(ErrorCode.BAD_REQUEST, "a message needs text or an attachment")
        message_id, created = self.store.add_message(session, text, files, origin, idempotency_key)
        if created:
            live = self.live.setdefault(session, Live(session))
            live.queue.append(message_id)
            self._dispatch(session)
        return {
            "message_id": message_id,
            "seq": rec.last_seq,
            "state": rec.state.value,
            "duplicate": not created,
        }

    def op_interrupt(self, ident: bytes, session: str) -> dict[str, Any]:
        rec = self._session(session)
        live = self.live.get(session)
        if live is None or live.ident is None or rec.state is not SessionState.BUSY:
            raise OpError(ErrorCode.NOT_BUSY, f"session '{session}' is not answering anything")
        self._to_keeper(live, "interrupt")
        return {}

    def op_suspend(self, ident: bytes, session: str) -> dict[str, Any]:
        rec = self._session(session)
        live = self.live.get(session)
        if live is None or live.keeper_pid is None:
            return {"state": rec.state.value}
        if rec.state is SessionState.BUSY or live.queue or live.forwarded:
            raise OpError(ErrorCode.BUSY, f"session '{session}' is busy; interrupt it first")
        if live.ident is None:
            raise OpError(ErrorCode.BUSY, f"session '{session}' is still starting; try again")
        self._to_keeper(live, "suspend", reason=Reason.REQUESTED.value)
        return {"state": SessionState.SUSPENDING.value}

    def op_set_timeout(self, ident: bytes, session: str, minutes: int) -> dict[str, Any]:
        self._session(session)
        seconds = minutes * 60.0
        self._record(session, EventKind.SETTINGS, {"idle_timeout": seconds})
        live = self.live.get(session)
        if live is not None:
            self._to_keeper(live, "timeout", seconds=seconds)
        return {"idle_timeout": seconds}

    def op_set_model(self, ident: bytes, session: str, model: str) -> dict[str, Any]:
        self._session(session)
        self._record(session, EventKind.SETTINGS, {"model": model})
        live = self.live.get(session)
        if live is not None:
            self._to_keeper(live, "model", model=model)
        return {"model": model}

    def op_archive(self, ident: bytes, session: str) -> dict[str, Any]:
        self._session(session)
        live = self.live.get(session)
        if live is not None and live.keeper_pid is not None:
            live.archive_after = True
            self._to_keeper(live, "stop", reason=Reason.REQUESTED.value)
            return {"state": SessionState.SUSPENDING.value}
        self._archive(session)
        return {"state": SessionState.ARCHIVED.value}

    def _archive(self, session: str) -> None:
        live = self.live.pop(session, None)
        if live is not None:
            self._fail_messages(session, list(live.forwarded) + list(live.queue), f"session '{session}' was archived")
        self._record(session, EventKind.STATE, {"state": SessionState.ARCHIVED.value, "reason": Reason.REQUESTED.value})

    def op_subscribe(
        self,
        ident: bytes,
        session: str | None = None,
        after: int | None = None,
        consumer: str | None = None,
        window: int | None = None,
    ) -> dict[str, Any]:
        if session is not None:
            self._session(session, allow_archived=True)
            start = self.store.event_id_at_seq(session, after) if after is not None else None
        else:
            start = after
        if start is None:
            start = self.store.get_cursor(consumer) if consumer else self.store.last_event_id()
        self._sub_ids += 1
        sub = Subscription(
            sub_id=self._sub_ids,
            ident=ident,
            session=session,
            consumer=consumer,
            window=min(window or DEFAULT_WINDOW, MAX_WINDOW),
            sent=start,
        )
        self.subs[sub.sub_id] = sub
        return {"sub": sub.sub_id, "position": start}

    def _own_sub(self, ident: bytes, sub_id: int) -> Subscription:
        sub = self.subs.get(sub_id)
        if sub is None or sub.ident != ident:
            raise OpError(ErrorCode.NO_SUBSCRIPTION, f"no subscription {sub_id} on this connection")
        return sub

    def op_ack(self, ident: bytes, sub: int, upto: int) -> dict[str, Any]:
        subscription = self._own_sub(ident, sub)
        while subscription.inflight and subscription.inflight[0] <= upto:
            subscription.inflight.popleft()
        if subscription.consumer:
            self.store.set_cursor(subscription.consumer, min(upto, subscription.sent))
        self._pump(subscription)
        return {}

    def op_unsubscribe(self, ident: bytes, sub: int) -> dict[str, Any]:
        self._own_sub(ident, sub)
        del self.subs[sub]
        return {}

    def op_ping(self, ident: bytes, sub: int | None = None) -> dict[str, Any]:
        if sub is not None:
            self._pump(self._own_sub(ident, sub))
        return {"time": time.time()}

    def op_permit(
        self, ident: bytes, session: str, request_id: str, allow: bool, message: str | None = None
    ) -> dict[str, Any]:
        self._session(session)
        live = self.live.get(session)
        if live is None or request_id not in live.permissions:
            raise OpError(ErrorCode.NOT_FOUND, f"no pending permission request {request_id} in '{session}'")
        live.permissions.discard(request_id)
        self._to_keeper(live, "permit", request_id=request_id, allow=allow, message=message)
        return {"allow": allow}

    def op_kv_get(self, ident: bytes, key: str) -> dict[str, Any]:
        return {"value": self.store.kv_get(key)}

    def op_kv_set(self, ident: bytes, key: str, value: Any) -> dict[str, Any]:
        self.store.kv_set(key, value)
        return {}

    def op_shutdown(self, ident: bytes) -> dict[str, Any]:
        asyncio.get_running_loop().call_soon(self.request_shutdown)
        return {}

    # events ---------------------------------------------------------------------------

    def _drop_client(self, ident: bytes) -> None:
        for sub_id in [s.sub_id for s in self.subs.values() if s.ident == ident]:
            del self.subs[sub_id]

    def _publish(self, event: dict[str, Any]) -> None:
        for sub in list(self.subs.values()):
            if sub.session is None or sub.session == event["session"]:
                self._pump(sub)

    def _pump(self, sub: Subscription) -> None:
        """Send stored events after ``sub.sent`` while the subscriber's window has room."""
        while len(sub.inflight) < sub.window and sub.sub_id in self.subs:
            batch = self.store.events_after(sub.sent, sub.session, limit=sub.window - len(sub.inflight))
            if not batch:
                return
            for event in batch:
                frame = encode({"type": "event", "sub": sub.sub_id, "event": event})
                try:
                    send_now(self.control, [sub.ident, frame])
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EHOSTUNREACH:
                        self._drop_client(sub.ident)
                    return  # EAGAIN: the client is slow; the next ack or ping resumes
                sub.sent = event["id"]
                sub.inflight.append(event["id"])

    def _record(self, session: str, kind: EventKind, body: dict[str, Any]) -> None:
        """Store an event (with the session and message row changes it implies) and
        publish it. Every event, from a keeper or the supervisor itself, goes this way.

        If the store fails (disk full), the event waits in memory, in order with every
        later one, and is stored and published as soon as the store works again."""
        message_id = body.get("message_id")
        if isinstance(message_id, int) and "origin" not in body:
            origin = self._origin(message_id)
            if origin is not None:
                body = {**body, "origin": origin}
        self._unstored.append((session, kind, body))
        self._store_pending()

    def _store_pending(self) -> None:
        while self._unstored:
            session, kind, body = self._unstored[0]
            message_id = body.get("message_id")
            status = {EventKind.USER: WRITTEN, EventKind.RESULT: DONE, EventKind.MESSAGE_FAILED: FAILED}.get(kind)
            try:
                event = self.store.append_event(
                    session,
                    kind,
                    body,
                    self._session_updates(session, kind, body),
                    message_status=(message_id, status) if isinstance(message_id, int) and status else None,
                )
            except StoreError as exc:
                if not self._store_failing:
                    self._store_failing = True
                    log.error("cannot store events (%s); keeping them in memory and retrying", exc)
                if not self._store_retry_armed:
                    self._store_retry_armed = True
                    asyncio.get_running_loop().call_later(1.0, self._retry_store)
                return
            self._unstored.popleft()
            if self._store_failing and not self._unstored:
                self._store_failing = False
                log.info("the store works again; every waiting event is stored and published")
            if isinstance(message_id, int) and status:
                live = self.live.get(session)
                if live is not None and message_id in live.forwarded:
                    live.forwarded.remove(message_id)
            self._publish(event)

    def _retry_store(self) -> None:
        self._store_retry_armed = False
        self._store_pending()

    def _session_updates(self, session: str, kind: EventKind, body: dict[str, Any]) -> dict[str, Any]:
        updates: dict[str, Any] = {}
        now = time.time()
        if kind is EventKind.STATE:
            state = SessionState(body["state"])
            updates["state"] = state
            if state is SessionState.SUSPENDED or state is SessionState.FAILED:
                updates["suspended_at"] = now
        elif kind is EventKind.RESULT:
            rec = self.store.get_session(session)
            delta = body.get("cost_delta") or 0.0
            updates["cost_usd"] = (rec.cost_usd if rec else 0.0) + float(delta)
            if isinstance(body.get("cost_usd"), (int, float)):
                updates["claude_cost"] = float(body["cost_usd"])
            updates["last_active"] = now
        elif kind is EventKind.USER:
            updates["last_active"] = now
        elif kind is EventKind.SETTINGS:
            updates.update({k: body[k] for k in ("model", "idle_timeout") if k in body})
        return updates

    def _origin(self, message_id: int) -> str | None:
        """Who sent a message (e.g. a Telegram chat), so every event of its turn says so."""
        cached = self._origins.get(message_id)
        if cached is None:
            msg = self.store.get_message(message_id)
            cached = (msg.origin if msg else None) or ""
            if len(self._origins) > 10_000:
                self._origins.clear()
            self._origins[message_id] = cached
        return cached or None

    def _fail_messages(self, session: str, ids: list[int], reason: str) -> None:
        for message_id in ids:
            msg = self.store.get_message(message_id)
            if msg is not None and msg.status in (QUEUED, WRITTEN):
                self._record(session, EventKind.MESSAGE_FAILED, {"message_id": message_id, "reason": reason})

    # keepers --------------------------------------------------------------------------

    def _to_keeper(self, live: Live, t: str, **fields: Any) -> bool:
        if live.ident is None:
            return False
        try:
            send_now(self.keepers, [live.ident, msgpack.packb({"t": t, **fields})])
        except zmq.ZMQError as exc:
            log.warning("cannot reach keeper of %s: %s", live.session, exc)
            return False
        return True

    def _dispatch(self, session: str) -> None:
        """Move queued messages towards Claude: to the live keeper, or start one."""
        live = self.live.get(session)
        if live is None or not live.queue or self.stopping:
            return
        if live.keeper_pid is None and live.ident is None and not live.forwarded and live.bye is None:
            if live.spawning:
                return
            live.spawning = True  # now, not when the task first runs: a second send may come first
            self._task(self._spawn(live))
            return
        if live.ident is not None and live.accepting and live.bye is None:
            while live.queue:
                message_id = live.queue.popleft()
                msg = self.store.get_message(message_id)
                if msg is None or msg.status != QUEUED:
                    continue
                live.forwarded.append(message_id)
                self._to_keeper(live, "send", id=msg.id, text=msg.text, attachments=msg.attachments)

    async def _spawn(self, live: Live) -> None:
        rec = self.store.get_session(live.session)
        if rec is None or rec.state is SessionState.ARCHIVED:
            live.spawning = False
            self.live.pop(live.session, None)
            self._fail_messages(live.session, list(live.queue), f"session '{live.session}' was archived")
            return
        messages = []
        while live.queue:
            msg = self.store.get_message(live.queue.popleft())
            if msg is not None and msg.status == QUEUED:
                messages.append({"id": msg.id, "text": msg.text, "attachments": msg.attachments})
                live.forwarded.append(msg.id)
        persona = self.config.personas.get(rec.persona) if rec.persona else None
        spec = {
            "session": rec.name,
            "instance": self.instance,
            "runtime_dir": str(self.config.runtime_dir),
            "claude_bin": self.config.claude_bin,
            "cwd": rec.cwd,
            "session_id": rec.session_id,
            "started": rec.started,
            "resume": rec.started,
            "model": rec.model,
            "system_prompt": persona.prompt if persona else None,
            "extra_args": list(self.config.claude_args),
            "permission_prompts": self.config.permission_prompts,
            "idle_timeout": rec.idle_timeout or self.config.idle_timeout,
            "idle_for": (time.time() - rec.suspended_at) if rec.suspended_at else None,
            "cost_baseline": rec.claude_cost,
            "messages": messages,
        }
        self._spawn_tokens += 1
        token = self._spawn_tokens
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawn_waiters[token] = fut
        self.fs_sock.send(msgpack.packb({"op": "spawn", "token": token, "spec": spec}))
        try:
            pid = await fut
        except OSError as exc:
            log.error("could not fork a keeper for %s: %s", live.session, exc)
            live.spawning = False
            ids = list(live.forwarded)
            live.forwarded.clear()
            if self.live.get(live.session) is live and not live.queue:
                del self.live[live.session]
            self._fail_messages(live.session, ids, f"could not start a session keeper: {exc}")
            return
        live.keeper_pid = pid
        self.by_pid[pid] = live
        live.spawning = False
        log.info("keeper for %s started (pid %d)", live.session, pid)

    def _on_forkserver(self) -> None:
        try:
            data = self.fs_sock.recv(1 << 16)
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(self.fs_sock.fileno())
            if not self.stopping:
                log.error("the fork server died; shutting down")
                self.request_shutdown()
            return
        msg = msgpack.unpackb(data)
        if msg["op"] == "spawned":
            fut = self._spawn_waiters.pop(msg["token"], None)
            if fut is not None and not fut.done():
                fut.set_result(msg["pid"])
        elif msg["op"] == "spawn_failed":
            fut = self._spawn_waiters.pop(msg["token"], None)
            if fut is not None and not fut.done():
                fut.set_exception(OSError(msg.get("error", "fork failed")))
        elif msg["op"] == "exited":
            pid, status = int(msg["pid"]), int(msg["status"])
            live = self.by_pid.get(pid)
            if live is not None and live.bye is None and live.ident is not None:
                # its last messages (events, bye) come over the keeper socket, which this
                # report can overtake: wait for the bye a moment before calling it killed
                live.exit_status = status
                asyncio.get_running_loop().call_later(BYE_GRACE, self._on_keeper_exit, pid, status)
                return
            self._on_keeper_exit(pid, status)

    def _on_keeper_exit(self, pid: int, status: int) -> None:
        live = self.by_pid.pop(pid, None)
        if live is None:
            return
        log.info("keeper for %s (pid %d) exited with status %d", live.session, pid, status)
        if live.claude_pid is not None and live.bye is None:
            # a keeper that was killed cannot stop its Claude; do it for it
            self.system.killpg(live.claude_pid, signal.SIGKILL)
        leftover = list(live.forwarded) + list(live.queue)
        live.forwarded.clear()
        live.queue.clear()
        session = live.session
        if live.bye is None:
            written = [m.id for m in self.store.messages(session, WRITTEN)]
            self._fail_messages(session, written, f"the session keeper died (exit status {status}) while Claude was answering")
            self._record(session, EventKind.STATE, {"state": SessionState.FAILED.value, "reason": Reason.KILLED.value})
            if live.ident is None:
                self._fail_messages(session, leftover, f"the session keeper died (exit status {status}) before starting Claude")
                leftover = []
        if self.live.get(session) is live:
            del self.live[session]
        if live.archive_after:
            self._fail_messages(session, leftover, f"session '{session}' was archived")
            self._archive(session)
            return
        if leftover and not self.stopping:
            replacement = self.live.setdefault(session, Live(session))
            replacement.queue.extend(m for m in sorted(leftover) if m not in replacement.queue)
            self._dispatch(session)
        if self.stopping and not self.by_pid:
            self._all_keepers_gone.set()

    async def _keeper_loop(self) -> None:
        while True:
            frames = await self.keepers.recv_multipart()
            if len(frames) != 2:
                log.warning("keeper socket: unexpected %d-frame message dropped", len(frames))
                continue
            ident, data = frames
            try:
                msg = msgpack.unpackb(data, raw=False)
                self._on_keeper_message(ident, msg)
            except Exception:
                log.exception("keeper socket: bad message dropped")

    def _live_by_ident(self, ident: bytes) -> Live | None:
        # a keeper's routing id is "<session>:<pid>" (set by the keeper)
        try:
            pid = int(ident.rsplit(b":", 1)[1])
        except (IndexError, ValueError):
            return None
        live = self.by_pid.get(pid)
        return live if live is not None and live.ident == ident else None

    def _on_keeper_message(self, ident: bytes, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        if t == "hello":
            live = self.by_pid.get(int(msg["pid"]))
            if live is None:
                # the hello can overtake the fork server's "spawned" report
                session = ident.decode().rsplit(":", 1)[0] if b":" in ident else None
                live = self.live.get(session) if session else None
                if live is None:
                    log.warning("hello from an unknown keeper pid %s", msg.get("pid"))
                    return
                live.keeper_pid = int(msg["pid"])
                self.by_pid[live.keeper_pid] = live
            live.ident = ident
            self._dispatch(live.session)
            return
        live = self._live_by_ident(ident)
        if live is None:
            log.warning("message %r from an unknown keeper dropped", t)
            return
        if t == "event":
            kind = EventKind(msg["kind"])
            if kind is EventKind.PERMISSION_REQUEST:
                live.permissions.add(str(msg["body"]["request_id"]))
            elif kind is EventKind.PERMISSION_RESOLVED:
                live.permissions.discard(str(msg["body"]["request_id"]))
            self._record(live.session, kind, dict(msg["body"]))
            if msg["body"].get("state") == SessionState.SUSPENDING.value:
                live.accepting = False
        elif t == "claude":
            live.claude_pid = int(msg["pid"])
        elif t == "started":
            self.store.update_session(live.session, started=1)
        elif t == "rejected":
            ids = [int(i) for i in msg["ids"]]
            live.accepting = False
            live.forwarded = [i for i in live.forwarded if i not in ids]
            live.queue.extendleft(reversed(ids))
        elif t == "bye":
            live.bye = (str(msg["state"]), str(msg["reason"]))
            if live.exit_status is not None and live.keeper_pid is not None:
                self._on_keeper_exit(live.keeper_pid, live.exit_status)

    async def _prune_loop(self) -> None:
        """Keep the event log bounded: drop what is older than the retention period and
        acked by every named consumer, at start and then hourly."""
        while True:
            cutoff = time.time() - self.config.event_retention_days * 86400
            try:
                pruned = self.store.prune(cutoff)
            except StoreError as exc:
                log.warning("could not prune old events: %s", exc)
            else:
                if pruned:
                    log.info("pruned %d events older than %g days", pruned, self.config.event_retention_days)
            await asyncio.sleep(3600)

    # shutdown -------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._task(self._shutdown())

    async def _shutdown(self) -> None:
        log.info("shutting down: stopping %d keepers", len(self.by_pid))
        for live in list(self.live.values()):
            if live.keeper_pid is not None:
                self._to_keeper(live, "stop", reason=Reason.SHUTDOWN.value)
        if self.by_pid:
            try:
                await asyncio.wait_for(self._all_keepers_gone.wait(), STOP_GRACE + 3.0)
            except TimeoutError:
                log.warning("keepers still running after %.0fs; killing them", STOP_GRACE + 3.0)
                for pid, live in list(self.by_pid.items()):
                    self.system.kill(pid, signal.SIGKILL)
                    if live.claude_pid:
                        self.system.killpg(live.claude_pid, signal.SIGKILL)
                await asyncio.sleep(0.2)
        self._store_pending()
        if self._unstored:
            log.error("%d events could not be stored (disk full?) and are lost", len(self._unstored))
        for rec in self.store.list_sessions(True):
            if rec.state.live:
                self.store.update_session(rec.name, state=SessionState.SUSPENDED, suspended_at=time.time())
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.stopped.set()

    def close(self) -> None:
        for name in (CONTROL_SOCKET, KEEPER_SOCKET):
            (self.config.runtime_dir / name).unlink(missing_ok=True)
        self.control.close(0)
        self.keepers.close(0)
        self.ctx.term()


def recover_store(store: Store, publish: Any = None) -> None:
    """After a restart nothing runs: every session is suspended (or failed, archived), and
    every message Claude was answering when the old supervisor died is reported failed."""
    now = time.time()
    for rec in store.list_sessions(True):
        if rec.state.live:
            store.append_event(
                rec.name,
                EventKind.STATE,
                {"state": SessionState.SUSPENDED.value, "reason": Reason.STARTUP.value},
                {"state": SessionState.SUSPENDED, "suspended_at": now},
            )
    for msg in store.messages(None, WRITTEN):
        body: dict[str, Any] = {
            "message_id": msg.id,
            "reason": "the supervisor stopped while Claude was answering; send it again",
        }
        if msg.origin:  # a front end answers its sender by it
            body["origin"] = msg.origin
        store.append_event(msg.session, EventKind.MESSAGE_FAILED, body, message_status=(msg.id, FAILED))


def run(config: Config) -> int:
    """Start-up order matters: lock, reap, fork server (no threads yet), then the loop."""
    config = _with_claude(config)
    prepare_runtime_dir(config.runtime_dir)
    lock_fd = acquire_lock(config.runtime_dir)
    instance = instance_id(config.runtime_dir)
    setproctitle.setproctitle(f"{title_prefix(instance)} supervisor")
    system = System()
    reap_stale(system, instance)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    death_r, death_w = os.pipe()
    fs_pid, fs_sock = _forkserver.start(
        f"{title_prefix(instance)} forkserver", death_r, close_fds=(lock_fd, death_w)
    )
    os.close(death_r)
    fs_sock.setblocking(False)
    store = Store(config.db_path)
    recover_store(store)
    supervisor = Supervisor(config, store, system, (fs_pid, fs_sock))
    try:
        asyncio.run(supervisor.serve())
    finally:
        if hasattr(supervisor, "ctx"):
            supervisor.close()
        store.close()
        os.close(death_w)  # the fork server sees EOF and exits
        try:
            os.waitpid(fs_pid, 0)
        except ChildProcessError:
            pass
        os.close(lock_fd)
    log.info("supervisor stopped")
    return 0


def _with_claude(config: Config) -> Config:
    from dataclasses import replace

    return replace(config, claude_bin=find_claude(config.claude_bin))
