"""Files across machines: a session ``work@gpu`` on a second supervisor reached through a
real sshd (``tests/sshd.py``). Uploads land in its uploads dir there, ``/get``, ``/ls``,
``/cd`` and its outbox work as for a local session — every byte over the protocol, the
bot touching no file of gpu's on its own disk — and voice (transcribed here) reaches it
as text."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocol import FILE_CHUNK_BYTES

from .conftest import USER, SupervisorProcess, wait_for
from .sshd import Sshd
from .test_bot_app import say
from .test_hosts_bot import sshd  # noqa: F401 (a fixture)

pytestmark = pytest.mark.system


@pytest.fixture
def gpu(sshd: Sshd,  # noqa: F811
        make_supervisor: Callable[..., SupervisorProcess], telegram: Any, bot_env: Any,
        tmp_path: Path) -> tuple[SupervisorProcess, SupervisorProcess, Any]:
    """(local supervisor, remote supervisor "gpu", fake Telegram), the bot running and the
    chat's session ``work@gpu``. gpu takes attachments of at most 2 MiB; the bot
    transcribes voice with a script of this machine's."""
    remote = make_supervisor(config="max_attachment_mib = 2\n").start()
    transcriber = tmp_path / "transcribe"
    transcriber.write_text('#!/bin/sh\nprintf "heard %s bytes\\n" "$(wc -c < "$1" | tr -d " ")"\n')
    transcriber.chmod(0o755)
    command = f"{shlex.quote(sys.executable)} -m supervisord_claude"
    config = (f'[telegram]\nvoice_command = ["{transcriber}"]\n'
              f'[hosts.gpu]\nssh = "remote"\ncommand = "{command}"\nruntime_dir = "{remote.runtime_dir}"\n')
    local = make_supervisor(config=config, env=sshd.env).start()
    bot_env(local)
    say(telegram, "/new work@gpu", "created on gpu")
    return local, remote, telegram


def remote_dir(remote: SupervisorProcess) -> Path:
    return Path(remote.session("work")["cwd"])


def test_a_photo_and_a_document_sent_to_a_remote_session_land_in_its_uploads_there(gpu: Any) -> None:
    local, remote, api = gpu
    api.photo(USER, b"\xff\xd8\xff\xe0fake-jpeg", caption="what is this")
    assert "[images: 1]" in api.wait_for_text(lambda t: t.startswith("echo: what is this"), chat_id=USER)["text"]
    # bigger than one request carries: it crosses in pieces
    content = os.urandom(2 * FILE_CHUNK_BYTES + 1000)
    api.document(USER, content, "data.bin", caption="read it")
    reply = api.wait_for_text(lambda t: t.startswith("echo: [Attached file saved at"), chat_id=USER)["text"]
    told = Path(reply.split("saved at ")[1].split("]")[0])
    # Claude on gpu was told the path of gpu's copy, taken at send from gpu's uploads dir
    assert told.parent.parent == remote.state_dir / "attachments" / "work"
    uploads = remote_dir(remote) / "uploads"
    assert (uploads / told.name).read_bytes() == content and told.read_bytes() == content
    assert [p for p in uploads.iterdir() if p.name.endswith(".part")] == []
    # nothing of it on this machine's side
    assert not (local.state_dir / "attachments").exists() or not any((local.state_dir / "attachments").iterdir())
    assert [s["name"] for s in local.request("list", all=True)["sessions"]] == []


def test_a_file_too_big_for_the_remote_supervisor_gets_a_clear_message_and_nothing_is_sent(gpu: Any) -> None:
    _, remote, api = gpu
    api.document(USER, os.urandom(3 * 1024 * 1024), "big.bin", caption="too much")
    refusal = api.wait_for_text(lambda t: t.startswith("Could not save"), chat_id=USER)["text"]
    assert "max_attachment_mib" in refusal and refusal.endswith("Nothing was sent.")
    api.document(USER, b"x", "huge.bin", file_size=50 * 1024 * 1024)  # over what the bot may download
    api.wait_for_text(lambda t: t.startswith("File too large"), chat_id=USER)
    assert remote.claude_received() == []
    assert list((remote_dir(remote) / "uploads").iterdir()) == []


