"""``supervisord-claude dial-stdio``: this machine's control socket on stdin/stdout.

What a client on another machine runs through ssh (``protocol._ssh``), as ``docker
system dial-stdio`` is for docker: it connects to the local supervisor's control socket,
checked as every client checks it (0700 runtime dir, our socket, a running supervisor),
and copies bytes both ways unchanged — the client's ZeroMQ speaks ZMTP through it to
the supervisor's ROUTER. It exits when either side closes. Nothing but the supervisor's
bytes ever goes to stdout; errors go to stderr (ssh shows them to the client).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from pathlib import Path

from protocol import CONTROL_SOCKET, ConfigFileError, ConnectionFailed, check_running, configured_runtime_dir

CHUNK = 65536


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


def main(runtime_dir: str | None, config: str | None) -> int:
    try:
        directory = configured_runtime_dir(runtime_dir, config)
        check_running(directory)
    except (ConfigFileError, ConnectionFailed) as exc:
        print(f"supervisord-claude dial-stdio on {socket.gethostname()}: {exc}", file=sys.stderr)
        return 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(Path(directory) / CONTROL_SOCKET))
    except OSError as exc:
        print(f"supervisord-claude dial-stdio on {socket.gethostname()}: cannot connect to"
              f" {directory / CONTROL_SOCKET}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    # either side's end ends the relay: a ZMTP session cannot outlive either of its halves
    done = threading.Event()
    for pump in (_pump_in, _pump_out):
        threading.Thread(target=pump, args=(sock, done), daemon=True).start()
    done.wait()
    sock.close()
    return 0
