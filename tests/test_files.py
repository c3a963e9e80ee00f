"""The file ops of a session's directory (``supervisor/_files``: ``put_file``,
``read_file``, ``list_dir``, ``outbox_sent``) against the supervisor's real core,
in-process: their bounds, their confinement to the session's directory, and clear errors
for bad input. What the bot does with them, locally and through ssh, is in
``test_bot_files`` and ``test_hosts_bot``."""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from protocol import FILE_CHUNK_BYTES, MAX_LIST_ENTRIES, ErrorCode, ValidationError, validate_request
from supervisord_claude._errors import OpError

from .test_lifecycle import Harness


@pytest.fixture
def core(tmp_path: Path) -> Any:
    harness = Harness(tmp_path)
    harness.op("create", session="alpha")
    yield harness
    harness.store.close()


def cwd_of(core: Harness) -> Path:
    return Path(core.op("status", session="alpha")["cwd"])


def refused(core: Harness, op: str, **args: Any) -> tuple[str, str]:
    """(code, message) of a request that is refused, by validation or by the op."""
    with pytest.raises((OpError, ValidationError)) as info:
        core.op(op, **args)
    return str(info.value.code), info.value.message


def test_a_file_sent_in_pieces_lands_in_uploads_and_send_takes_its_path(core: Harness) -> None:
    content = os.urandom(2 * FILE_CHUNK_BYTES + 123)
    pieces = [content[i:i + FILE_CHUNK_BYTES] for i in range(0, len(content), FILE_CHUNK_BYTES)]
    for i, piece in enumerate(pieces[:-1]):
        assert core.op("put_file", session="alpha", name="data.bin", data=piece, offset=i * FILE_CHUNK_BYTES,
                       more=True) == {"size": (i + 1) * FILE_CHUNK_BYTES}
    uploads = cwd_of(core) / "uploads"
    assert not (uploads / "data.bin").exists()  # Claude never sees half a file
    done = core.op("put_file", session="alpha", name="data.bin", data=pieces[-1], offset=2 * FILE_CHUNK_BYTES)
    assert done == {"path": str(uploads / "data.bin"), "size": len(content)}
    assert (uploads / "data.bin").read_bytes() == content
    assert [p.name for p in uploads.iterdir()] == ["data.bin"]  # no piece left behind
    sent = core.op("send", session="alpha", text="look", attachments=[done["path"]])
    [copy] = core.store.get_message(sent["message_id"]).attachments
    assert Path(copy).read_bytes() == content


def test_a_piece_sent_again_replaces_itself_and_a_missing_piece_is_refused(core: Harness) -> None:
    core.op("put_file", session="alpha", name="a.txt", data=b"hello ", more=True)
    core.op("put_file", session="alpha", name="a.txt", data=b"HELLO ", more=True)  # a retry of the first
    code, message = refused(core, "put_file", session="alpha", name="a.txt", data=b"x", offset=100)
    assert code == ErrorCode.BAD_REQUEST and "a piece of a.txt is missing: it has 6 bytes so far" in message
    core.op("put_file", session="alpha", name="a.txt", data=b"world", offset=6)
    assert (cwd_of(core) / "uploads" / "a.txt").read_bytes() == b"HELLO world"


def test_an_upload_over_the_attachment_limit_is_refused_and_leaves_nothing(core: Harness) -> None:
    limit = core.core.ops.config.max_attachment_bytes
    core.op("put_file", session="alpha", name="big.bin", data=b"x" * 100, more=True)
    code, message = refused(core, "put_file", session="alpha", name="big.bin", data=b"x" * 100, offset=limit - 50)
    assert code == ErrorCode.TOO_LARGE and "max_attachment_mib" in message and "nothing was saved" in message
    assert list((cwd_of(core) / "uploads").iterdir()) == []
    # one request carries at most FILE_CHUNK_BYTES: more is refused before any op runs
    with pytest.raises(ValidationError) as info:
        validate_request({"v": 1, "id": 1, "op": "put_file", "session": "alpha", "name": "x",
                          "data": b"x" * (FILE_CHUNK_BYTES + 1)})
    assert info.value.code == ErrorCode.TOO_LARGE


def _pieces_left(uploads: Path, name: str) -> list[str]:
    """The hidden partial files of the upload of ``name`` still in ``uploads``."""
    return [p.name for p in uploads.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".part")]