def test_get_fetches_a_file_of_the_remote_session_and_nothing_from_outside(gpu: Any, tmp_path: Path) -> None:
    _, remote, api = gpu
    cwd = remote_dir(remote)
    content = os.urandom(FILE_CHUNK_BYTES + 5000)  # in pieces, as a document
    (cwd / "model.bin").write_bytes(content)
    (cwd / "escape").symlink_to(tmp_path)
    api.message(USER, "/get model.bin")
    doc = wait_for(lambda: api.documents[-1] if api.documents else None, 60, what="model.bin from gpu")
    assert doc["filename"] == "model.bin" and doc["content"] == content
    for path in ("../../../../etc/passwd", "escape/x", "/etc/passwd"):
        assert "outside the session's directory" in say(api, f"/get {path}", "📎")["text"]
    assert say(api, "/get missing.txt", "📎")["text"] == "📎 missing.txt cannot be read (No such file or directory)."
    assert len(api.documents) == 1


def test_ls_and_cd_work_on_the_remote_sessions_directory(gpu: Any) -> None:
    _, remote, api = gpu
    cwd = remote_dir(remote)
    (cwd / "notes.md").write_text("n")
    (cwd / "sub").mkdir()
    listing = say(api, "/ls", "notes.md")["text"]
    assert listing.startswith(f"{cwd}:") and "sub/" in listing
    assert "outside the allowed directories" in say(api, "/ls /etc", "⚠️")["text"]
    assert "does not exist" in say(api, "/cd nowhere", "⚠️")["text"]
    pick = say(api, "/cd", "or pick one:")  # gpu's subdirectories, as buttons
    assert "📁 sub" in [row[0]["text"] for row in pick["reply_markup"]["inline_keyboard"]]
    asked = say(api, "/cd sub", "Move session 'work@gpu'")
    [[button]] = asked["reply_markup"]["inline_keyboard"]
    api.press(USER, button["callback_data"], asked["message_id"])
    api.wait_for_text(lambda t: t.startswith("Session 'work@gpu' now works in"), chat_id=USER)
    assert remote.session("work")["cwd"] == str(cwd / "sub")
    say(api, "there", lambda t: t.startswith("echo: there"))
    assert remote.claude_starts()[-1]["cwd"] == str(cwd / "sub")


def test_a_file_claude_leaves_in_the_remote_outbox_reaches_the_chat_once(gpu: Any) -> None:
    _, remote, api = gpu
    say(api, "sendfile:report.txt sendfile:plot.png", lambda t: t.startswith("echo: sendfile"))
    sent = wait_for(lambda: api.documents if len(api.documents) >= 2 else None, 60, what="both files from gpu")
    by_name = {d["filename"]: d for d in sent}
    assert by_name["report.txt"]["kind"] == "document" and by_name["report.txt"]["content"] == b"file report.txt\n"
    assert by_name["plot.png"]["kind"] == "photo"
    outbox = remote_dir(remote) / "outbox"
    wait_for(lambda: sorted(p.name for p in (outbox / "sent").iterdir()) == ["plot.png", "report.txt"], 30,
             what="the sent files moved aside on gpu")
    say(api, "again", lambda t: t.startswith("echo: again"))
    remote.wait_consumer("telegram-bot")
    assert len(api.documents) == 2  # each once


def test_a_voice_note_to_a_remote_session_is_transcribed_here_and_sent_as_text(gpu: Any) -> None:
    _, remote, api = gpu
    f = api.add_file(b"x" * 321, "voice1")
    api.message(USER, "", voice={**f, "duration": 2, "mime_type": "audio/ogg"})
    api.wait_for_text(lambda t: t == "🎤 heard 321 bytes", chat_id=USER)
    api.wait_for_text(lambda t: t.startswith("echo: heard 321 bytes"), chat_id=USER)
    assert remote.wait_received("heard 321 bytes")


def test_a_file_sent_while_its_host_is_down_is_refused_plainly_and_never_sent_later(
        gpu: Any, sshd: Sshd) -> None:  # noqa: F811
    _, remote, api = gpu
    say(api, "first", lambda t: t.startswith("echo: first"))
    sshd.stop()
    api.document(USER, b"col1,col2\n", "data.csv", caption="while gpu is down")
    told = api.wait_for_text(lambda t: "The file was not sent" in t, chat_id=USER, timeout=90)["text"]
    assert "host gpu (remote) is unreachable" in told
    sshd.start()
    say(api, "after", lambda t: t.startswith("echo: after"), timeout=90)
    assert [r for r in remote.claude_received() if "while gpu is down" in r["text"]] == []
    assert not (remote_dir(remote) / "uploads").exists() or list((remote_dir(remote) / "uploads").iterdir()) == []
