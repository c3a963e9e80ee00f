"""Running it as a service for months (issue #31): no secret in any output, the bot
outlives Telegram outages, one configuration everywhere, stale cursors do not pin events."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot import EXIT_TOKEN_REJECTED
from protocol import AsyncClient

from .conftest import USER, SupervisorProcess, wait_for

#: the shape of a real token (digits, a colon, 35 characters), not the fake API's
REJECTED = "987654321:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
ROOT = Path(__file__).resolve().parent.parent


def run_bot(sup: SupervisorProcess, api_url: str, token: str, *args: str,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(sup.env, TELEGRAM_BOT_TOKEN=token, TELEGRAM_ALLOWED_USERS="111", TELEGRAM_API_URL=api_url)
    return subprocess.run([sys.executable, "-m", "bot", "--runtime-dir", str(sup.runtime_dir),
                           "--config", str(sup.config_path()), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_rejected_token_is_one_line_without_the_token_and_a_distinct_exit(
        make_supervisor, telegram, log_format: str) -> None:
    sup = make_supervisor()
    done = run_bot(sup, telegram.url, REJECTED, "--log-format", log_format)
    output = done.stdout + done.stderr
    assert REJECTED not in output and REJECTED.split(":")[1] not in output, output
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "rejected" in lines[0] and "@BotFather" in lines[0], output
    assert done.returncode == EXIT_TOKEN_REJECTED


def test_the_bot_unit_does_not_restart_on_a_rejected_token() -> None:
    from supervisord_claude.supervisor import _units

    unit = _units.render_units("/x/supervisord-claude", "/x/claude-telegram-bot")[_units.BOT_UNIT]
    assert f"RestartPreventExitStatus={EXIT_TOKEN_REJECTED}" in unit
    shipped = (ROOT / "contrib/systemd" / _units.BOT_UNIT).read_text()
    assert f"RestartPreventExitStatus={EXIT_TOKEN_REJECTED}" in shipped


@pytest.mark.system  # runs a program
def test_an_uncaught_exception_is_logged_masked(tmp_path: Path) -> None:
    """A traceback that reaches the top of any program goes through the log handler,
    which masks what the environment holds as secrets, whatever the exception says."""
    code = ("from protocol import configure_logging\n"
            "configure_logging('x')\n"
            "raise RuntimeError('the token ' + __import__('os').environ['TELEGRAM_BOT_TOKEN'] + ' leaked')\n")
    done = subprocess.run([sys.executable, "-c", code], env={"TELEGRAM_BOT_TOKEN": "12:short", "PATH": "/usr/bin",
                                                              "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "12:short" not in done.stderr, done.stderr
    assert "RuntimeError" in done.stderr and "leaked" in done.stderr
    assert done.returncode == 1


@pytest.mark.parametrize("command", [["ls", "--all"], ["tail", "work"], ["status", "--json"]])
def test_claudectl_stops_quietly_when_its_reader_goes_away(supervisor, command: list[str]) -> None:
    """``claudectl … | head``: the reader is gone before claudectl writes (a pipe whose
    read end is closed); it stops without a traceback, as a Unix tool would."""
    supervisor.ctl("new", "work", check=True)
    supervisor.ctl("send", "work", "hello", "--wait", check=True)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir",
                               str(supervisor.runtime_dir), *command],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, env=supervisor.env)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141


def _failed_tries(bot, what: str) -> int:
    return bot.log().count(what)


def test_the_bot_waits_for_telegram_at_start_and_serves_when_it_comes_back(make_supervisor, telegram,
                                                                           bot_env) -> None:
    sup = make_supervisor().start()
    telegram.go_down()
    bot = bot_env(sup)
    wait_for(lambda: _failed_tries(bot, "cannot reach Telegram at") >= 2, 60, what="two failed tries")
    assert bot.proc is not None and bot.proc.poll() is None, bot.log()
    telegram.message(USER, "/new work")  # (sent while the bot cannot reach Telegram)
    telegram.come_back()
    telegram.wait_for_text(lambda t: "created" in t)
    assert "Traceback" not in bot.log()
    assert "Telegram answers again" in bot.log()


def test_the_bot_outlives_a_telegram_outage_and_loses_nothing(make_supervisor, telegram, bot_env) -> None:
    sup = make_supervisor().start()
    bot = bot_env(sup)
    telegram.message(USER, "/new work")
    telegram.wait_for_text(lambda t: "created" in t)
    telegram.go_down()
    wait_for(lambda: _failed_tries(bot, "getUpdates failed") >= 2, 60, what="two failed polls")
    telegram.message(USER, "asked during the outage")
    telegram.come_back()
    telegram.wait_for_text(lambda t: "echo: asked during the outage" in t)
    sup.wait_consumer("telegram-bot")  # every event handed over: nothing more will come
    assert sum("echo: asked during the outage" in t for t in telegram.texts()) == 1
    assert [c["text"] for c in sup.claude_received() if "outage" in str(c.get("text"))] == ["asked during the outage"]
    assert "Traceback" not in bot.log()


def test_a_token_revoked_while_the_bot_runs_stops_it_with_the_distinct_status(make_supervisor, telegram,
                                                                             bot_env) -> None:
    sup = make_supervisor().start()
    bot = bot_env(sup)
    telegram.message(USER, "/new work")
    telegram.wait_for_text(lambda t: "created" in t)
    telegram.revoked = True
    assert bot.proc is not None
    assert bot.proc.wait(60) == EXIT_TOKEN_REJECTED
    assert "Telegram rejected the bot token" in bot.log()
    assert "Traceback" not in bot.log() and "TEST-token" not in bot.log()


def check_config(tmp_path: Path, content: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str],
                                                                                 dict[str, tuple[str, str]]]:
    """Run check-config; its lines as key -> (value, where it came from)."""
    config = tmp_path / "config.toml"
    config.write_text(content)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISORD_CLAUDE_", "TELEGRAM_"))}
    done = subprocess.run([sys.executable, "-m", "supervisord_claude", "check-config", "--config", str(config),
                           "--claude-bin", "/bin/true", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    lines = {}
    for line in done.stdout.splitlines():
        key, _, rest = line.partition("  ")
        value, _, origin = rest.strip().rpartition("  ")
        lines[key.strip()] = (value.strip(), origin.strip())
    return done, lines


@pytest.mark.system  # runs a program
def test_check_config_shows_each_value_and_where_it_came_from(tmp_path: Path) -> None:
    token = "7000000001:AAH-a-real-looking-bot-token-abcdefghij"
    done, lines = check_config(
        tmp_path, 'idle_timeout = 900\nmodel = "m"\nruntime_dir = "/tmp/from-file"\n[telegram]\nallowed_users = [1]\n',
        "--state-dir", str(tmp_path / "state"),
        SUPERVISORD_CLAUDE_ORPHAN_TIMEOUT="60", TELEGRAM_BOT_TOKEN=token, TELEGRAM_ALLOWED_USERS="42,43")
    assert done.returncode == 0, done.stderr
    assert lines["state_dir"] == (str(tmp_path / "state"), "flag --state-dir")
    assert lines["orphan_timeout"] == ("60 s", "environment SUPERVISORD_CLAUDE_ORPHAN_TIMEOUT")
    assert lines["runtime_dir"] == ("/tmp/from-file", "file")
    assert lines["idle_timeout"] == ("900 s", "file")
    assert lines["permission_timeout"] == ("600 s", "default")
    # what the bot will use: its environment over the file
    assert lines["telegram.allowed_users"] == ("42, 43", "environment TELEGRAM_ALLOWED_USERS")
    assert lines["telegram.token"][1] == "environment TELEGRAM_BOT_TOKEN"
    assert "masked" in lines["telegram.token"][0] and token not in done.stdout + done.stderr


@pytest.mark.parametrize("content, env", [
    ('[telegram]\ntoken = "not-a-token"\n', {}),
    ("", {"TELEGRAM_BOT_TOKEN": "not-a-token"}),
])
@pytest.mark.system  # runs a program
def test_check_config_refuses_what_cannot_be_a_bot_token(tmp_path: Path, content: str, env: dict[str, str]) -> None:
    done, _ = check_config(tmp_path, content, **env)
    assert done.returncode == 1
    assert "telegram.token: not a bot token" in done.stderr and "not-a-token" not in done.stderr


@pytest.mark.system  # runs a program
def test_check_config_refuses_an_allowlist_the_bot_would_refuse(tmp_path: Path) -> None:
    done, _ = check_config(tmp_path, "", TELEGRAM_ALLOWED_USERS="42,me")
    assert done.returncode == 1 and "TELEGRAM_ALLOWED_USERS: 'me'" in done.stderr


def test_claudectl_takes_the_runtime_dir_from_the_config_file(supervisor, tmp_path: Path) -> None:
    """One precedence for every program: flag > environment > file > default. claudectl
    ignored the file's runtime_dir and talked to another supervisor (or none)."""
    config = tmp_path / "config.toml"
    config.write_text(f'runtime_dir = "{supervisor.runtime_dir}"\n')
    supervisor.ctl("new", "work", check=True)
    env = {k: v for k, v in supervisor.env.items() if k not in ("SUPERVISORD_CLAUDE_RUNTIME_DIR",
                                                                "SUPERVISORD_CLAUDE_CONFIG")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")  # (the default: nothing runs there)

    def ctl(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", *args], capture_output=True,
                              text=True, timeout=60, env={**env, **more})

    for done in (ctl("ls", "--config", str(config)), ctl("ls", SUPERVISORD_CLAUDE_CONFIG=str(config))):
        assert done.returncode == 0 and "work" in done.stdout, done.stderr
    elsewhere = tmp_path / "elsewhere"
    done = ctl("ls", "--config", str(config), SUPERVISORD_CLAUDE_RUNTIME_DIR=str(elsewhere))
    assert done.returncode == 1 and str(elsewhere) in done.stderr  # the environment wins over the file
    done = ctl("ls", "--config", str(config), "--runtime-dir", str(elsewhere))
    assert done.returncode == 1 and str(elsewhere) in done.stderr  # the flag wins over both
    done = ctl("ls", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 1 and "missing.toml does not exist" in done.stderr


@pytest.mark.parametrize("module, names", [
    ("supervisord_claude", ["SUPERVISORD_CLAUDE_RUNTIME_DIR", "SUPERVISORD_CLAUDE_CONFIG", "TELEGRAM_BOT_TOKEN"]),
    ("supervisord_claude.ctl", ["SUPERVISORD_CLAUDE_RUNTIME_DIR", "SUPERVISORD_CLAUDE_CONFIG"]),
    ("bot", ["TELEGRAM_BOT_TOKEN", "TELEGRAM_ALLOWED_USERS", "SUPERVISORD_CLAUDE_RUNTIME_DIR"]),
])
@pytest.mark.system  # runs a program
def test_help_names_the_environment_variables(module: str, names: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for name in names:
        assert name in done.stdout, (name, done.stdout)


def test_a_session_whose_directory_was_removed_names_it_and_claudectl_cd_moves_it(supervisor,
                                                                                 tmp_path: Path) -> None:
    gone = tmp_path / "project"
    gone.mkdir()
    supervisor.ctl("new", "work", "--cwd", str(gone), check=True)
    gone.rmdir()
    done = supervisor.ctl("send", "work", "hello", "--wait")
    assert done.returncode == 1
    assert str(gone) in done.stderr and "does not exist" in done.stderr and "claudectl cd work" in done.stderr
    assert supervisor.session("work")["state"] == "suspended"  # nothing broken, nothing started
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = supervisor.ctl("cd", "work", str(elsewhere), check=True)
    assert str(elsewhere) in moved.stdout
    done = supervisor.ctl("send", "work", "hello again", "--wait", check=True)
    assert "echo: hello again" in done.stdout
    assert supervisor.claude_starts()[-1]["cwd"] == str(elsewhere)  # Claude runs there



def test_a_stale_consumer_stops_holding_events_back_and_can_be_removed(make_supervisor) -> None:
    retention = 4.0  # seconds
    sup = make_supervisor(config=f"event_retention_days = {retention / 86400}\n").start()
    sup.ctl("new", "work", check=True)
    sup.ctl("send", "work", "first", "--wait", check=True)

    async def ack_the_first_event_and_leave() -> None:
        async with AsyncClient(sup.runtime_dir) as client:
            sub = await client.subscribe(consumer="gone-for-good", after=0)
            event = await sub.next(timeout=30)
            assert event is not None
            await sub.ack(event["id"])

    asyncio.run(ack_the_first_event_and_leave())
    acked_at = time.time()
    sup.ctl("send", "work", "second", "--wait", check=True)
    # the condition itself is an age: the cursor (and the events) older than the retention
    wait_for(lambda: time.time() > acked_at + retention + 1, 30, what="the retention period to pass")
    listed = json.loads(sup.ctl("consumers", "--json", check=True).stdout)["consumers"]
    assert [(c["consumer"], c["position"], c["stale"]) for c in listed] == [("gone-for-good", 1, True)]
    sup.ctl("restart", check=True)  # (it prunes at start, then hourly)
    wait_for(lambda: "consumer gone-for-good has not acked anything" in sup.log(), 60, what="the stale cursor logged")
    wait_for(lambda: "pruned" in sup.log(), 60, what="old events pruned")
    with sqlite3.connect(f"file:{sup.state_dir / 'supervisor.sqlite3'}?mode=ro", uri=True) as db:
        # every event older than the retention went, not only the one the cursor had acked
        assert db.execute("SELECT count(*) FROM event_runs WHERE session='work' AND ts < ?", (acked_at,)).fetchone()[0] == 0
    assert sup.ctl("consumers", "--remove", "gone-for-good", check=True).returncode == 0
    assert "no named consumers" in sup.ctl("consumers", check=True).stdout
    again = sup.ctl("consumers", "--remove", "gone-for-good")
    assert again.returncode == 1 and "no consumer named 'gone-for-good'" in again.stderr


def test_send_wait_stream_across_a_restart_prints_the_answer_once(make_supervisor, tmp_path: Path) -> None:
    """The new supervisor holds only the text written since it started: what claudectl
    had printed must not be printed again, nor a piece of the answer in the wrong place."""
    deltas = tmp_path / "deltas"
    sup = make_supervisor(env={"FAKE_CLAUDE_DELTA_LOG": str(deltas)}).start()
    sup.ctl("new", "work", check=True)
    text = "stream:12 " + "a long story told across a restart, " * 6
    sender = subprocess.Popen([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup.runtime_dir),
                               "send", "work", text, "--wait", "--stream"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sup.env)
    try:
        wait_for(lambda: deltas.exists() and deltas.read_text().strip(), 60, what="Claude to start writing")
        sup.ctl("restart", check=True)
        out, err = sender.communicate(timeout=120)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    assert sender.returncode == 0, err
    answer = next(r for r in sup.claude_received() if "stream:12" in r["text"])["text"]
    assert out.count("echo:") == 1, out
    assert out.startswith("echo: " + answer), out


def test_a_bot_waiting_for_telegram_stops_at_once_on_sigterm(make_supervisor, telegram, bot_env) -> None:
    sup = make_supervisor().start()
    telegram.go_down()
    bot = bot_env(sup)
    wait_for(lambda: _failed_tries(bot, "cannot reach Telegram at") >= 1, 60, what="a failed try")
    bot.stop()  # (fails the test unless it exits 0 on SIGTERM)
    assert bot.proc is not None and bot.proc.returncode == 0
    assert "Traceback" not in bot.log()
