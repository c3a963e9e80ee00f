"""Running it every day: versions, check-config, systemd units and readiness, logs that
say what happened and never a secret, the operator's status."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import protocol
from supervisord_claude.supervisor import _units

from .conftest import USER, SupervisorProcess, wait_for
from .fake_telegram import TOKEN

PROGRAMS = {"supervisord-claude": "supervisord_claude", "claudectl": "supervisord_claude.ctl",
            "claude-telegram-bot": "bot"}


def run(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.system  # runs a program
def test_every_command_says_its_version(program: str) -> None:
    out = run(PROGRAMS[program], "--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"{program} {protocol.__version__}"


@pytest.mark.system  # runs a program
def test_check_config_prints_the_effective_values_with_the_token_masked(tmp_path: Path) -> None:
    token = "7000000001:AAH-a-real-looking-bot-token-abcdefghij"
    config = tmp_path / "config.toml"
    config.write_text(f'idle_timeout = 900\n[telegram]\ntoken = "{token}"\nallowed_users = [42]\n')
    out = run("supervisord_claude", "check-config", "--config", str(config), "--claude-bin", "/bin/true",
              "--runtime-dir", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    values = {key: value.rsplit("  ", 1)[0].strip()  # (the last column: where it came from)
              for key, value in (line.split(None, 1) for line in out.stdout.splitlines() if "  " in line)}
    assert values["idle_timeout"] == "900 s"
    assert values["claude_bin"] == "/bin/true"
    assert values["runtime_dir"] == str(tmp_path / "run")
    assert values["telegram.allowed_users"] == "42"
    assert values["telegram.while_busy"] == "steer"  # (the default: a message joins the running answer)
    assert token not in out.stdout + out.stderr and "masked" in values["telegram.token"]
    assert not (tmp_path / "run").exists()  # a check starts nothing


@pytest.mark.parametrize("content, key", [
    ("idle_timeout = 'soon'\n", "idle_timeout"),
    ("idel_timeout = 5\n", "idel_timeout"),
    ("[telegram]\nallowed_users = ['me']\n", "telegram.allowed_users"),
    ("[telegram]\nwhile_busy = 'later'\n", "telegram.while_busy"),
])
@pytest.mark.system  # runs a program
def test_check_config_names_the_bad_key(tmp_path: Path, content: str, key: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content)
    out = run("supervisord_claude", "check-config", "--config", str(config), "--claude-bin", "/bin/true")
    assert out.returncode == 1
    assert key in out.stderr and "Traceback" not in out.stderr


@pytest.mark.system  # runs a program
def test_check_config_fails_when_claude_cannot_be_found(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("")
    out = run("supervisord_claude", "check-config", "--config", str(tmp_path / "c.toml"),
              "--claude-bin", "no-such-claude-anywhere")
    assert out.returncode == 1 and "claude_bin" in out.stderr


# --- systemd ---------------------------------------------------------------------------


def _claude_on_a_private_path(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A `claude` only this shell finds (as ~/.local/bin or nvm put it), and that shell's env."""
    bin_dir = tmp_path / "shell-bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text("#!/bin/sh\nexit 0\n")
    claude.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("SUPERVISORD_CLAUDE_CLAUDE_BIN", None)
    return claude, env


