"""The one exception hierarchy of the protocol package.

    ProtocolError
    ├── FrameError          a frame could not be decoded (garbage, not a map, too large)
    ├── ValidationError     a decoded request is not acceptable (carries an ErrorCode)
    ├── RemoteError         the supervisor answered with an error reply
    └── ConnectionFailed    no supervisor answered (not running, wrong runtime dir, timeout)
        └── VersionMismatch another host's supervisor speaks another protocol version
"""

from __future__ import annotations

from ._messages import ErrorCode


class ProtocolError(Exception):
    """Base class of every error raised by ``protocol``."""


class FrameError(ProtocolError):
    """A frame is not a msgpack map of the expected shape."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_FRAME) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ValidationError(ProtocolError):
    """A request failed validation; ``code`` and ``message`` go into the error reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class RemoteError(ProtocolError):
    """The supervisor replied with ``ok: false``. ``code`` is an ``ErrorCode`` (a string
    enum: it equals its value, ``exc.code == "not_found"`` holds too), or the plain string
    of a code this client does not know (from a newer supervisor)."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        try:
            known: ErrorCode | str = ErrorCode(code)
        except ValueError:
            known = str(code)
        super().__init__(f"{known}: {message}")
        self.code = known
        self.message = message


class ConnectionFailed(ProtocolError):
    """No supervisor answered in time."""


class VersionMismatch(ConnectionFailed):
    """Another host's supervisor speaks another protocol version (the message names both)."""
