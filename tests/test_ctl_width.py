"""claudectl's text on a terminal, where a wide character (CJK, most emoji) takes two
columns and a combining mark none: tables pad, and listings cut, by those columns."""

from __future__ import annotations

import unicodedata

from supervisord_claude.ctl._attach import PROMPT_CHARS, conversation_rows


def _columns(text: str) -> int:
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def _about(first_prompt: str) -> str:
    row = conversation_rows([{"session_id": "c1", "last_active": 0, "messages": 2, "first_prompt": first_prompt}])
    return row.split(" msgs  ", 1)[1]


def test_a_long_first_prompt_in_cjk_is_cut_to_the_same_columns_as_one_in_latin() -> None:
    latin, cjk = _about("x" * 200), _about("日本語" * 70)
    assert latin.endswith("…") and cjk.endswith("…")
    assert _columns(latin) == PROMPT_CHARS
    # a wide character that would pass the limit is left out whole (the cut falls before it)
    assert PROMPT_CHARS - 1 <= _columns(cjk) <= PROMPT_CHARS
    assert set(cjk[:-1]) <= set("日本語")


def test_a_cut_never_parts_a_letter_from_its_accent_or_an_emoji_from_its_joiners() -> None:
    accented = _about("e\u0301" * 100)  # é as e and a combining acute
    assert accented.endswith("…") and accented[-2] == "\u0301" and _columns(accented) <= PROMPT_CHARS
    coder = "\U0001F469\u200d\U0001F4BB"  # 👩‍💻: one picture, two columns
    cut = _about(coder * 40)
    assert cut[:-1] == coder * (len(cut[:-1]) // len(coder))


def test_a_short_first_prompt_is_shown_whole() -> None:
    assert _about("日本語で書いて") == "日本語で書いて"