@pytest.mark.system  # runs a program
def test_install_units_writes_both_units_with_absolute_programs(tmp_path: Path) -> None:
    claude, env = _claude_on_a_private_path(tmp_path)
    dest = tmp_path / "units"
    out = run("supervisord_claude", "install-units", "--dest", str(dest), env=env)
    assert out.returncode == 0, out.stderr
    assert "loginctl enable-linger" in out.stdout and "daemon-reload" in out.stdout
    supervisor = (dest / _units.SUPERVISOR_UNIT).read_text()
    bot = (dest / _units.BOT_UNIT).read_text()
    assert "Type=notify" in supervisor and "KillMode=process" in supervisor
    assert "ExecReload=/bin/kill -HUP $MAINPID" in supervisor
    for text, program in ((supervisor, "supervisord-claude"), (bot, "claude-telegram-bot")):
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        path = Path(exec_start.removeprefix("ExecStart=").split()[0])
        assert path.is_absolute() and path.name == program and path.exists()
    # the service's user manager has no shell PATH: Claude's absolute path is in the unit, and said
    assert _units.installed_arguments(dest)[:2] == ["--claude-bin", str(claude)]
    assert f"claude: {claude}" in out.stdout
    # a changed unit is not overwritten without --force
    (dest / _units.BOT_UNIT).write_text(bot + "# mine\n")
    refused = run("supervisord_claude", "install-units", "--dest", str(dest), env=env)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert run("supervisord_claude", "install-units", "--dest", str(dest), "--force", env=env).returncode == 0
    assert (dest / _units.BOT_UNIT).read_text() == bot


