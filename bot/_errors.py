"""Exceptions of the bot.

    BotError
    └── BotConfigError   a missing token, a bad [telegram] key or env var; exit 1
"""

from __future__ import annotations


class BotError(Exception):
    """Base class of the bot's own errors."""


class BotConfigError(BotError):
    """The bot's configuration is unusable; the message names the key or variable."""
