"""What the bot says, as plain functions."""


from bot import _activity as activity
from bot import _render as render
from bot._render import (
    NO_SESSIONS,
    relative_time,
    resume_text,
    session_line,
    sessions_markdown,
    status_text,
    timeout_text,
    tool_line,
)


def test_relative_time_buckets() -> None:
    now = 1_000_000.0
    assert relative_time(now - 5, now) == "just now"
    assert relative_time(now - 5 * 60, now) == "5m ago"
    assert relative_time(now - 2 * 3600, now) == "2h ago"
    assert relative_time(now - 3 * 86400, now) == "3d ago"
    assert relative_time(None, now) == "never"


def test_session_lines_mark_the_active_one_and_liveness() -> None:
    now = 1000.0
    live = {"name": "alpha", "live": True, "persona": None, "last_active": now - 300}
    idle = {"name": "beta", "live": False, "persona": "reviewer", "last_active": now - 7200}
    assert session_line(live, "alpha", now) == "→ 🟢 `alpha` - 5m ago"
    assert session_line(idle, "alpha", now) == "⚪ `beta` (reviewer) - 2h ago"
    assert sessions_markdown([], None) == NO_SESSIONS == "No sessions. Use /new <name> to create one."


def test_a_failed_session_says_what_happened_and_what_to_do() -> None:
    """❌ is any failure, each told in words with what to do next — not "could not be
    resumed" for a crash or a keeper's bug; the process's own words in a code span (not
    read as Markdown), a reason this bot does not know as it came."""
    now = 1000.0

    def line(failure: tuple[str, str | None] | None) -> str:
        return session_line({"name": "w", "live": False, "state": "failed", "last_active": now, "failure": failure},
                            None, now)

    again = "your next message starts Claude again, with the conversation"
    assert line(("crashed", "Claude exited unexpectedly (exit code 3): `boom` *")) == (
        f"❌ `w` - just now · Claude stopped unexpectedly (`Claude exited unexpectedly (exit code 3): 'boom' *`): {again}")
    assert line(("killed", None)) == f"❌ `w` - just now · its keeper process was killed: {again}"
    assert line(("internal-error", "KeyError: 'x'")) == (
        f"❌ `w` - just now · a bug in its keeper stopped it (`KeyError: 'x'`): {again}")
    assert line(("resume-failed", "No conversation found")).endswith(
        "its conversation could not be resumed (`No conversation found`): /switch to it and /clear for a fresh"
        " conversation (Claude will not remember the old one), or /archive it")
    assert line(("meteor", None)) == f"❌ `w` - just now · failed (meteor): {again}"
    assert line(None) == f"❌ `w` - just now · stopped by an error: {again}"  # (failed before the bot saw it)
    text = status_text({"name": "w", "state": "failed", "model": None, "persona": None, "idle_timeout": 600,
                        "failure": ("crashed", "exit code 3")})
    assert f"State: failed — Claude stopped unexpectedly (exit code 3): {again}" in text.splitlines()


def test_timeout_and_resume_texts() -> None:
    assert timeout_text(600) == "Idle timeout: 10 minutes\n\nUsage: /timeout <minutes> (1-120)"
    assert resume_text(None) == resume_text(59) == "Resuming session..."
    assert resume_text(15 * 60 + 30) == "Resuming session (idle for 15 min)..."


def test_tool_lines_are_compact() -> None:
    assert tool_line("Bash", {"command": "ls  -la\n"}) == "🔧 Bash: ls -la"
    assert tool_line("Read", {"file_path": "/x/y.py"}) == "🔧 Read: /x/y.py"
    assert tool_line("Edit", {"old": "a", "new": "b"}) == '🔧 Edit: {"old": "a", "new": "b"}'
    assert tool_line("Bash", {"command": "x" * 500}).endswith("…")
    assert tool_line("Think", {}) == "🔧 Think"


def test_status_text() -> None:
    text = status_text({"name": "a", "state": "idle", "model": None, "persona": None,
                        "idle_timeout": 600, "cost_usd": 0.1234, "mode": "plan"})
    assert text.splitlines() == ["Session: a", "State: idle", "Model: default", "Permission mode: plan",
                                 "Persona: default",
                                 "Idle timeout: 10 minutes", "Cost so far: $0.1234"]


def test_what_a_running_turn_does_in_sessions_and_status() -> None:
    waiting = {"doing": "waiting", "seconds": 130, "tool_name": "AskUserQuestion", "detail": "Pick a colour",
               "waiting": 1}
    line = render.session_line({"name": "work", "live": True, "activity": waiting, "last_active": 0}, None, 100)
    assert line.startswith("⏳ `work`") and "waits for you (2 min)" in line
    busy = {"doing": "tool", "seconds": 400, "tool": "Bash", "detail": "npm test", "cpu_percent": 97.2}
    assert render.session_line({"name": "w", "live": True, "activity": busy}, None).startswith("🟢")
    assert activity.activity_text(busy) == "running Bash (npm test) for 6 min, CPU 97%"
    assert activity.activity_text(waiting) == "⏳ waiting for your answer to a question (Pick a colour), for 2 min"
    stalled = {"doing": "stalled", "was": "tool", "tool": "Bash", "detail": "curl x", "seconds": 3700}
    assert activity.activity_text(stalled).startswith("⚠️ seems stuck: no output and almost no CPU for 1 h 1 min,"
                                                      " while running Bash (curl x)")
    text = render.status_text({"name": "w", "state": "busy", "activity": busy, "idle_timeout": 600})
    assert "Now: running Bash (npm test) for 6 min" in text