def test_an_upload_abandoned_mid_way_is_cleared_at_the_next_upload_and_no_file_of_the_user_is(
        core: Harness) -> None:
    """A client killed between two pieces (the bot, claudectl) leaves a hidden partial file:
    the next upload to that session removes it once it has not been written for a while;
    an upload still under way, and every file of the user's, stay."""
    uploads = cwd_of(core) / "uploads"
    core.op("put_file", session="alpha", name="killed.bin", data=b"first piece", more=True)
    core.op("put_file", session="alpha", name="going.bin", data=b"first piece", more=True)
    [abandoned] = _pieces_left(uploads, "killed.bin")
    hours_ago = time.time() - 2 * 3600
    os.utime(uploads / abandoned, (hours_ago, hours_ago))
    users = [".notes.part", "draft.part", ".x.supervisord-claude"]  # the user's own, named alike
    for name in users:
        (uploads / name).write_text("mine")
        os.utime(uploads / name, (hours_ago, hours_ago))
    core.op("put_file", session="alpha", name="next.txt", data=b"hello")
    assert _pieces_left(uploads, "killed.bin") == []
    assert all((uploads / name).read_text() == "mine" for name in users)
    # the upload under way goes on
    done = core.op("put_file", session="alpha", name="going.bin", data=b" and the last", offset=11)
    assert (uploads / "going.bin").read_bytes() == b"first piece and the last" and done["size"] == 24
    assert sorted(p.name for p in uploads.iterdir()) == sorted(["going.bin", "next.txt", *users])


def test_the_longest_name_an_upload_may_have_still_fits_its_partial_files_name(core: Harness) -> None:
    longest = "é" * 100  # 200 bytes in UTF-8, the most put_file takes
    core.op("put_file", session="alpha", name=longest, data=b"piece", more=True)
    done = core.op("put_file", session="alpha", name=longest, data=b" last", offset=5)
    assert Path(done["path"]).read_bytes() == b"piece last"


def test_an_upload_that_cannot_be_saved_leaves_no_partial_file(core: Harness) -> None:
    uploads = cwd_of(core) / "uploads"
    (uploads / "taken").mkdir(parents=True)  # its name is a directory's: the last rename fails
    core.op("put_file", session="alpha", name="taken", data=b"piece", more=True)
    code, message = refused(core, "put_file", session="alpha", name="taken", data=b" last", offset=5)
    assert code == ErrorCode.BAD_REQUEST and "cannot save taken" in message and "nothing was saved" in message
    assert _pieces_left(uploads, "taken") == [] and sorted(p.name for p in uploads.iterdir()) == ["taken"]


def test_a_piece_that_cannot_be_written_leaves_no_partial_file(core: Harness) -> None:
    """A disk that refuses the bytes (here: the largest file this process may write) fails
    the upload at once, and nothing of it is kept."""
    uploads = cwd_of(core) / "uploads"
    core.op("put_file", session="alpha", name="big.bin", data=b"x" * 1000, more=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (EFBIG, not a signal that kills)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, hard))
    try:
        code, message = refused(core, "put_file", session="alpha", name="big.bin", data=b"x" * 1000,
                                offset=1000, more=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert code == ErrorCode.STORAGE and "cannot save big.bin" in message and "nothing was saved" in message
    assert _pieces_left(uploads, "big.bin") == []


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "..", "", "x" * 201, "nul\0byte"])
def test_an_upload_name_must_be_one_plain_file_name(core: Harness, name: str) -> None:
    code, _ = refused(core, "put_file", session="alpha", name=name, data=b"x")
    assert code == ErrorCode.BAD_REQUEST
    assert not (cwd_of(core).parent / "escape").exists()


def test_bad_input_to_the_file_ops_gets_a_clear_error(core: Harness) -> None:
    assert refused(core, "put_file", session="alpha", name="a", data="text, not bytes")[0] == ErrorCode.BAD_REQUEST
    assert refused(core, "read_file", session="alpha", path="a", length=FILE_CHUNK_BYTES + 1)[0] \
        == ErrorCode.BAD_REQUEST
    assert refused(core, "list_dir", session="alpha", within=["relative"])[0] == ErrorCode.BAD_REQUEST
    assert refused(core, "read_file", session="nobody", path="a") == (ErrorCode.NOT_FOUND,
                                                                       "no session named 'nobody'")
    core.op("archive", session="alpha")
    assert refused(core, "put_file", session="alpha", name="a", data=b"x")[0] == ErrorCode.ARCHIVED


