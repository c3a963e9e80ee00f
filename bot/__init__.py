"""claude-telegram-bot: the Telegram front end of supervisord-claude.

A pure client of the supervisor protocol: it owns no Claude process and no session, so it
can be restarted (or killed) at any time without losing a reply.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from ._config import load
    from ._errors import BotConfigError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s claude-telegram-bot %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load(argv)
    except BotConfigError as exc:
        print(f"claude-telegram-bot: {exc}", file=sys.stderr)
        return 1
    if config.check_only:
        return 0
    if not config.allowed_users:
        logging.warning("no allowed Telegram user ids configured: the bot will refuse everyone")
    import asyncio

    from ._app import serve

    # pending updates are never dropped: messages sent while the bot was down are handled now
    asyncio.run(serve(config))
    return 0
