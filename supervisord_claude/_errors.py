"""Exceptions of the supervisor package.

    SupervisorError
    ├── ConfigError        bad option, env var or config key (message names it); exit 1
    ├── StartupRefused     another supervisor holds the runtime dir, or it is unsafe; exit 1
    ├── StoreError         the SQLite store failed (disk full, unreadable)
    ├── OpError            a well-formed request that cannot be carried out (has a code)
    └── ClientUnreachable  a frame for a client could not be sent now
        ├── ClientSlow     its queue is full: try again on its next ack or ping
        └── ClientGone     it disconnected: forget its subscriptions
"""

from __future__ import annotations

from protocol import ErrorCode


class SupervisorError(Exception):
    """Base class of the supervisor's own errors."""


class ConfigError(SupervisorError):
    """The configuration is unusable; the message names the key."""


class StartupRefused(SupervisorError):
    """The supervisor must not start (lock held, unsafe runtime dir, ...)."""


class StoreError(SupervisorError):
    """A store operation failed; nothing was half-written."""


class OpError(SupervisorError):
    """A request that is well-formed but cannot be carried out."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ClientUnreachable(SupervisorError):
    """A frame for a client was not sent."""


class ClientSlow(ClientUnreachable):
    """The client's queue is full."""


class ClientGone(ClientUnreachable):
    """The client is no longer connected."""