def test_uploads_that_lead_out_of_the_session_are_refused_and_a_link_named_like_the_file_is_replaced(
        core: Harness, tmp_path: Path) -> None:
    cwd = cwd_of(core)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep me")
    (cwd / "uploads").mkdir()
    (cwd / "uploads" / "victim").symlink_to(outside / "victim")
    core.op("put_file", session="alpha", name="victim", data=b"new")
    assert (outside / "victim").read_text() == "keep me"  # the link was replaced, not written through
    assert (cwd / "uploads" / "victim").read_bytes() == b"new"
    (cwd / "uploads" / "victim").unlink()
    (cwd / "uploads").rmdir()
    (cwd / "uploads").symlink_to(outside)
    code, message = refused(core, "put_file", session="alpha", name="x", data=b"x")
    assert code == ErrorCode.BAD_REQUEST and "leads out of the directory of session 'alpha'" in message
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_read_file_gives_a_file_of_the_session_in_pieces_and_nothing_from_outside(core: Harness,
                                                                                  tmp_path: Path) -> None:
    cwd = cwd_of(core)
    content = os.urandom(FILE_CHUNK_BYTES + 10)
    (cwd / "sub").mkdir()
    (cwd / "sub" / "data.bin").write_bytes(content)
    first = core.op("read_file", session="alpha", path="sub/data.bin")
    assert first["size"] == len(content) and first["name"] == "data.bin" and len(first["data"]) == FILE_CHUNK_BYTES
    rest = core.op("read_file", session="alpha", path=str(cwd / "sub" / "data.bin"), offset=FILE_CHUNK_BYTES)
    assert first["data"] + rest["data"] == content and rest["mtime_ns"] == first["mtime_ns"]
    assert core.op("read_file", session="alpha", path="sub/data.bin", offset=len(content))["data"] == b""
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (cwd / "escape").symlink_to(secret)
    for path in ("../../../../etc/passwd", "escape", str(secret)):
        assert refused(core, "read_file", session="alpha", path=path) == (
            ErrorCode.BAD_REQUEST, f"{path} is outside the session's directory")
    assert refused(core, "read_file", session="alpha", path="missing.txt") == (
        ErrorCode.NOT_FOUND, "missing.txt cannot be read (No such file or directory)")
    os.mkfifo(cwd / "fifo")  # refused at once, not waited on
    assert refused(core, "read_file", session="alpha", path="fifo") == (ErrorCode.BAD_REQUEST,
                                                                        "fifo is not an ordinary file")
    assert refused(core, "read_file", session="alpha", path="sub")[1] == "sub is not an ordinary file"


def test_list_dir_names_entries_within_the_allowed_directories(core: Harness, tmp_path: Path) -> None:
    cwd = cwd_of(core)
    (cwd / "b.txt").write_text("bb")
    (cwd / "A.txt").write_text("a")
    (cwd / "zdir").mkdir()
    (cwd / "dirlink").symlink_to(cwd / "zdir")
    (tmp_path / "elsewhere").mkdir()
    (cwd / "out").symlink_to(tmp_path / "elsewhere")
    listing = core.op("list_dir", session="alpha")
    assert listing["path"] == str(cwd.resolve()) and listing["total"] == 5
    assert [(e["name"], e["kind"], e["dir"]) for e in listing["entries"]] == [
        ("dirlink", "link", True), ("out", "link", True), ("zdir", "dir", True), ("A.txt", "file", False),
        ("b.txt", "file", False)]
    assert listing["entries"][-1]["size"] == 2
    # by default: the session's directory and the sessions dir; a link out of them is refused
    assert core.op("list_dir", session="alpha", path="..")["path"] == str(cwd.parent.resolve())
    for path in ("out", "/etc", "../.."):
        code, message = refused(core, "list_dir", session="alpha", path=path)
        assert code == ErrorCode.BAD_REQUEST and "is outside the allowed directories" in message
    # the client may name the directories (the bot's roots); relative paths still start at the session's
    assert core.op("list_dir", session="alpha", path="out", within=[str(tmp_path)])["path"] == \
        str((tmp_path / "elsewhere").resolve())
    assert refused(core, "list_dir", session="alpha", path="A.txt")[1] == f"{cwd.resolve() / 'A.txt'} is not a directory"
    assert refused(core, "list_dir", session="alpha", path="nowhere")[0] == ErrorCode.NOT_FOUND
    # without a session: from the first allowed directory
    assert core.op("list_dir", path="zdir", within=[str(cwd)])["path"] == str((cwd / "zdir").resolve())


def test_list_dir_names_at_most_max_list_entries(core: Harness) -> None:
    many = cwd_of(core) / "many"
    many.mkdir()
    for i in range(MAX_LIST_ENTRIES + 5):
        (many / f"f{i:05}").touch()
    listing = core.op("list_dir", session="alpha", path="many")
    assert listing["total"] == MAX_LIST_ENTRIES + 5 and len(listing["entries"]) == MAX_LIST_ENTRIES
    assert listing["entries"][0]["name"] == "f00000"


def test_outbox_sent_moves_a_file_aside_once(core: Harness) -> None:
    outbox = cwd_of(core) / "outbox"
    outbox.mkdir()
    (outbox / "report.txt").write_text("r")
    assert core.op("outbox_sent", session="alpha", name="report.txt") == {"path": str(outbox / "sent" / "report.txt")}
    assert (outbox / "sent" / "report.txt").read_text() == "r" and not (outbox / "report.txt").exists()
    code, message = refused(core, "outbox_sent", session="alpha", name="report.txt")
    assert code == ErrorCode.NOT_FOUND and "not in the outbox of session 'alpha'" in message
    assert refused(core, "outbox_sent", session="alpha", name="../x")[0] == ErrorCode.BAD_REQUEST
