"""claudectl as a script would use it."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SupervisorProcess


def test_ls_is_an_aligned_table_most_recent_first(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "older", check=True)
    supervisor.ctl("new", "newer-one", "--persona", "reviewer", check=True)
    supervisor.ctl("send", "newer-one", "hi", "--wait", check=True)
    header, first, second = supervisor.ctl("ls", check=True).stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "MODE", "PERSONA", "MODEL", "LAST", "ACTIVE", "COST"]
    assert first.split()[:5] == ["🟢", "newer-one", "idle", "ask", "reviewer"]
    assert second.split()[:4] == ["⚪", "older", "new", "ask"]  # never started: "new", not "suspended"
    # aligned on a terminal (the dots are wide: two columns each)
    assert _terminal_column(header, "STATE") == _terminal_column(first, "idle") == _terminal_column(second, "new")
    data = json.loads(supervisor.ctl("--json", "ls", check=True).stdout)
    assert [s["name"] for s in data] == ["newer-one", "older"] and data[0]["live"] is True


def _terminal_column(line: str, token: str) -> int:
    """Where ``token`` starts on a terminal: a wide character (CJK, emoji) takes two columns."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line[:line.index(token)])


def test_ls_stays_aligned_on_a_terminal_with_wide_characters_in_a_name(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "plain", check=True)
    supervisor.ctl("new", "日本語の作業", "--persona", "reviewer", check=True)
    header, *rows = supervisor.ctl("ls", check=True).stdout.splitlines()
    by_name = {row.split()[1]: row for row in rows}
    wide, plain = by_name["日本語の作業"], by_name["plain"]
    for column, wide_cell, plain_cell in (("STATE", "new", "new"), ("MODE", "ask", "ask"),
                                          ("PERSONA", "reviewer", "default")):
        assert _terminal_column(header, column) == _terminal_column(wide, wide_cell) == \
            _terminal_column(plain, plain_cell), (column, header, wide, plain)


def test_global_options_work_after_the_command_and_errors_are_json_with_json(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    after = json.loads(supervisor.ctl("status", "alpha", "--json", check=True).stdout)
    assert after["name"] == "alpha" and after["started"] is False
    missing = supervisor.ctl("status", "ghost", "--json")
    assert missing.returncode == 1 and json.loads(missing.stderr)["error"]["code"] == "not_found"
    assert supervisor.ctl("--version").stdout.startswith("claudectl ")


def test_status_of_a_session_reads_like_a_person_wrote_it(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("timeout", "alpha", "5", check=True)
    out = supervisor.ctl("status", "alpha", check=True).stdout
    assert "state:        new" in out and "idle timeout: 5 min" in out and "last active:  just now (20" in out
    supervisor.ctl("send", "alpha", "hi", "--wait", check=True)
    out = supervisor.ctl("status", "alpha", check=True).stdout
    assert "state:        idle (keeper pid" in out and "waiting for you: 0 request(s)" in out


def test_relative_paths_are_resolved_against_the_callers_directory(supervisor: SupervisorProcess) -> None:
    work = supervisor.base / "work"
    work.mkdir()
    (work / "note.txt").write_text("hello")
    import subprocess
    import sys

    def ctl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir",
                               str(supervisor.runtime_dir), *argv], capture_output=True, text=True,
                              env=supervisor.env, cwd=work, timeout=60)
    made = ctl("--json", "new", "alpha", "--cwd", ".")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["cwd"] == str(work)
    sent = ctl("send", "alpha", "read it", "--attach", "note.txt", "--wait")
    assert sent.returncode == 0, sent.stderr
    [user] = [e for e in supervisor.events("alpha") if e["kind"] == "user"]
    # (Claude gets the copy taken at send, named as the file was)
    assert [os.path.basename(p) for p in user["attachments"]] == ["note.txt"]


