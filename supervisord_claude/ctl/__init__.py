"""claudectl: the scripting client (``claudectl --help``). A pure client of the socket
protocol (``protocol/``): it imports nothing of the daemon's rooms."""

from ._cli import main

__all__ = ["main"]
