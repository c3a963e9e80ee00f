"""What the bot says, as plain functions."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import _render as render
from bot._render import (
    NO_SESSIONS,
    markdown_chunks,
    relative_time,
    resume_text,
    session_line,
    sessions_markdown,
    status_text,
    timeout_text,
    tool_line,
    utf16_len,
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


def test_markdown_becomes_entities_and_long_code_is_split_validly() -> None:
    [chunk] = markdown_chunks("Some **bold** and `code`")
    assert chunk.text == "Some bold and code"
    assert [e["type"] for e in chunk.entities] == ["bold", "code"]
    code = "\n".join(f"line_{i} = {i}" for i in range(1500))
    chunks = markdown_chunks(f"intro\n\n```python\n{code}\n```\n\noutro")
    assert len(chunks) >= 4
    for c in chunks:
        assert utf16_len(c.text) <= 4096
        for e in c.entities:
            assert e["offset"] + e["length"] <= utf16_len(c.text)
    pre = [e for c in chunks for e in c.entities if e["type"] == "pre"]
    assert len(pre) >= 3 and all(e["language"] == "python" for e in pre)
    joined = "".join(c.text for c in chunks)
    assert "line_0 = 0" in joined and "line_1499 = 1499" in joined and "```" not in joined


def test_empty_markdown_sends_nothing() -> None:
    assert markdown_chunks("   \n") == []


def test_a_tail_is_cut_by_utf16_units_and_never_inside_a_character() -> None:
    from bot._render import utf16_len, utf16_tail

    text = "a" + "😀" * 3000  # each emoji is 2 UTF-16 units
    tail = utf16_tail(text, 4000)
    assert utf16_len(tail) <= 4000 and tail == "😀" * 2000
    assert utf16_tail("short", 4000) == "short"
    odd = utf16_tail("x😀😀", 3)  # 1 + 2 + 2 units: only one emoji fits
    assert odd == "😀"


@pytest.mark.parametrize("markdown, shown", [
    ("Use the <div> element", "Use the <div> element"),
    ("A List<String> of names", "A List<String> of names"),
    ("Wrap it in <b>bold</b> tags", "Wrap it in <b>bold</b> tags"),
    ("<details>\nmore\n</details>\n\nafter", "<details>\nmore\n</details>"),
    ("x < y and y > z", "x < y and y > z"),
    ("escape it as &amp; or &lt;, not &#65;", "escape it as &amp; or &lt;, not &#65;"),
    ("`&amp;` in code", "&amp; in code"),
])
def test_no_text_claude_wrote_is_lost(markdown: str, shown: str) -> None:
    text = "".join(chunk.text for chunk in markdown_chunks(markdown))
    assert shown in text


def test_task_boxes_read_as_open_and_done() -> None:
    text = markdown_chunks("- [ ] todo\n- [x] done")[0].text
    assert "☐ todo" in text and "☑ done" in text
    assert "✅" not in text and "☑️" not in text  # an open task never looks checked


def test_headings_get_no_emoji() -> None:
    chunk = markdown_chunks("# Plan\n\n## Steps\n\ntext")[0]
    assert chunk.text.startswith("Plan\n") and "Steps" in chunk.text
    assert not any(ch in chunk.text for ch in "📌✏📚🔖")
    assert {e["type"] for e in chunk.entities} >= {"bold"}


def test_code_keeps_angle_brackets_untouched() -> None:
    chunk = markdown_chunks("`Map<K, V>` and\n\n```java\nList<String> a;\n```")[0]
    assert "Map<K, V>" in chunk.text and "List<String> a;" in chunk.text and "\\<" not in chunk.text


@given(st.lists(st.from_regex(r"[A-Za-z]{1,8}(<[A-Za-z]{1,8}>)?", fullmatch=True), min_size=1, max_size=12))
def test_every_word_with_angle_brackets_survives(words: list[str]) -> None:
    text = "".join(chunk.text for chunk in markdown_chunks(" ".join(words)))
    for word in words:
        assert word in text


def test_a_heading_never_ends_a_part_away_from_its_text() -> None:
    markdown = ("word " * 790).strip() + "\n\n## Next section\n\n" + "more " * 300
    chunks = markdown_chunks(markdown)
    assert len(chunks) == 2
    assert chunks[0].text.endswith("word") and chunks[1].text.startswith("Next section\n\nmore")
    heading = [e for e in chunks[1].entities if e["type"] == "bold"]
    assert heading == [{"type": "bold", "offset": 0, "length": len("Next section")}]
    assert all(utf16_len(c.text) <= 4096 for c in chunks)
    assert "".join(c.text for c in chunks).replace("\n", "").count("word") == 790  # nothing lost


@given(st.lists(st.sampled_from(["## Heading", "text " * 40, "`code`", "**bold** words"]), min_size=20, max_size=120))
def test_parts_keep_every_word_and_valid_entities(pieces: list[str]) -> None:
    markdown = "\n\n".join(pieces)
    chunks = markdown_chunks(markdown, limit=600)
    for chunk in chunks:
        assert utf16_len(chunk.text) <= 600
        for e in chunk.entities:
            assert e["offset"] >= 0 and e["offset"] + e["length"] <= utf16_len(chunk.text)
    joined = " ".join(c.text for c in chunks)
    assert joined.count("Heading") == markdown.count("## Heading")
    assert joined.count("text") == markdown.count("text ")


def test_markdown_as_html_nests_its_tags_and_escapes_the_rest() -> None:
    from bot._render import markdown_html

    assert markdown_html("***both*** and **b _i_** & `x < y`") == \
        "<b><i>both</i></b> and <b>b <i>i</i></b> &amp; <code>x &lt; y</code>"
    assert markdown_html("Tom &amp; Jerry") == "Tom &amp;amp; Jerry"  # as Claude wrote it


def test_what_a_running_turn_does_in_sessions_and_status() -> None:
    waiting = {"doing": "waiting", "seconds": 130, "tool_name": "AskUserQuestion", "detail": "Pick a colour",
               "waiting": 1}
    line = render.session_line({"name": "work", "live": True, "activity": waiting, "last_active": 0}, None, 100)
    assert line.startswith("⏳ `work`") and "waits for you (2 min)" in line
    busy = {"doing": "tool", "seconds": 400, "tool": "Bash", "detail": "npm test", "cpu_percent": 97.2}
    assert render.session_line({"name": "w", "live": True, "activity": busy}, None).startswith("🟢")
    assert render.activity_text(busy) == "running Bash (npm test) for 6 min, CPU 97%"
    assert render.activity_text(waiting) == "⏳ waiting for your answer to a question (Pick a colour), for 2 min"
    stalled = {"doing": "stalled", "was": "tool", "tool": "Bash", "detail": "curl x", "seconds": 3700}
    assert render.activity_text(stalled).startswith("⚠️ seems stuck: no output and almost no CPU for 1 h 1 min,"
                                                    " while running Bash (curl x)")
    text = render.status_text({"name": "w", "state": "busy", "activity": busy, "idle_timeout": 600})
    assert "Now: running Bash (npm test) for 6 min" in text


def test_the_stalled_notice_and_the_reminder_say_what_and_how_long() -> None:
    stalled = {"session": "work", "doing": "writing", "silent_for": 301, "cpu_percent": 0.4}
    assert render.stalled_text(stalled) == ("⚠️ Claude in 'work' seems stuck: writing, and no output and almost no"
                                            " CPU (0.4%) for 5 min. Stop it, or keep waiting?")
    reminder = {"session": "work", "tool_name": "Bash", "detail": "make deploy", "waited": 600, "denied_in": 120}
    assert render.reminder_text(reminder) == ("⏰ Claude in 'work' has been waiting 10 min for your answer to Bash"
                                              " (make deploy). Without an answer it is denied in 2 min.")
