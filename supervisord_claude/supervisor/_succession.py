"""What passes from one supervisor to the next: the processes a previous one left (its
keepers, to adopt or reap; its fork server; Claude processes no keeper owns), and whether
the code installed now would start (a restart in place is refused otherwise).

Used by start-up (``_startup``) and by the running supervisor (``_supervisor``: adoption,
restart); it imports neither, so they do not import each other either.
"""

from __future__ import annotations

import subprocess
import sys

from .._claude import INSTANCE_ENV, SESSION_ENV
from .._os import System
from .._wire import STOP_GRACE


def title_prefix(instance: str) -> str:
    return f"supervisord-claude[{instance}]:"


def keepers_left(system: System, instance: str) -> dict[int, str]:
    """pid -> session of every keeper a previous supervisor of this runtime dir left: to
    adopt if it introduces itself, else to reap."""
    prefix = f"{title_prefix(instance)} keeper "
    return {pid: title[len(prefix):].strip() for pid, title in system.processes_titled(prefix)}


def reap_leftovers(system: System, instance: str) -> int:
    """Kill what a previous supervisor left that is no keeper (its fork server)."""
    others = [pid for pid, title in system.processes_titled(title_prefix(instance))
              if not title.startswith(f"{title_prefix(instance)} keeper ")]
    return system.terminate(others, grace=2.0)


def reap_stale(system: System, instance: str, keepers: list[int], live_sessions: set[str]) -> tuple[int, int]:
    """Kill keepers that were not adopted (by title: hung, stopped, another wire version),
    then every Claude process of this instance whose session has no adopted keeper.
    Returns (keepers, Claude processes). Blocking: run it off the event loop."""
    reaped = system.terminate(keepers, grace=STOP_GRACE + 1.0)
    orphans = [pid for pid in system.processes_with_env(INSTANCE_ENV, instance)
               if system.environ(pid).get(SESSION_ENV) not in live_sessions]
    return reaped, system.terminate(orphans, grace=2.0)


def restart_argv() -> list[str]:
    """What a restart in place runs: this supervisor's command, with the code installed now."""
    return [sys.executable, "-m", "supervisord_claude", *sys.argv[1:]]


#: what a start does before it touches anything: import the daemon, read the configuration
_START_CHECK = "import sys\nfrom supervisord_claude import _config\nfrom supervisord_claude.supervisor import _startup, _supervisor\n_config.parse(sys.argv[1:])\n"


def restart_problem() -> str | None:
    """Why the code installed now would not start (its last line of error), or None. A
    restart in place that would not come back — an upgrade whose new dependency is not
    installed, a configuration the new release refuses — is refused before anything stops,
    and this supervisor goes on."""
    try:
        check = subprocess.run([sys.executable, "-c", _START_CHECK, *sys.argv[1:]], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if check.returncode == 0:
        return None
    lines = check.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {check.returncode}"
