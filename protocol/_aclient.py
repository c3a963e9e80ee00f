"""``AsyncClient``: the asyncio client of the supervisor (concurrent requests, any number
of subscriptions). Shares its socket set-up and checks with ``_client``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import operator
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ._client import Event, _configure, _result_of, _socket_path, check_running
from ._codec import decode, encode
from ._errors import ConnectionFailed, FrameError, RemoteError, VersionMismatch
from ._hostproblems import bad_version_problem, version_problem
from ._hosts import CONNECT_TIMEOUT, LOCAL_HOST, Host
from ._messages import HARD_MAX_FRAME_BYTES, ErrorCode, Op
from ._methods import AsyncOps
from ._paths import control_endpoint
from ._ssh import LinkState, SshLink
from ._vocabulary import V1_AFTER

#: frames taken from the socket in one go before other tasks run
READ_AT_ONCE = 256


class Subscription:
    """Events of one subscription, in order, each once (duplicates after a re-subscribe
    are dropped by event id). ``ack`` records that an event has been handled."""

    def __init__(self, client: AsyncClient, args: dict[str, Any]) -> None:
        self._client = client
        self._args = args
        self.sub_id = 0
        self.last_id: int | None = args.get("after") if "session" not in args else None
        self.last_seq: int | None = None
        #: events received and not yet taken by ``next`` (a deque and a waiter, not an
        #: asyncio.Queue: a burst puts and takes thousands a second, ~0.8 µs each there)
        self._events: collections.deque[Event] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []

    async def start(self) -> dict[str, Any]:
        args = dict(self._args)
        if self.last_id is not None and "session" not in args:
            args["after"] = self.last_id
        result = await self._client.request(Op.SUBSCRIBE, **args)
        self.sub_id = int(result["sub"])
        self._client._subs[self.sub_id] = self
        # events can overtake the reader's hand-over of the reply; they wait here
        for event in self._client._early.pop(self.sub_id, []):
            if self._accept(event):
                self._put(event)
        return result

    def _put(self, event: Event) -> None:
        self._events.append(event)
        self._wake()

    def _put_all(self, events: list[Event]) -> None:
        self._events.extend(events)
        self._wake()

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def ack(self, event_id: int) -> None:
        await self._client.request(Op.ACK, sub=self.sub_id, upto=event_id)

    def discard(self) -> None:
        """Forget this subscription locally (e.g. after its supervisor went away)."""
        if self._client._subs.get(self.sub_id) is self:
            del self._client._subs[self.sub_id]

    async def close(self) -> None:
        self.discard()
        try:
            await self._client.request(Op.UNSUBSCRIBE, sub=self.sub_id, timeout=2.0)
        except (RemoteError, ConnectionFailed):
            pass

    async def _resubscribe(self) -> None:
        self.discard()
        # per-session positions are sequence numbers; continue after the last one seen
        if "session" in self._args and self.last_seq is not None:
            self._args["after"] = self.last_seq
        await self.start()

    def _accept(self, event: Event) -> bool:
        event_id = event.get("id")
        if isinstance(event_id, int) and self.last_id is not None and event_id <= self.last_id:
            return False
        if isinstance(event_id, int):
            self.last_id = event_id
        if isinstance(event.get("seq"), int):
            self.last_seq = event["seq"]
        return True

    def _accept_all(self, events: list[Any]) -> bool:
        """``_accept`` of a frame's events at once, in one pass of each check over the
        frame (a burst's frames hold hundreds): when every event is a map with an int id,
        the ids increasing and after the last one taken, and the last event has an int
        seq — what a supervisor sends — they are all taken (True). Otherwise nothing is
        changed (False): each goes through ``_accept`` on its own."""
        if not events or set(map(type, events)) != {dict}:
            return False
        found: list[Any] = list(map(dict.get, events, itertools.repeat("id")))
        seq = events[-1].get("seq")
        if set(map(type, found)) != {int} or type(seq) is not int:
            return False
        ids: list[int] = found
        if (self.last_id is not None and ids[0] <= self.last_id) \
                or not all(map(operator.lt, ids, itertools.islice(ids, 1, None))):
            return False
        self.last_id, self.last_seq = ids[-1], seq
        return True

    async def next(self, timeout: float | None = None, keepalive: float = 3.0) -> Event | None:
        """The next event, or None after ``timeout``. While waiting it pings the
        supervisor; if the supervisor restarted, it subscribes again where it left off."""
        if self._events:  # (no timer, no task: a burst is read at the rate it came)
            return self._events.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = keepalive
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            woken = False
            try:
                await asyncio.wait_for(waiter, wait)
                woken = True
            except TimeoutError:
                pass
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._events:
                return self._events.popleft()
            if woken:
                continue  # (another reader of this subscription took it)
            try:
                await self._client.ping(sub=self.sub_id, timeout=keepalive)
            except RemoteError:
                await self._resubscribe()
            except ConnectionFailed:
                continue

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self.next()
            if event is not None:
                yield event


class AsyncClient(AsyncOps):
    """An asyncio client: concurrent requests and any number of subscriptions. Its
    methods are the ops (``await client.send(session, text)``: ``_methods``);
    ``request`` is the generic call."""

    def __init__(self, runtime_dir: Path | str | None = None, *, timeout: float = 10.0,
                 host: Host | None = None) -> None:
        #: ``host``: a machine reached through ssh (its link is redialled while it is
        #: down; its protocol version is checked at connect); else this machine's
        self.host = host or LOCAL_HOST
        self._link: SshLink | None = None
        self.runtime_dir = _socket_path(runtime_dir)
        self.timeout = timeout
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._subs: dict[int, Subscription] = {}
        self._reader: asyncio.Task[None] | None = None
        self._early: dict[int, list[Event]] = {}
        #: the supervisor's end of the connection: None until it first connects, then
        #: whether it is there (from the socket's monitor)
        self._peer_up: bool | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        #: what ``subscribe`` makes (a subclass may, e.g., rename the events' sessions)
        self.subscription_class: type[Subscription] = Subscription

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def reachable(self) -> bool | None:
        """Whether the supervisor is at the other end: None until it first was, False
        after it went away (requests then fail at once), True when it is (back)."""
        return self._peer_up

    async def connect(self, wait: float = 0.0) -> AsyncClient:
        """Connect; with ``wait`` keep trying that long for the socket (a remote host: its
        link) to appear."""
        deadline = time.monotonic() + wait
        self._closed = False
        if not self.host.is_local:
            return await self._connect_remote(deadline)
        while True:
            try:
                check_running(self.runtime_dir)
                break
            except ConnectionFailed:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)
        self._open(control_endpoint(self.runtime_dir))
        return self

    def _open(self, endpoint: str) -> None:
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        _configure(self._sock)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._sock.connect(endpoint)
        self._reader = asyncio.create_task(self._read_loop())
        self._watcher = asyncio.create_task(self._watch_peer())

    async def _connect_remote(self, deadline: float) -> AsyncClient:
        """The host's ssh link up (it keeps redialling until ``deadline``), then hello: the
        remote protocol version must be ours."""
        if self._link is None:
            self._link = SshLink(self.host)
        link = self._link
        # (a first failure is final only without ``wait``: the link redials with backoff)
        while link.state is not LinkState.UP:
            if time.monotonic() >= deadline and (link.failures or time.monotonic() >= deadline + CONNECT_TIMEOUT):
                why = link.problem or f"host {self.host.name}: no answer through ssh"
                await self._close_link()
                raise ConnectionFailed(why)
            await asyncio.sleep(0.05)
        self._open(link.endpoint)
        try:
            hello = await self.request(Op.HELLO, client="protocol.AsyncClient")
        except RemoteError as exc:
            await self.close()
            if exc.code != ErrorCode.BAD_VERSION:
                raise
            raise VersionMismatch(bad_version_problem(self.host, exc)) from None
        except ConnectionFailed:
            await self.close()
            raise
        problem = version_problem(self.host, hello)
        if problem is not None:
            await self.close()
            raise VersionMismatch(problem)
        return self

    async def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await asyncio.to_thread(link.close)

    @property
    def link(self) -> SshLink | None:
        """The ssh link of a remote host (its ``state``, ``problem``); None for local."""
        return self._link

    async def _watch_peer(self) -> None:
        assert self._monitor is not None
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())["event"]
            self._peer_up = event == zmq.EVENT_CONNECTED

    async def close(self) -> None:
        await self._close_link()  # first: a closed socket would make it dial again
        for task in (self._reader, self._watcher):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self._monitor is not None:
            assert self._sock is not None
            self._sock.disable_monitor()
            self._monitor.close(0)
        if self._sock is not None:
            self._sock.close(0)
        if self._ctx is not None:
            self._ctx.term()
        # closed: ``connected`` is False; a request fails until ``connect`` is called again
        self._sock = self._ctx = self._monitor = None
        self._reader = self._watcher = None
        self._peer_up = None
        self._closed = True

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_loop(self) -> None:
        assert self._sock is not None
        # the frames already there are read without pyzmq's asyncio machinery (a Future and
        # poll bookkeeping per frame: with 100 sessions' live text, over half of the bot's
        # CPU); the next await picks up where this left off (it asks the socket first)
        # (an in-process pipe instead of a socket: one frame at a time)
        waiting: zmq.Socket[bytes] | None = zmq.Socket.shadow(self._sock.underlying) \
            if isinstance(self._sock, zmq.Socket) else None
        while True:
            frames = [await self._sock.recv()]
            with contextlib.suppress(zmq.Again):
                while waiting is not None and len(frames) < READ_AT_ONCE:
                    frames.append(waiting.recv(zmq.NOBLOCK))
            for frame in frames:
                self._take(frame)

    def _take(self, frame: bytes) -> None:
        """A frame from the supervisor: events to their subscription, a reply to its request."""
        try:
            msg = decode(frame, HARD_MAX_FRAME_BYTES)
        except FrameError:
            return
        kind = msg.get("type")
        if kind in ("event", "events", "live", "lives"):
            sub_id = msg.get("sub")
            events = msg.get("events") if kind in ("events", "lives") else [msg.get("event")]
            if not isinstance(sub_id, int) or not isinstance(events, list):
                return
            sub = self._subs.get(sub_id)
            if kind == "events" and sub is not None and sub._accept_all(events):
                sub._put_all(events)
                return
            for event in events:
                if not isinstance(event, dict):
                    continue
                if sub is None:
                    if len(self._early) < 64:
                        self._early.setdefault(sub_id, []).append(event)
                elif kind in ("live", "lives") or sub._accept(event):
                    sub._put(event)  # live text has no id: never acked
            return
        req_id = msg.get("id")
        fut = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def request(
        self, op: Op | str, timeout: float | None = None, **args: Any
    ) -> dict[str, Any]:
        op_name = op.value if isinstance(op, Op) else op
        if self._sock is None:
            if self._closed:
                raise ConnectionFailed(f"the client is closed; '{op_name}' was not sent")
            await self.connect()
        assert self._sock is not None
        if self._peer_up is False:
            # it went away (a request now would only wait out its timeout); ZeroMQ
            # reconnects by itself once a supervisor is there again
            if self._link is not None:
                raise ConnectionFailed(f"{self._link.problem or f'host {self.host.name} is unreachable'};"
                                       f" '{op_name}' was not sent")
            raise ConnectionFailed(f"the supervisor is not running; '{op_name}' was not sent")
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await self._sock.send(encode({"id": req_id, "op": op_name, **args}))
            reply = await asyncio.wait_for(fut, self.timeout if timeout is None else timeout)
        except TimeoutError:
            raise ConnectionFailed(f"no reply to '{op_name}' from the supervisor in time") from None
        finally:
            self._pending.pop(req_id, None)
        return _result_of(reply)

    async def subscribe(
        self,
        session: str | None = None,
        *,
        after_seq: int | None = None,
        after_id: int | None = None,
        consumer: str | None = None,
        window: int | None = None,
        live: bool = False,
        after: int | None = None,
        live_every: int | None = None,
    ) -> Subscription:
        """Subscribe to one session's events after its sequence number ``after_seq``, or to
        all sessions' after the global event id ``after_id`` (neither: only new ones; all
        sessions' with a ``consumer``: after its cursor). ``after``: either, as in protocol
        1 (deprecated). ``live``: the answers as they are written too (``assistant_delta``
        events, never acked); ``live_every`` (ms): that live text coalesced, every session's
        newest at most this often in one frame (an older supervisor refuses it:
        ``bad_request``)."""
        if after_seq is not None and session is None:
            raise ValueError("after_seq is a session's sequence number: give the session")
        if after_id is not None and session is not None:
            raise ValueError("after_id is a global event id: not with a session (after_seq)")
        position = next((p for p in (after_seq, after_id, after) if p is not None), None)
        args: dict[str, Any] = {}
        if session is not None:
            args["session"] = session
        if position is not None:
            args[V1_AFTER] = position  # (the name every supervisor of protocol 1 reads)
        if consumer is not None:
            args["consumer"] = consumer
        if window is not None:
            args["window"] = window
        if live:
            args["live"] = True
        if live_every is not None:
            args["live_every"] = live_every
        args["batch"] = True  # several events to a frame
        sub = self.subscription_class(self, args)
        await sub.start()
        return sub

