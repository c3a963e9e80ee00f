"""What to tell the user when a remote host cannot be used, as a sentence that says what
to do: why ssh to it ended (``explain``, from ssh's exit status and its last words on
stderr), and a protocol version that differs from this client's (``version_problem``
from its ``hello`` reply, ``bad_version_problem`` from its ``bad_version`` error), naming
both releases and which machine to upgrade. Pure functions: ``_ssh`` and the clients call
them.
"""

from __future__ import annotations

import re
from typing import Any

from ._errors import RemoteError
from ._hosts import Host
from ._messages import PROTOCOL_VERSION
from ._version import __version__


def explain(host: Host, returncode: int | None, stderr: str) -> str:
    """Why ssh to ``host`` ended, as a sentence that says what to do."""
    said = " ".join(line.strip() for line in stderr.strip().splitlines()[-3:] if line.strip())
    dest = host.ssh or host.destination
    prefix = f"host {host.name} ({dest}) is unreachable: "
    if "Permission denied" in stderr:
        return (prefix + f"ssh says {said!r}: the key was refused. Check that `ssh -o BatchMode=yes {dest} true`"
                " works without a password (ssh-agent, IdentityFile in ~/.ssh/config, the remote"
                " authorized_keys)")
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (prefix + f"ssh says {said!r}: the host's key is not in known_hosts (or it changed)."
                f" Connect once with `ssh {dest}` to check and accept it")
    if returncode == 127 or "command not found" in stderr or "No such file" in stderr:
        return (f"host {host.name} ({dest}): {host.command!r} was not found there ({said or 'exit 127'}):"
                f" install supervisord-claude on {host.name}, or set hosts.{host.name}.command to its path")
    if "dial-stdio" in stderr or "supervisor" in stderr:
        return f"host {host.name} ({dest}): {said}"
    if returncode == 255 or not said:
        return prefix + (said or f"ssh exited with status {returncode}")
    return f"host {host.name} ({dest}): ssh ended (status {returncode}): {said}"


def version_problem(host: Host, hello: dict[str, Any]) -> str | None:
    """Why this client cannot talk to ``host`` whose ``hello`` reply this is, or None."""
    theirs = hello.get("protocol")
    if theirs == PROTOCOL_VERSION:
        return None
    return _mismatch(host, theirs if isinstance(theirs, int) else None, str(hello.get("version") or "?"))


def bad_version_problem(host: Host, error: RemoteError) -> str:
    """``error`` is the remote's ``bad_version`` reply to our hello: name both versions."""
    found = re.search(r"speaks (\d+)", error.message)
    return _mismatch(host, int(found.group(1)) if found else None, "?")


def _mismatch(host: Host, theirs: int | None, their_release: str) -> str:
    ours = f"protocol version {PROTOCOL_VERSION} (supervisord-claude {__version__})"
    if theirs is None:
        return (f"host {host.name} speaks another protocol version than this client's {ours}: upgrade the"
                f" older of the two, so both run the same release")
    upgrade = f"on {host.name} ({host.ssh})" if theirs < PROTOCOL_VERSION else "on this machine"
    return (f"host {host.name} speaks protocol version {theirs} (supervisord-claude {their_release}); this"
            f" client speaks {ours}: upgrade supervisord-claude {upgrade}, so both speak the same version")