@pytest.mark.system  # runs a program
def test_install_units_refuses_with_the_fix_when_claude_cannot_be_found(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    env.pop("SUPERVISORD_CLAUDE_CLAUDE_BIN", None)
    dest = tmp_path / "units"
    (tmp_path / "c.toml").write_text("")
    out = subprocess.run([sys.executable, "-m", "supervisord_claude", "install-units", "--dest", str(dest),
                          "--config", str(tmp_path / "c.toml")], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 1
    assert "not found on PATH" in out.stderr and "--claude-bin /absolute/path/to/claude" in out.stderr
    assert not (dest / _units.SUPERVISOR_UNIT).exists()  # nothing half-written


@pytest.mark.system  # runs a program
def test_install_units_carries_the_directories_this_shell_chose(tmp_path: Path) -> None:
    _, env = _claude_on_a_private_path(tmp_path)
    config = tmp_path / "my config.toml"  # (a space: quoted for systemd)
    config.write_text("")
    env["SUPERVISORD_CLAUDE_STATE_DIR"] = str(tmp_path / "state")
    dest = tmp_path / "units"
    out = run("supervisord_claude", "install-units", "--dest", str(dest), "--config", str(config), env=env)
    assert out.returncode == 0, out.stderr
    flags = _units.installed_arguments(dest)
    assert flags[flags.index("--config") + 1] == str(config)
    assert flags[flags.index("--state-dir") + 1] == str(tmp_path / "state")
    assert "--runtime-dir" not in flags  # the default: the service computes the same one


@pytest.mark.system  # runs a program
def test_check_config_for_service_judges_by_the_units_command_line_and_the_services_environment(
        tmp_path: Path) -> None:
    claude, env = _claude_on_a_private_path(tmp_path)
    env["TELEGRAM_BOT_TOKEN"] = TOKEN  # set in this shell only: the service will not have it
    dest = tmp_path / "units"
    config = tmp_path / "c.toml"
    config.write_text("")
    assert run("supervisord_claude", "install-units", "--dest", str(dest), "--config", str(config),
               env=env).returncode == 0
    ok = run("supervisord_claude", "check-config", "--for-service", "--dest", str(dest), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "as the service will see it" in ok.stdout and str(claude) in ok.stdout
    token_line = next(line for line in ok.stdout.splitlines() if line.startswith("telegram.token"))
    assert "(not set)" in token_line  # what the shell has, the service has not
    # a unit written by hand (or by an older release) that relies on the shell's PATH
    unit = dest / _units.SUPERVISOR_UNIT
    unit.write_text(unit.read_text().replace(f"--claude-bin {claude} ", ""))
    bad = run("supervisord_claude", "check-config", "--for-service", "--dest", str(dest), env=env)
    assert bad.returncode == 1 and "claude_bin" in bad.stderr and "not found on PATH" in bad.stderr
    # nothing installed: say what to do
    none = run("supervisord_claude", "check-config", "--for-service", "--dest", str(tmp_path / "nowhere"), env=env)
    assert none.returncode == 1 and "install-units" in none.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze on this machine")
@pytest.mark.system  # runs a program
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for name, text in _units.render_units().items():
        (tmp_path / name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", "--user", *(str(tmp_path / n) for n in _units.render_units())],
                         capture_output=True, text=True, timeout=60)
    problems = [line for line in out.stderr.splitlines() if str(tmp_path) in line]
    assert not problems, out.stderr


class NotifySocket:
    """What systemd listens on for a Type=notify service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(60)

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def close(self) -> None:
        self.sock.close()


def test_the_supervisor_unit_command_notifies_ready_reloading_and_stopping(make_supervisor) -> None:
    sup: SupervisorProcess = make_supervisor()
    notify = NotifySocket(sup.base / "notify.sock")
    try:
        # exactly what the unit runs (its ExecStart), with this test's directories
        exec_start = next(line for line in _units.render_units()[_units.SUPERVISOR_UNIT].splitlines()
                          if line.startswith("ExecStart=")).removeprefix("ExecStart=")
        sup.argv = lambda: [*shlex.split(exec_start), "--runtime-dir", str(sup.runtime_dir),  # type: ignore[method-assign]
                            "--state-dir", str(sup.state_dir), "--claude-bin", sup.claude_bin,
                            "--config", str(sup.config_path())]
        sup.env["NOTIFY_SOCKET"] = str(notify.path)
        sup.start(wait=False)
        ready = notify.next()
        assert ready["READY"] == "1" and int(ready["MAINPID"]) == sup.proc.pid
        assert sup.request("hello")  # ready means it answers
        sup.ctl("new", "alpha", check=True)
        sup.ctl("send", "alpha", "before the reload", "--wait", check=True)
        claude = sup.claude_pids()
        sup.proc.send_signal(signal.SIGHUP)  # ExecReload
        assert notify.next()["RELOADING"] == "1"
        again = notify.next()
        assert again["READY"] == "1" and int(again["MAINPID"]) == sup.proc.pid  # the same process
        assert sup.claude_pids() == claude  # Claude went on
        assert "after the reload" in sup.ctl("send", "alpha", "after the reload", "--wait", check=True).stdout
        sup.proc.send_signal(signal.SIGTERM)
        assert notify.next()["STOPPING"] == "1"
        assert sup.proc.wait(30) == 0
    finally:
        notify.close()


# --- logs ------------------------------------------------------------------------------


def test_json_logs_say_each_lifecycle_event_with_session_state_reason_and_pids(make_supervisor) -> None:
    sup = make_supervisor(extra_args=["--log-format", "json"]).start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "hi", "--wait", check=True)
    sup.ctl("suspend", "alpha", check=True)
    sup.wait_state("alpha", "suspended")
    sup.stop()
    records = [json.loads(line) for line in sup.log().splitlines() if line.startswith("{")]
    assert records and all({"ts", "level", "program", "msg"} <= set(r) for r in records)
    # keepers log as the supervisor does
    assert {r["program"] for r in records} >= {"supervisord-claude"}
    lifecycle = [r for r in records if r.get("session") == "alpha" and "state" in r]
    states = [r["state"] for r in lifecycle]
    assert states[:4] == ["suspended", "starting", "busy", "idle"] and "suspended" in states[4:]
    idle = lifecycle[3]
    assert idle["reason"] == "turn" and idle["keeper_pid"] > 0 and idle["claude_pid"] > 0
    assert not [line for line in sup.log().splitlines() if line.strip() and not line.startswith("{")]


def test_no_secret_is_ever_logged(make_supervisor, bot_env, telegram) -> None:
    api_key = "sk-ant-api03-THIS-IS-SECRET-0123456789abcdef"
    oauth = "sk-ant-oat01-ALSO-SECRET-0123456789abcdef"
    sup = make_supervisor(env={"ANTHROPIC_API_KEY": api_key, "CLAUDE_CODE_OAUTH_TOKEN": oauth},
                          extra_args=["--log-level", "debug"],
                          config=f'[telegram]\ntoken = "{TOKEN}"\n').start()
    # httpx logs every Bot API URL at debug, the token in each
    bot = bot_env(sup, ["--log-level", "debug"])
    telegram.message(USER, "/new alpha")
    telegram.message(USER, f"my key is {api_key}, do not tell")
    wait_for(lambda: any("do not tell" in t for t in telegram.texts(USER)), 60, what="the echo")
    sup.ctl("status", check=True)
    bot.stop()
    sup.stop()
    logs = {"supervisor": sup.log(), "bot": bot.log()}
    assert "«secret»" in logs["bot"]  # URLs with the token were logged, masked
    for name, text in logs.items():
        for secret in (TOKEN, api_key, oauth):
            assert secret not in text, f"the {name} log shows a secret"


# --- the operator's status ---------------------------------------------------------------


def test_status_shows_what_runs_what_it_costs_and_who_waits(make_supervisor) -> None:
    sup = make_supervisor().start()
    for name in ("alpha", "beta"):
        sup.ctl("new", name, check=True)
    sup.ctl("send", "alpha", "hi", "--wait", check=True)
    sup.ctl("send", "beta", "needperm", check=True)
    sup.wait_event("beta", lambda e: e["kind"] == "permission_request")
    info = json.loads(sup.ctl("status", "--json", check=True).stdout)
    assert info["by_state"] == {"idle": 1, "busy": 1}
    running = {p["session"]: p for p in info["claude_processes"]}
    assert set(running) == {"alpha", "beta"}
    assert all(p["claude_pid"] in sup.claude_pids() and p["claude_memory"] > 0 for p in running.values())
    assert info["cost_today"] == pytest.approx(0.001)  # the fake claude's one finished turn
    assert [(p["session"], p["tool_name"]) for p in info["pending_permissions"]] == [("beta", "Bash")]
    text = sup.ctl("status", check=True).stdout
    assert "cost today: $0.0010" in text and "waiting for an answer: 1 (beta: Bash)" in text
    assert "alpha: keeper pid" in text and "MiB" in text


def test_the_units_in_contrib_are_the_ones_install_units_writes() -> None:
    contrib = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
    expected = _units.render_units(supervisor="%h/.local/bin/supervisord-claude",
                                   bot="%h/.local/bin/claude-telegram-bot")
    assert {name: (contrib / name).read_text() for name in expected} == expected


def test_restarting_the_bot_unit_during_a_turn_loses_no_reply(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    exec_start = next(line for line in _units.render_units()[_units.BOT_UNIT].splitlines()
                      if line.startswith("ExecStart=")).removeprefix("ExecStart=")
    command = shlex.split(exec_start)  # what the unit runs
    bot = bot_env(sup, command=command)
    telegram.message(USER, "/new alpha")
    wait_for(lambda: any("created" in t for t in telegram.texts(USER)), 60, what="the session")
    for i in range(5):
        telegram.message(USER, f"sleep:0.4 m{i}")
    first = sup.wait_event("alpha", lambda e: e["kind"] == "assistant_text" and "m0" in e["text"])
    sup.wait_consumer("telegram-bot", first["id"])
    bot.stop()  # systemctl restart: SIGTERM, wait, start again
    assert bot.proc is not None and bot.proc.returncode == 0
    bot_env(sup, command=command)
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and "m4" in e["text"])
    sup.wait_consumer("telegram-bot")
    replies = [t.split(" (")[0] for t in telegram.texts(USER) if t.startswith("echo:")]
    assert replies == [f"echo: sleep:0.4 m{i}" for i in range(5)]


@pytest.mark.system  # runs a program
def test_scripts_run_help_prints_one_help_and_starts_nothing(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, SUPERVISORD_CLAUDE_RUNTIME_DIR=str(tmp_path / "run"))
    out = subprocess.run([str(root / "scripts" / "run"), "--help"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("usage:") == 2  # the script's line, then the supervisor's options, once
    assert out.stdout.startswith("usage: ./scripts/run") and "usage: supervisord-claude" in out.stdout
    assert "claude-telegram-bot" not in out.stdout
    assert not (tmp_path / "run").exists()  # nothing was started
