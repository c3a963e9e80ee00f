"""One bot drives every host: sessions of another machine are ``name@host``, reached
through a real sshd (``tests/sshd.py``) in front of a second supervisor, while the local
supervisor's sessions go on beside them."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import USER, SupervisorProcess, wait_for
from .sshd import Sshd, children_named, skip_without_sshd
from .test_bot_app import say


@pytest.fixture
def sshd(tmp_base: Path) -> Iterator[Sshd]:
    skip_without_sshd()
    server = Sshd(tmp_base / "ssh").start()
    yield server
    left = server.stop_masters()
    server.stop()
    assert not left, f"ssh masters outlived the test after ssh -O exit: {left}"


@pytest.fixture
def two_hosts(sshd: Sshd, make_supervisor: Callable[..., SupervisorProcess], telegram: Any,
              bot_env: Any) -> tuple[SupervisorProcess, SupervisorProcess, Any, Any]:
    """(local supervisor, remote supervisor "gpu", fake Telegram, the bot)."""
    remote = make_supervisor().start()
    command = f"{shlex.quote(sys.executable)} -m supervisord_claude"
    config = (f'[hosts.gpu]\nssh = "remote"\ncommand = "{command}"\nruntime_dir = "{remote.runtime_dir}"\n'
              f'[hosts.down]\nssh = "wrongkey"\ncommand = "{command}"\n')
    local = make_supervisor(config=config, env=sshd.env).start()
    bot = bot_env(local)
    return local, remote, telegram, bot


def remote_answers(api: Any, text: str) -> list[str]:
    return [t for t in api.texts(USER) if f"echo: {text}" in t]


def test_a_session_on_another_host_is_named_name_at_host_and_talks_like_a_local_one(two_hosts: Any) -> None:
    local, remote, api, _ = two_hosts
    say(api, "/new work@gpu", "created on gpu")
    assert remote.session("work")["state"] == "suspended"
    assert local.request("list")["sessions"] == []  # it lives on gpu only
    say(api, "hello from the chat", lambda t: t.startswith("echo: hello from the chat"))
    assert remote.wait_received("hello from the chat")
    say(api, "/status", "work@gpu")
    # a local session beside it, then back to the remote one by /switch
    say(api, "/new here", "created")
    say(api, "local words", lambda t: t.startswith("echo: local words"))
    assert local.wait_received("local words")
    say(api, "/switch work@gpu", "Switched to session 'work@gpu'")
    say(api, "again", lambda t: t.startswith("echo: again"))
    assert remote.wait_received("again")
    # gpu's supervisor keeps the bot's cursor of gpu's events: acked there, as delivered
    remote.wait_consumer("telegram-bot")
    listing = say(api, "/sessions", "gpu")["text"]
    assert "local" in listing and "here" in listing and "work@gpu" in listing
    # a host that is down is one line saying why, and delays no one
    assert "down: unreachable" in listing and "Permission denied (publickey)" in listing
    hosts = say(api, "/hosts", "gpu")["text"]
    assert "local (this machine): up" in hosts and "gpu is up (supervisord-claude" in hosts
    assert "host down (wrongkey) is unreachable" in hosts
    # files are gpu's: /ls lists work@gpu's directory there (tests/test_hosts_files.py)
    assert say(api, "/ls", ":")["text"].startswith(remote.session("work")["cwd"] + ":")


def test_the_bots_ssh_killed_mid_answer_the_answer_arrives_once(two_hosts: Any, tmp_base: Path) -> None:
    _, remote, api, bot = two_hosts
    gate = tmp_base / "gate"
    say(api, "/new work@gpu", "created on gpu")
    api.message(USER, f"waitfile:{gate} long job")
    remote.wait_received("long job")
    [ssh, *_] = wait_for(lambda: [p for p in children_named(bot.proc.pid, "ssh")], what="the bot's ssh to gpu")
    os.kill(ssh, signal.SIGKILL)
    gate.touch()  # the answer is written while the link is down
    api.wait_for_text(lambda t: t.startswith(f"echo: waitfile:{gate} long job"), chat_id=USER, timeout=90)
    wait_for(lambda: children_named(bot.proc.pid, "ssh"), what="the bot's ssh again")
    # the chat goes on, and the answer came once
    say(api, "after", lambda t: t.startswith("echo: after"))
    assert len(remote_answers(api, f"waitfile:{gate} long job")) == 1


def test_a_message_sent_while_sshd_is_stopped_waits_without_delaying_others_and_arrives_once(
        two_hosts: Any, sshd: Sshd) -> None:
    local, remote, api, _ = two_hosts
    say(api, "/new here", "created")
    say(api, "/new work@gpu", "created on gpu")
    say(api, "first", lambda t: t.startswith("echo: first"))
    sshd.stop()
    told = say(api, "sent while gpu is down", lambda t: "is kept and will be sent once it is back" in t)
    assert "host gpu (remote) is unreachable" in told["text"]
    # the local session is not held up by the host that is down
    say(api, "/switch here", "Switched")
    say(api, "local meanwhile", lambda t: t.startswith("echo: local meanwhile"))
    assert remote_answers(api, "sent while gpu is down") == []
    sshd.start()
    # (labelled: the chat's session is 'here' now)
    answer = api.wait_for_text(lambda t: "echo: sent while gpu is down" in t, chat_id=USER, timeout=90)
    assert answer["text"].startswith("[work@gpu]")
    received = [r for r in remote.claude_received() if "sent while gpu is down" in r["text"]]
    assert len(received) == 1
    local.wait_consumer("telegram-bot")
    assert len(remote_answers(api, "sent while gpu is down")) == 1


def test_a_prompt_of_a_remote_session_is_answered_with_its_buttons(two_hosts: Any) -> None:
    from .test_bot_prompts import answered, button, edit_of

    _, remote, api, _ = two_hosts
    say(api, "/new work@gpu", "created on gpu")
    prompt = say(api, "needperm now", "Claude wants to run")
    api.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    answered(api, "permission: allow")
    edit_of(api, prompt, "✅ Allowed")  # (the resolution came back from gpu's supervisor)
    resolved = [e for e in remote.events("work") if e["kind"] == "permission_resolved"]
    assert len(resolved) == 1 and resolved[0]["allow"] is True


def test_a_message_held_for_a_down_host_survives_a_bot_restart_and_is_sent_once(
        two_hosts: Any, sshd: Sshd, bot_env: Any) -> None:
    local, remote, api, bot = two_hosts
    say(api, "/new work@gpu", "created on gpu")
    sshd.stop()
    say(api, "kept across a restart", lambda t: "is kept and will be sent once it is back" in t)
    say(api, "/hosts", "gpu")  # a later update, so Telegram was told the held one was handled
    wait_for(lambda: not api.updates, what="Telegram to be told every update was handled")
    bot.kill9()  # the held message is in this machine's supervisor, not in the bot or Telegram
    sshd.start()
    bot_env(local)
    api.wait_for_text(lambda t: "echo: kept across a restart" in t, chat_id=USER, timeout=90)
    assert len([r for r in remote.claude_received() if "kept across a restart" in r["text"]]) == 1
    remote.wait_consumer("telegram-bot")
    assert len(remote_answers(api, "kept across a restart")) == 1


def test_retry_sends_a_failed_message_again_to_its_own_host_when_ids_collide(two_hosts: Any) -> None:
    from .test_bot_delivery import press_button

    local, remote, api, _ = two_hosts
    say(api, "/new here", "created")
    local_report = say(api, "apierror here", "API Error: 400")
    say(api, "/new work@gpu", "created on gpu")
    remote_report = say(api, "apierror on gpu", "API Error: 400")
    # each supervisor numbers its own messages: the two failed messages have the same id
    [local_id] = [e["message_id"] for e in local.events("here") if e["kind"] == "user"]
    [remote_id] = [e["message_id"] for e in remote.events("work") if e["kind"] == "user"]
    assert local_id == remote_id
    local.wait_consumer("telegram-bot")
    remote.wait_consumer("telegram-bot")
    for report, sup, text in ((local_report, local, "apierror here"), (remote_report, remote, "apierror on gpu")):
        shown = wait_for(lambda report=report: next((e for e in reversed(api.edits) if e.get("reply_markup")
                                                     and e["message_id"] == report["message_id"]), None),
                         what="the report with its Retry button")
        press_button(api, shown, "Retry")
        # each goes again to its own host, once
        wait_for(lambda sup=sup, text=text: len([r for r in sup.claude_received() if r["text"] == text]) == 2,
                 what=f"{text!r} sent again")
    assert len([r for r in local.claude_received() if r["text"] == "apierror on gpu"]) == 0
    assert len([r for r in remote.claude_received() if r["text"] == "apierror here"]) == 0


def test_retry_under_a_remote_failure_works_after_a_bot_kill_9(two_hosts: Any, bot_env: Any) -> None:
    from .test_bot_delivery import press_button

    local, remote, api, bot = two_hosts
    say(api, "/new work@gpu", "created on gpu")
    report = say(api, "apierror on gpu", "API Error: 400")
    remote.wait_consumer("telegram-bot")
    shown = wait_for(lambda: next((e for e in reversed(api.edits) if e.get("reply_markup")
                                   and e["message_id"] == report["message_id"]), None),
                     what="the report with its Retry button")
    bot.kill9()  # what Retry sends is kept in this machine's supervisor, under gpu's message id
    bot_env(local)
    press_button(api, shown, "Retry")
    wait_for(lambda: len([r for r in remote.claude_received() if r["text"] == "apierror on gpu"]) == 2,
             what="the retried message to reach gpu's Claude")


#: the bot, its remote hosts' ``hello`` failing once with a TypeError (a bad typed call)
HELLO_FAILS_ONCE = """
import runpy
from bot import _hosts

hello = _hosts.HostClient.hello
failed = []

async def failing_once(self, *args, **kwargs):
    if not failed:
        failed.append(self.host.name)
        raise TypeError("injected: a bad typed call")
    return await hello(self, *args, **kwargs)

_hosts.HostClient.hello = failing_once
runpy.run_module("bot", run_name="__main__", alter_sys=True)
"""


def test_a_host_delivery_that_fails_once_is_logged_and_started_again_and_its_replies_still_arrive(
        two_hosts: Any, bot_env: Any) -> None:
    local, remote, api, bot = two_hosts
    bot.kill9()  # (the same bot, started with the failure injected)
    bot = bot_env(local, command=[sys.executable, "-c", HELLO_FAILS_ONCE])
    say(api, "/new work@gpu", "created on gpu")
    say(api, "after the failure", lambda t: t.startswith("echo: after the failure"))
    assert remote.wait_received("after the failure")
    log = bot.log()
    # said once, with where it came from, and the loop went on
    assert log.count("host gpu's delivery failed; restarting it") == 1
    assert "TypeError: injected: a bad typed call" in log and "Traceback (most recent call last)" in log