def test_a_queued_message_not_started_yet_is_explained(make_supervisor) -> None:
    sup = make_supervisor()
    stuck = sup.base / "keepers-wait"  # the keeper waits before it connects: Claude cannot start yet
    sup.env["SUPERVISORD_CLAUDE_FAULT_KEEPER_HANG"] = str(stuck)
    sup.start()
    sup.ctl("new", "alpha", check=True)
    stuck.touch()
    sup.ctl("send", "alpha", "first", check=True)
    interrupt = sup.ctl("interrupt", "alpha")
    suspend = sup.ctl("suspend", "alpha")
    assert interrupt.returncode == 1 and "1 message(s) queued that Claude has not started on yet" in interrupt.stderr
    assert suspend.returncode == 1 and "1 message(s) queued; they are answered first" in suspend.stderr
    stuck.unlink()
    sup.wait_event("alpha", lambda e: e["kind"] == "result")


def test_send_wait_json_streams_events_as_json_lines(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    out = supervisor.ctl("--json", "send", "alpha", "tool run", "--wait", check=True).stdout
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["kind"] for e in events]
    assert "tool_use" in kinds and kinds[-1] == "result"


def test_send_wait_exits_non_zero_on_a_turn_error(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    result = supervisor.ctl("send", "alpha", "apierror please", "--wait")
    assert result.returncode == 1 and "Claude's API call failed (HTTP 400)" in result.stderr
    assert "API Error: 400" in result.stdout
    assert supervisor.ctl("send", "alpha", "fine now", "--wait", check=True).stdout.startswith("echo: fine now")


def test_a_tool_claude_was_not_allowed_to_use_is_said_with_a_non_zero_exit(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    result = supervisor.ctl("send", "alpha", "refused please", "--wait")
    assert result.returncode == 1 and "Claude was not allowed to use: Bash" in result.stderr
    assert "I could not run that." in result.stdout


def test_tail_prints_history_from_a_sequence_number(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "hello", "--wait", check=True)
    out = supervisor.ctl("tail", "alpha", check=True).stdout
    assert "[alpha #1] state suspended (requested)" in out and "> hello" in out and "done in" in out
    later = supervisor.ctl("--json", "tail", "alpha", "--from", "3", check=True).stdout.splitlines()
    assert json.loads(later[0])["seq"] == 4


def test_errors_are_one_line_on_stderr_with_exit_1(supervisor: SupervisorProcess) -> None:
    for argv, fragment in (
        (("send", "ghost", "x"), "no session named 'ghost' (not_found)"),
        (("new", "bad/name"), "invalid session name"),
        (("tail", "ghost"), "no session named 'ghost'"),
    ):
        result = supervisor.ctl(*argv)
        assert result.returncode == 1 and fragment in result.stderr, result.stderr
    supervisor.ctl("new", "dup", check=True)
    dup = supervisor.ctl("new", "dup")
    assert dup.returncode == 1 and "already exists" in dup.stderr


def test_tail_without_follow_stops_at_the_last_event_when_it_started(make_supervisor) -> None:
    # Claude keeps writing (a line every 0.1 s); tail prints what there was and returns
    sup = make_supervisor(env={"FAKE_CLAUDE_LINE_DELAY": "0.1"}).start()
    sup.ctl("new", "alpha", check=True)
    with sup.follow("alpha") as events, sup.client() as c:
        c.request("send", session="alpha", text="tools:100 go")
        events.wait_count(lambda e: e["kind"] == "tool_use", 3)
        before = sup.session("alpha")["last_seq"]
        out = sup.ctl("--json", "tail", "alpha", check=True).stdout.splitlines()
        after = sup.session("alpha")["last_seq"]
        seqs = [json.loads(line)["seq"] for line in out]
        assert seqs == list(range(1, len(seqs) + 1))  # from the start, in order, none missing
        assert before <= seqs[-1] <= after
        c.request("interrupt", session="alpha")  # the turn was still going: end it now
        result = events.wait_event(lambda e: e["kind"] == "result", timeout=120)
        assert result["interrupted"] is True  # so tail had returned while it went on
        assert seqs[-1] < result["seq"]


def test_unarchive_and_a_fresh_conversation(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "first", "--wait", check=True)
    archived = supervisor.ctl("archive", "alpha", check=True).stdout
    assert "archived" in archived and "suspending" not in archived  # what happened, not a passing state
    supervisor.wait_state("alpha", "archived")
    assert "alpha" not in supervisor.ctl("ls", check=True).stdout
    assert "back in ls" in supervisor.ctl("unarchive", "alpha", check=True).stdout
    assert "alpha" in supervisor.ctl("ls", check=True).stdout
    old = supervisor.session("alpha")["session_id"]
    assert "fresh conversation" in supervisor.ctl("new-conversation", "alpha", check=True).stdout
    assert supervisor.session("alpha")["session_id"] != old
    reply = supervisor.ctl("send", "alpha", "second", "--wait", check=True).stdout
    assert "history: 0 earlier messages" in reply  # Claude starts afresh
    refused = supervisor.ctl("new-conversation", "alpha")  # live now: suspend it first
    assert refused.returncode == 1 and "suspend it first" in refused.stderr
    again = supervisor.ctl("unarchive", "alpha")
    assert again.returncode == 1 and "not archived" in again.stderr


def test_the_readme_quick_start_works_as_written(supervisor: SupervisorProcess, tmp_path: Path) -> None:
    """The Quick start's commands, run by bash exactly as the README prints them, in a
    checkout (here: a directory with the project's .venv), against a running supervisor."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines()
             if not line.startswith(("git clone", "./scripts/run"))]  # (the fixture is the supervisor)
    assert any(line.startswith("claudectl send") for line in lines)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**supervisor.env, "SUPERVISORD_CLAUDE_RUNTIME_DIR": str(supervisor.runtime_dir),
           "PATH": "/usr/bin:/bin"}  # (claudectl only from the PATH line the README gives)
    done = subprocess.run(["bash", "-e", "-c", "\n".join(lines)], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "what does this project do?" in supervisor.ctl("tail", "work", check=True).stdout
    assert str(checkout) in supervisor.ctl("status", "work", check=True).stdout


def test_backup_while_running_restores_every_session_and_its_history(supervisor: SupervisorProcess,
                                                                      tmp_path: Path) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "remember the backup", "--wait", check=True)
    backup = tmp_path / "backups" / "store.db"
    backup.parent.mkdir()
    out = supervisor.ctl("backup", str(backup), check=True).stdout
    assert str(backup) in out and "1 sessions" in out
    assert backup.stat().st_mode & 0o777 == 0o600  # the store holds the conversation's text
    assert sorted(p.name for p in backup.parent.iterdir()) == ["store.db"]  # one self-contained file
    # a second backup onto it needs --force
    again = supervisor.ctl("backup", str(backup))
    assert again.returncode == 1 and "--force" in again.stderr
    assert supervisor.ctl("backup", str(backup), "--force").returncode == 0
    # restore as docs say: stop, put the copy in place of the store (no WAL of the old one), start
    supervisor.stop()
    store = supervisor.state_dir / "supervisor.sqlite3"
    for stale in (store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(backup, store)
    supervisor.start()
    assert "remember the backup" in supervisor.ctl("tail", "alpha", check=True).stdout


def test_backup_refuses_a_place_it_cannot_write_and_leaves_nothing(supervisor: SupervisorProcess,
                                                                   tmp_path: Path) -> None:
    missing = supervisor.ctl("backup", str(tmp_path / "no such dir" / "store.db"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # (root writes anywhere)
        denied = supervisor.ctl("backup", str(locked / "store.db"))
        assert denied.returncode == 1 and "backup failed" in denied.stderr
    assert list(locked.iterdir()) == []
    assert supervisor.request("hello")  # serving all along


def test_usage_errors_exit_2_and_under_json_are_a_json_error(supervisor: SupervisorProcess) -> None:
    plain = supervisor.ctl("new")  # NAME missing
    assert plain.returncode == 2 and "usage:" in plain.stderr
    as_json = supervisor.ctl("--json", "new")
    assert as_json.returncode == 2
    assert json.loads(as_json.stderr)["error"]["code"] == "usage"
    unknown = supervisor.ctl("frobnicate", "--json")
    assert unknown.returncode == 2 and json.loads(unknown.stderr)["error"]["code"] == "usage"


def test_send_wait_that_gives_up_exits_124_and_the_message_is_still_answered(supervisor: SupervisorProcess,
                                                                              tmp_path: Path) -> None:
    supervisor.ctl("new", "alpha", check=True)
    release = tmp_path / "release"
    waited = supervisor.ctl("send", "alpha", f"waitfile:{release} patience", "--wait", "--timeout", "1")
    assert waited.returncode == 124, waited.stderr  # distinct from a failed turn (1)
    assert "stays queued" in waited.stderr
    release.touch()
    supervisor.wait_event("alpha", lambda e: e["kind"] == "result" and "patience" in e.get("text", ""))
    failed = supervisor.ctl("send", "alpha", "apierror", "--wait")
    assert failed.returncode == 1


def test_ctrl_c_ends_tail_follow_with_130(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "hello", "--wait", check=True)
    follower = subprocess.Popen([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir",
                                 str(supervisor.runtime_dir), "tail", "alpha", "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=supervisor.env)
    try:
        assert follower.stdout is not None
        seen = ""
        while "echo: hello" not in seen:  # the last event there was: it follows now
            line = follower.stdout.readline()
            assert line, "tail ended by itself"
            seen += line
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 130 and "Traceback" not in err


def test_timeout_bounds_the_wait_for_a_supervisor_that_does_not_answer(supervisor: SupervisorProcess) -> None:
    supervisor.proc.send_signal(signal.SIGSTOP)  # alive, its socket there, answering nothing
    try:
        # (the default wait is 10 s: ending well within that proves --timeout bounded it)
        done = supervisor.ctl("--timeout", "0.5", "status", timeout=9)
    finally:
        supervisor.proc.send_signal(signal.SIGCONT)
    assert done.returncode == 1 and "Traceback" not in done.stderr


def test_tail_n_shows_the_last_events_and_send_dash_reads_stdin(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    letter = "Dear Claude,\nthis message has\nthree lines.\n"
    sent = subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(supervisor.runtime_dir),
                           "send", "alpha", "-", "--wait"], input=letter, capture_output=True, text=True,
                          env=supervisor.env, timeout=120)
    assert sent.returncode == 0, sent.stderr
    assert supervisor.wait_received("this message has")["text"] == letter  # every line, as read
    whole = supervisor.ctl("tail", "alpha", check=True).stdout.splitlines()
    assert len(whole) > 3
    assert supervisor.ctl("tail", "alpha", "-n", "2", check=True).stdout.splitlines() == whole[-2:]
    assert supervisor.ctl("tail", "alpha", "-n", "0", check=True).stdout == ""
    bad = supervisor.ctl("tail", "alpha", "-n", "-3")
    assert bad.returncode == 2 and "negative" in bad.stderr


@pytest.mark.system  # runs a program
def test_completion_scripts_know_the_commands(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", "completion", "bash"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    script = tmp_path / "claudectl.bash"
    script.write_text(out.stdout)
    # bash loads it and completes "claudectl ba" to the backup command
    probe = subprocess.run(["bash", "-c", f'source "{script}"; COMP_WORDS=(claudectl ba); COMP_CWORD=1;'
                            ' _shtab_claudectl 2>/dev/null; printf "%s\\n" "${COMPREPLY[@]}"'],
                           capture_output=True, text=True, timeout=60)
    assert "backup" in probe.stdout.split(), probe.stdout + probe.stderr
