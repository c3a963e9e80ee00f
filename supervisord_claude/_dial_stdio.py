"""``supervisord-claude dial-stdio``: this machine's control socket on stdin/stdout.

What a client on another machine runs through ssh (``protocol._ssh``), as ``docker
system dial-stdio`` is for docker: it connects to the local supervisor's control socket,
checked as every client checks it (0700 runtime dir, our socket, a running supervisor),
and copies bytes both ways unchanged — the client's ZeroMQ speaks ZMTP through it to
the supervisor's ROUTER. It exits when either side closes. Nothing but the supervisor's
bytes ever goes to stdout; errors go to stderr (ssh shows them to the client).

It starts once per command of a client elsewhere (each claudectl command is one ssh
session), so it starts light: ``supervisord-claude dial-stdio`` comes here before the
daemon's parser, and the checks come from ``protocol/_paths.py`` loaded alone (standard
library only) rather than through the client library (ZeroMQ, asyncio): a third of the
start-up time (docs/benchmarks.md, "Another machine, through ssh").
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

CHUNK = 65536


def _paths() -> ModuleType:
    """``protocol._paths``: the package's own if it is loaded, else that one file alone —
    importing it the usual way would run ``protocol/__init__`` (the whole client library)."""
    if "protocol" in sys.modules:
        from protocol import _paths

        return _paths
    import importlib.util

    package = importlib.util.find_spec("protocol")  # (finds it without running it)
    assert package is not None and package.submodule_search_locations is not None
    location = Path(next(iter(package.submodule_search_locations))) / "_paths.py"
    spec = importlib.util.spec_from_file_location("protocol._paths", location)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pump_in(sock: socket.socket, done: threading.Event) -> None:
    """stdin → the socket; at stdin's end (the client left) the socket is shut for writing."""
    try:
        while data := os.read(0, CHUNK):
            sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        done.set()


def _pump_out(sock: socket.socket, done: threading.Event) -> None:
    """The socket → stdout, every byte written before the next read."""
    try:
        while data := sock.recv(CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        pass
    finally:
        done.set()


def main_from_argv(argv: Sequence[str]) -> int | None:
    """``dial-stdio [--runtime-dir DIR] [--config FILE]`` (what clients run), or None for
    any other word: the daemon's own parser then reads it (and says what is wrong)."""
    options: dict[str, str | None] = {"--runtime-dir": None, "--config": None}
    words = list(argv)
    while words:
        name, equals, value = words.pop(0).partition("=")
        if name not in options or (not equals and not words):
            return None
        options[name] = value if equals else words.pop(0)
    return main(options["--runtime-dir"], options["--config"])


def main(runtime_dir: str | None, config: str | None) -> int:
    paths = _paths()
    try:
        directory: Path = paths.configured_runtime_dir(runtime_dir, config)
        problem: str | None = paths.running_problem(directory)
    except paths.ConfigFileError as exc:
        problem = str(exc)
    if problem is not None:
        print(f"supervisord-claude dial-stdio on {socket.gethostname()}: {problem}", file=sys.stderr)
        return 1
    control = directory / paths.CONTROL_SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(control))
    except OSError as exc:
        print(f"supervisord-claude dial-stdio on {socket.gethostname()}: cannot connect to"
              f" {control}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    # either side's end ends the relay: a ZMTP session cannot outlive either of its halves
    done = threading.Event()
    for pump in (_pump_in, _pump_out):
        threading.Thread(target=pump, args=(sock, done), daemon=True).start()
    done.wait()
    sock.close()
    return 0
