"""supervisord-claude: a supervisor of long-lived Claude Code sessions.

The daemon (``supervisord-claude``) forks one session keeper per live session; clients
(``claudectl``, the Telegram bot) speak the ``protocol`` package over Unix sockets.
"""

import sys
from typing import Any

__all__ = ["__version__", "main"]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # (on use: ``dial-stdio`` starts without the protocol package)
        from protocol import __version__

        return __version__
    raise AttributeError(f"module 'supervisord_claude' has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["dial-stdio"]:  # (run once per command of a client elsewhere: it loads only what it needs)
        from ._dial_stdio import main_from_argv

        code = main_from_argv(args[1:])
        if code is not None:
            return code
    if args[:1] == ["ctl"]:  # claudectl, as ``claudectl --host NAME attach`` runs it here over ssh
        from .ctl import main as ctl_main

        return ctl_main(args[1:])
    from .supervisor._main import main as _main

    return _main(argv)
