"""systemd user units: the supervisor and the bot as two services, written by
``supervisord-claude install-units`` (the templates are also in ``contrib/systemd/``).

Why the units say what they say:

- ``Type=notify``: the supervisor says READY=1 once its control socket accepts clients,
  so ``After=supervisord-claude.service`` really means "after it answers".
- ``ExecReload`` sends SIGHUP: the supervisor re-executes itself in place (same pid,
  RELOADING=1 then READY=1) and adopts its keepers; running turns go on.
- ``KillMode=process``: systemd signals only the supervisor. On ``stop`` it stops every
  session itself (gracefully); after a crash the keepers and their Claude stay alive for
  the restarted supervisor to adopt — with the default (control-group) systemd would kill
  them with it.
- The bot is its own unit: restart it alone, any time; it only ``Wants`` the supervisor.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

SUPERVISOR_UNIT = "supervisord-claude.service"
BOT_UNIT = "claude-telegram-bot.service"

_SUPERVISOR = """\
[Unit]
Description=supervisord-claude: long-lived Claude Code sessions

[Service]
Type=notify
NotifyAccess=main
ExecStart={supervisor}
ExecReload=/bin/kill -HUP $MAINPID
# only the supervisor is signalled: it stops its sessions itself, and a crash leaves
# Claude running for the restarted supervisor to adopt
KillMode=process
TimeoutStopSec=30
Restart=on-failure
RestartSec=2

[Install]
WantedBy=default.target
"""

_BOT = """\
[Unit]
Description=claude-telegram-bot: the Telegram front end of supervisord-claude
Wants={supervisor_unit}
After={supervisor_unit} network-online.target

[Service]
Type=simple
ExecStart={bot}
# the bot holds nothing: restarting it at any time loses no reply
Restart=always
RestartSec=5
# 78: Telegram rejected the token; restarting cannot help (fix it, then start the unit)
RestartPreventExitStatus=78

[Install]
WantedBy=default.target
"""


def _program(name: str) -> str:
    """The absolute path of one of our console scripts: next to the running Python's
    (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is neither next to {sys.executable} nor on PATH")
    return found


def _exec_arg(arg: str) -> str:
    """One argument of an ``ExecStart=`` line (systemd splits on spaces, honours quotes)."""
    if arg and not any(c.isspace() or c in "\"'\\$%;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%") + '"'


def render_units(supervisor: str | None = None, bot: str | None = None,
                 supervisor_args: Sequence[str] = ()) -> dict[str, str]:
    """Unit file name -> text, with the programs' absolute paths; ``supervisor_args``: the
    flags the service needs (``--claude-bin``: its user manager has no shell PATH)."""
    # (the program as given: the templates in contrib/ use systemd's %h on purpose)
    command = " ".join((supervisor or _exec_arg(_program("supervisord-claude")), *map(_exec_arg, supervisor_args)))
    return {
        SUPERVISOR_UNIT: _SUPERVISOR.format(supervisor=command),
        BOT_UNIT: _BOT.format(bot=bot or _program("claude-telegram-bot"), supervisor_unit=SUPERVISOR_UNIT),
    }


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def install_units(dest: Path, force: bool = False, supervisor_args: Sequence[str] = ()) -> list[Path]:
    """Write both units into ``dest``; refuses to overwrite a different file unless ``force``."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_units(supervisor_args=supervisor_args).items():
        path = dest / name
        if path.exists() and path.read_text() != text and not force:
            raise FileExistsError(f"{path} exists and differs; use --force to replace it")
        path.write_text(text)
        written.append(path)
    return written


#: what systemd's user manager puts on a service's PATH when nobody set one
#: (``systemctl --user show-environment`` says what it really holds, when it runs)
DEFAULT_SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def service_environment(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> dict[str, str]:
    """The environment a user service starts with: the user manager's
    (``systemctl --user show-environment``), or only the default PATH where there is none
    to ask. Never this shell's: that is the point."""
    try:
        out = run(["systemctl", "--user", "show-environment"], capture_output=True, text=True, timeout=10,
                  stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return {"PATH": DEFAULT_SERVICE_PATH}
    if out.returncode != 0:
        return {"PATH": DEFAULT_SERVICE_PATH}
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    env.setdefault("PATH", DEFAULT_SERVICE_PATH)
    return env


def installed_arguments(dest: Path) -> list[str]:
    """The flags the installed supervisor unit starts it with (its ``ExecStart=`` after
    the program); ``FileNotFoundError`` when no unit is installed there."""
    text = (dest / SUPERVISOR_UNIT).read_text()
    line = next((line for line in text.splitlines() if line.startswith("ExecStart=")), "ExecStart=")
    return shlex.split(line.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%"))[1:]


def service_arguments(origins: Mapping[str, str], config_values: Mapping[str, object], claude: str) -> list[str]:
    """The flags a unit needs to see what this shell sees: ``--claude-bin`` always (as an
    absolute path), and each directory or config file that came from a flag or this
    shell's environment (the service has neither)."""
    args = ["--claude-bin", claude]
    for key in ("config", "runtime_dir", "state_dir", "idle_timeout", "orphan_timeout"):
        origin = origins.get(key, "")
        if origin.startswith(("flag", "environment")) and config_values.get(key):
            args += [f"--{key.replace('_', '-')}", str(config_values[key])]
    return args


NEXT_STEPS = """\
Next:
  systemctl --user daemon-reload
  systemctl --user enable --now supervisord-claude.service
  systemctl --user enable --now claude-telegram-bot.service   # with a bot token configured
  loginctl enable-linger "$USER"   # keep them running while you are logged out
Logs: journalctl --user -u supervisord-claude -u claude-telegram-bot -f
Reload (in place, turns go on): systemctl --user reload supervisord-claude
"""
