"""Claude's Markdown as Telegram messages (``bot._markdown``), as plain functions."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot._markdown import markdown_chunks, markdown_html, utf16_len, utf16_tail


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
    assert markdown_html("***both*** and **b _i_** & `x < y`") == \
        "<b><i>both</i></b> and <b>b <i>i</i></b> &amp; <code>x &lt; y</code>"
    assert markdown_html("Tom &amp; Jerry") == "Tom &amp;amp; Jerry"  # as Claude wrote it
