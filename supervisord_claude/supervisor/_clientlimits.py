"""What clients may cost the supervisor, and the bounds that keep it so: how many may be
connected at once (``ConnectionGate``: at the limit the control socket's name is hidden),
what may wait for one client to read (``ClientPipe``: a client that does not read loses
its own replies, never anyone else's service), and how often bad input is logged
(``InputWarnings``). ``_control.ControlServer`` applies them.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from protocol import counted

log = logging.getLogger("supervisord_claude")


#: warnings about bad client input: at most this many per LOG_PERIOD seconds (a client
#: sending garbage in a loop must not fill the disk with the supervisor's log)
LOG_BURST = 10
LOG_PERIOD = 60.0


class InputWarnings:
    """Rate-limited warnings about client input; what was held back is counted and said."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, about: str = "client input") -> None:
        self.clock = clock
        self.about = about
        self.window_start = clock()
        self.logged = 0
        self.suppressed = 0

    def warn(self, message: str, *args: Any) -> None:
        now = self.clock()
        if now - self.window_start >= LOG_PERIOD:
            if self.suppressed:
                log.warning("%d more warnings about %s were not logged in the last %.0f s",
                            self.suppressed, self.about, now - self.window_start)
            self.window_start, self.logged, self.suppressed = now, 0, 0
        if self.logged < LOG_BURST:
            self.logged += 1
            log.warning(message, *args)
        else:
            self.suppressed += 1


#: file descriptors kept free whatever clients do, at least: for keepers that connect, the
#: store, and the connections a burst brings in before the door closes
FD_HEADROOM = 256
#: connections the kernel queues for the control socket before libzmq accepts them (they
#: still come in after the door closes)
ACCEPT_BACKLOG = 32
#: how often the gate looks at the open files even when no client comes or goes (a keeper
#: that exits frees one)
GATE_CHECK_EVERY = 1.0


def fd_headroom(soft: int | None = None) -> int:
    """Descriptors kept free: FD_HEADROOM, or a quarter of the limit if that is more."""
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(FD_HEADROOM, soft // 4)


def open_files() -> tuple[int, int]:
    """(descriptors this process has open, its soft RLIMIT_NOFILE)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:  # (listing needs a descriptor itself: none left means full)
        used = soft
    return used, soft


class Door(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class ConnectionGate:
    """Keeps the number of connected clients under ``limit`` and never lets them take the
    last file descriptors.

    libzmq 4.3.5 aborts the whole process (``Too many open files
    (src/ipc_listener.cpp:297)``, exit 134) when its ipc listener's ``accept`` fails with
    EMFILE, so running out of descriptors must never happen. libzmq cannot refuse one
    connection, and unbinding the listener drops every connection accepted on it; so the
    door is the socket's *name*: at the limit (or with fewer than ``fd_headroom()``
    descriptors free) ``control.sock`` is unlinked — new clients find no socket, clients connected go
    on — and it is linked again, from a second name the listener keeps (``.bound``),
    once they are under it. A ZeroMQ socket monitor counts the connections."""

    def __init__(self, path: Path, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.spare = path.with_name(path.name + ".bound")
        self.limit = limit
        self.connections = 0
        self.door = Door.OPEN
        self.warnings = InputWarnings(clock, about="the connection limit")

    def bound(self) -> None:
        """The listener is bound at ``path``: keep a second name to reopen the door with."""
        self.spare.unlink(missing_ok=True)
        os.link(self.path, self.spare)

    def close(self) -> None:
        self.spare.unlink(missing_ok=True)

    def on_event(self, event: int, fd: int) -> None:
        if event == zmq.EVENT_ACCEPTED:
            self.connections += 1
            # descriptors are handed out lowest first: one this high means at least this
            # many are open — close at once, not after the rest of a burst is counted
            if self.door is Door.OPEN and fd >= resource.getrlimit(resource.RLIMIT_NOFILE)[0] - fd_headroom():
                self.check()
        elif event == zmq.EVENT_DISCONNECTED:
            self.connections = max(0, self.connections - 1)

    def check(self) -> None:
        used, soft = open_files()
        headroom = fd_headroom(soft)
        if self.door is Door.OPEN and (self.connections >= self.limit or soft - used < headroom):
            self.path.unlink(missing_ok=True)
            self.door = Door.CLOSED
            self.warnings.warn("%s connected (max_connections %d), %d of %d open files in use: new"
                               " clients are not accepted until some leave", counted(self.connections, "client"),
                               self.limit,
                               used, soft)
        elif self.door is Door.CLOSED and self.connections <= self.limit * 9 // 10 \
                and soft - used >= headroom + headroom // 4:
            try:
                os.link(self.spare, self.path)
            except FileExistsError:
                pass
            self.door = Door.OPEN
            self.warnings.warn("%s connected (max_connections %d): accepting new clients again",
                               counted(self.connections, "client"), self.limit)

    def limits(self) -> dict[str, dict[str, int | None]]:
        used, soft = open_files()
        return {"connections": {"used": self.connections, "limit": self.limit},
                "open_files": {"used": used, "limit": soft}}


#: frames one client's pipe may hold (the control socket's send high-water mark)
PIPE_FRAMES = 128
#: bytes that may wait in one client's pipe: the pipe holds at most the last PIPE_FRAMES
#: frames sent to it (ZeroMQ refuses more), so nothing is sent while those add up to this
PIPE_BYTES = 8 * 1024 * 1024
#: replies that found a client's pipe full wait here, in order, and go before any event
#: once it has room (a subscriber behind on its events keeps its replies); beyond these
#: a client that does not read loses its replies
HELD_REPLIES = 64
HELD_REPLY_BYTES = 1024 * 1024
#: how often a client whose pipe was full is tried again: at first (a subscriber that reads
#: is soon sent more), then each try after twice as many ticks, up to RETRY_BACKOFF_MAX
#: (a client that reads nothing costs next to nothing)
RETRY_EVERY = 0.02
RETRY_BACKOFF_MAX = 32
#: requests one client may have waiting for the supervisor to read them (receive
#: high-water mark): a client that sends faster waits
REQUEST_FRAMES = 64


@dataclass
class ClientPipe:
    """What the supervisor may still hold for one client: the sizes of the last frames
    sent to it (its pipe holds no more than those), the replies waiting for room."""

    sizes: collections.deque[int] = field(default_factory=lambda: collections.deque(maxlen=PIPE_FRAMES))
    held: int = 0  # bytes of the frames in ``sizes``
    replies: collections.deque[bytes] = field(default_factory=collections.deque)
    reply_bytes: int = 0
    stalled: bool = False  # its pipe was full: tried again, less often the longer it stays so
    tries: int = 0  # tries since it stalled
    dropped: int = 0

    def has_room(self, size: int) -> bool:
        # (a frame over the whole budget goes once the pipe is nearly empty)
        return self.held + size <= PIPE_BYTES or self.held <= PIPE_BYTES // 8

    def sent(self, size: int) -> None:
        if len(self.sizes) == PIPE_FRAMES:
            self.held -= self.sizes[0]
        self.sizes.append(size)
        self.held += size
