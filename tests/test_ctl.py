"""claudectl as a script would use it."""

import json

from .conftest import SupervisorProcess


def test_ls_lists_sessions_most_recent_first_with_live_marks(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "older", check=True)
    supervisor.ctl("new", "newer", "--persona", "reviewer", check=True)
    supervisor.ctl("send", "newer", "hi", "--wait", check=True)
    lines = supervisor.ctl("ls", check=True).stdout.splitlines()
    assert lines[0].startswith("🟢 newer (reviewer) - idle - just now")
    assert lines[1].startswith("⚪ older (default) - suspended")
    data = json.loads(supervisor.ctl("--json", "ls", check=True).stdout)
    assert [s["name"] for s in data] == ["newer", "older"] and data[0]["live"] is True


def test_send_wait_json_streams_events_as_json_lines(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    out = supervisor.ctl("--json", "send", "alpha", "tool run", "--wait", check=True).stdout
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["kind"] for e in events]
    assert "tool_use" in kinds and kinds[-1] == "result"


def test_send_wait_exits_non_zero_on_a_turn_error(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    result = supervisor.ctl("send", "alpha", "apierror please", "--wait")
    assert result.returncode == 1 and "ended with an error" in result.stderr
    assert "API Error: 400" in result.stdout
    assert supervisor.ctl("send", "alpha", "fine now", "--wait", check=True).stdout.startswith("echo: fine now")


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
        result = events.wait_event(lambda e: e["kind"] == "result", timeout=120)
        assert seqs[-1] < result["seq"]  # it did not wait for the turn to end
