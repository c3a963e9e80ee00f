"""supervisord-claude: a supervisor of long-lived Claude Code sessions.

The daemon (``supervisord-claude``) forks one session keeper per live session; clients
(``claudectl``, the Telegram bot) speak the ``protocol`` package over Unix sockets.
"""

import sys

from protocol import __version__

__all__ = ["__version__", "main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ctl"]:  # claudectl, as ``claudectl --host NAME attach`` runs it here over ssh
        from .ctl import main as ctl_main

        return ctl_main(args[1:])
    from .supervisor._main import main as _main

    return _main(argv)
