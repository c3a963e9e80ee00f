"""supervisord-claude: a supervisor of long-lived Claude Code sessions.

The daemon (``supervisord-claude``) forks one session keeper per live session; clients
(``claudectl``, the Telegram bot) speak the ``protocol`` package over Unix sockets.
"""

from protocol import __version__

__all__ = ["__version__", "main"]


def main(argv: list[str] | None = None) -> int:
    from .supervisor._main import main as _main

    return _main(argv)
