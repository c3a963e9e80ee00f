"""claude-telegram-bot: the Telegram front end of supervisord-claude.

A pure client of the supervisor protocol: it owns no Claude process and no session, so it
can be restarted (or killed) at any time without losing a reply.
"""

from __future__ import annotations

import logging
import sys

from protocol import configure_logging

__all__ = ["EXIT_TOKEN_REJECTED", "main"]

#: the exit status when Telegram rejects the token (sysexits' EX_CONFIG): trying again
#: cannot help, so the systemd unit (RestartPreventExitStatus) and scripts/run do not
EXIT_TOKEN_REJECTED = 78


def main(argv: list[str] | None = None) -> int:
    from ._config import load
    from ._errors import BotConfigError

    configure_logging("claude-telegram-bot")
    try:
        config = load(argv)
    except BotConfigError as exc:
        print(f"claude-telegram-bot: {exc}", file=sys.stderr)
        return 1
    # the token is in every Bot API URL the HTTP library may log: it never appears
    configure_logging("claude-telegram-bot", config.log_format, config.log_level, (config.token,))
    if config.check_only:
        return 0
    if not config.allowed_users:
        logging.warning("no allowed Telegram user ids configured: the bot will refuse everyone")
    import asyncio

    from telegram.error import InvalidToken

    from ._app import serve

    # pending updates are never dropped: messages sent while the bot was down are handled now
    try:
        asyncio.run(serve(config))
    except InvalidToken:
        # one line, no traceback: the exception's own text holds the token
        logging.error("Telegram rejected the bot token (TELEGRAM_BOT_TOKEN or [telegram] token); not retrying: "
                      "get a valid one from @BotFather (exit status %d)", EXIT_TOKEN_REJECTED)
        return EXIT_TOKEN_REJECTED
    return 0
