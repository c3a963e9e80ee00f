"""Exceptions of the supervisor package.

    SupervisorError
    ├── ConfigError        bad option, env var or config key (message names it); exit 1
    ├── StartupRefused     another supervisor holds the runtime dir, or it is unsafe; exit 1
    └── StoreError         the SQLite store failed (disk full, unreadable)
"""

from __future__ import annotations


class SupervisorError(Exception):
    """Base class of the supervisor's own errors."""


class ConfigError(SupervisorError):
    """The configuration is unusable; the message names the key."""


class StartupRefused(SupervisorError):
    """The supervisor must not start (lock held, unsafe runtime dir, ...)."""


class StoreError(SupervisorError):
    """A store operation failed; nothing was half-written."""
