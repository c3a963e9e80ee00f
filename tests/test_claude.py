"""The Claude driver: command lines, stdin lines and stdout parsing."""

import base64
import json

from protocol import EventKind
from supervisord_claude._claude import LaunchSpec, build_argv, build_env, parse_line, user_line


def test_new_session_gets_a_fixed_id_and_resume_names_it_never_continue() -> None:
    new = build_argv(LaunchSpec("claude", "/w", "abc", resume=False, model="m", system_prompt="be nice"))
    assert new[:7] == ["claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
    assert new[new.index("--session-id") + 1] == "abc" and "--resume" not in new
    assert new[new.index("--model") + 1] == "m"
    assert new[new.index("--append-system-prompt") + 1] == "be nice"
    resumed = build_argv(LaunchSpec("claude", "/w", "abc", resume=True))
    assert resumed[resumed.index("--resume") + 1] == "abc"
    assert "--continue" not in resumed and "--session-id" not in resumed and "--model" not in resumed


def test_user_text_is_passed_as_an_argument_value_not_a_shell_string() -> None:
    argv = build_argv(LaunchSpec("claude", "/w", "id", resume=False, system_prompt="$(rm -rf /); `x`"))
    assert "$(rm -rf /); `x`" in argv


def test_children_carry_the_instance_marker() -> None:
    env = build_env({"PATH": "/bin"}, "inst", "alpha")
    assert env["SUPERVISORD_CLAUDE_INSTANCE"] == "inst" and env["SUPERVISORD_CLAUDE_SESSION"] == "alpha"


def test_user_line_with_image_and_document(tmp_path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG....")
    doc = tmp_path / "b.pdf"
    doc.write_bytes(b"%PDF")
    msg = json.loads(user_line("caption", [str(png), str(doc)]))
    assert msg["type"] == "user" and msg["message"]["role"] == "user"
    image, text = msg["message"]["content"]
    assert image["type"] == "image" and image["source"]["media_type"] == "image/png"
    assert base64.b64decode(image["source"]["data"]) == b"\x89PNG...."
    assert text == {"type": "text", "text": f"[Attached file saved at {doc}]\ncaption"}
    assert json.loads(user_line("plain"))["message"]["content"] == "plain"


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_parses_init_text_tools_and_result() -> None:
    init = parse_line(line({"type": "system", "subtype": "init", "session_id": "s1", "model": "m"}))
    assert init.init_session_id == "s1" and init.events == []
    assistant = parse_line(line({"type": "assistant", "message": {"content": [
        {"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}]}}))
    assert assistant.events == [
        (EventKind.ASSISTANT_TEXT, {"text": "hi"}),
        (EventKind.TOOL_USE, {"tool_use_id": "t1", "name": "Bash", "input": {"command": "ls"}}),
    ]
    tool = parse_line(line({"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "x" * 5000}], "is_error": True}]}}))
    [(kind, body)] = tool.events
    assert kind is EventKind.TOOL_RESULT and body["is_error"] and len(body["content"]) < 4100
    result = parse_line(line({"subtype": "success", "type": "result", "is_error": False, "result": "done",
                              "total_cost_usd": 0.5, "duration_ms": 12, "num_turns": 1, "session_id": "s1"}))
    assert result.result is not None
    assert result.result["text"] == "done" and result.result["cost_usd"] == 0.5 and result.result["duration_ms"] == 12


def test_lines_only_the_lenient_json_parser_takes_are_read_as_before() -> None:
    # the fast parser refuses these; what Claude wrote still arrives, as json reads it
    for raw, text in ((b'{"type":"assistant","message":{"content":[{"type":"text","text":"nan"}]},"x":NaN}\n', "nan"),
                      (b'{"type":"assistant","message":{"content":[{"type":"text","text":"\\ud800"}]}}\n', "\ud800")):
        assert parse_line(raw).events == [(EventKind.ASSISTANT_TEXT, {"text": text})]


def test_garbage_lines_are_ignored() -> None:
    for raw in (b"not json\n", b"[1,2]\n", b"{}\n", b'{"type":"assistant","message":null}\n'):
        parsed = parse_line(raw)
        assert parsed.events == [] and parsed.result is None
