"""What Claude's requests look like in Telegram and how taps add up (``bot._prompts``),
and what an answer means to Claude (``supervisord_claude._permissions``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import _prompts as prompts
from supervisord_claude import _permissions as permissions
from supervisord_claude._errors import OpError

from .fake_telegram import parse_html

COLOURS = {"question": "Pick a colour", "header": "C", "multiSelect": False,
           "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": ""}]}
EXTRAS = {"question": "Extras?", "header": "E", "multiSelect": True,
          "options": [{"label": "Tests"}, {"label": "Docs"}]}


def request(tool: str, tool_input: dict, **extra: object) -> dict:
    return {"session": "alpha", "request_id": "r1", "tool_name": tool, "input": tool_input, **extra}


def test_a_command_is_shown_as_code_with_its_description() -> None:
    prompt, token = prompts.build(request("Bash", {"command": "rm -rf build && make", "description": "clean"}), 5)
    text, entities = parse_html(prompt.text)
    assert text == "🔐 Claude wants to run:\nrm -rf build && make\nclean"
    assert [e["type"] for e in entities] == ["pre", "italic"]
    assert token == "r1" and prompt.chat == 5


def test_edits_and_writes_show_the_path_and_the_size_of_the_change() -> None:
    edit, _ = prompts.build(request("Edit", {"file_path": "/p/a.py", "old_string": "a\nb", "new_string": "c"}), 1)
    assert parse_html(edit.text)[0] == "🔐 Claude wants to edit /p/a.py\n-2 +1 lines\n@@ -1,2 +1 @@\n-a\n-b\n+c"
    write, _ = prompts.build(request("Write", {"file_path": "/p/<b>.txt", "content": "x\ny\n"}), 1)
    assert parse_html(write.text)[0] == "🔐 Claude wants to write /p/<b>.txt\n2 lines, 4 bytes\nx\ny"
    fetch, _ = prompts.build(request("WebFetch", {"url": "https://example.com/?a=1&b=2", "prompt": "p"}), 1)
    assert parse_html(fetch.text)[0] == "🔐 Claude wants to use WebFetch:\nhttps://example.com/?a=1&b=2"


@given(st.text(max_size=5000) | st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1F6FF), max_size=5000))
def test_any_tool_input_gives_html_telegram_accepts(command: str) -> None:
    for tool, tool_input in (("Bash", {"command": command, "description": command}), ("Other", {"x": command}),
                             ("Write", {"file_path": command, "content": command}), (command, {}),
                             ("WebFetch", {"url": command}),
                             ("ExitPlanMode", {"plan": command}),
                             ("AskUserQuestion", {"questions": [{"question": command, "options": [
                                 {"label": command, "description": command}] * 4}] * 4})):
        prompt, _ = prompts.build(request(tool, tool_input), 1)
        text, _ = parse_html(prompt.text)  # raises if Telegram would refuse it
        assert len(text.encode("utf-16-le")) // 2 <= 4096 - 200  # room for the outcome line


def test_the_longest_question_still_fits_one_message() -> None:
    long = "😀" * 3000
    question = {"question": long, "multiSelect": True, "options": [{"label": long, "description": long}] * 10}
    prompt, _ = prompts.build(request("AskUserQuestion", {"questions": [question] * 8}), 1)
    text, _ = parse_html(prompt.text)
    assert len(text.encode("utf-16-le")) // 2 <= 4096 - 200 and len(prompt.questions) == 4


def test_a_plan_comes_from_the_tool_call_when_the_request_has_none() -> None:
    prompt, token = prompts.build(request("ExitPlanMode", {}, tool_use_input={"plan": "1. a\n2. b"}), 1)
    assert "1. a\n2. b" in prompt.text
    assert [label for row in prompts.keyboard(prompt, token) for label, _ in row] == [
        "✅ Approve", "✅ Approve, accept edits", "✏️ Keep planning"]


def test_a_single_question_is_settled_by_one_tap_a_multi_select_by_done() -> None:
    one, _ = prompts.build(request("AskUserQuestion", {"questions": [COLOURS]}), 1)
    assert prompts.pick(one, 0, 1) and one.picks == [["Blue"]]
    two, token = prompts.build(request("AskUserQuestion", {"questions": [COLOURS, EXTRAS]}), 1)
    assert not prompts.pick(two, 0, 0)  # several questions: Done sends
    assert not prompts.pick(two, 1, 0) and not prompts.pick(two, 1, 1) and not prompts.pick(two, 1, 0)
    assert two.picks == [["Red"], ["Docs"]] and two.complete()
    assert not prompts.pick(two, 5, 0) and not prompts.pick(two, 0, 9)  # stale buttons change nothing
    labels = [label for row in prompts.keyboard(two, token) for label, _ in row]
    assert labels == ["✅ 1. Red", "1. Blue", "⬜ 2. Tests", "☑️ 2. Docs", "Done"]


def test_callback_data_fits_telegram_and_survives_a_kv_round_trip() -> None:
    long_id = "x" * 300
    prompt, token = prompts.build({**request("AskUserQuestion", {"questions": [COLOURS] * 4}),
                                   "request_id": long_id}, 1)
    for row in prompts.keyboard(prompt, token):
        for _, data in row:
            assert len(data.encode()) <= 64
    assert prompts.Prompt.from_kv(prompt.to_kv()) == prompt
    assert prompts.Prompt.from_kv({"junk": 1}) is None and prompts.Prompt.from_kv(None) is None


def test_a_typed_answer_fills_the_first_open_question() -> None:
    prompt, _ = prompts.build(request("AskUserQuestion", {"questions": [COLOURS, EXTRAS]}), 1)
    assert not prompts.typed(prompt, "Green")
    assert prompts.typed(prompt, "none of them") and prompt.picks == [["Green"], ["none of them"]]


# --- what the supervisor sends back ---------------------------------------------------------


def pending(tool: str, tool_input: dict, suggestions: tuple = ()) -> permissions.PendingRequest:
    return permissions.PendingRequest("r1", tool, tool_input, suggestions)


def test_always_allow_uses_claudes_suggestion_scoped_to_the_session() -> None:
    suggested = ({"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "npm test:*"}],
                  "behavior": "allow", "destination": "localSettings"},
                 {"type": "setMode", "mode": "acceptEdits", "destination": "session"})
    update, rules = permissions.always_allow(pending("Bash", {"command": "npm test -- -x"}, suggested), "/w")
    assert update == {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "npm test:*"}],
                      "behavior": "allow", "destination": "session"}
    assert rules == ["Bash(npm test:*)"]


def exact(command: str) -> tuple[dict, ...]:
    """What the real CLI (2.1.327) suggests for ``touch a.txt``: the exact command."""
    return ({"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": command}], "behavior": "allow",
             "destination": "localSettings"},)


def always(command: str, suggested: tuple[dict, ...] = ()) -> list[str]:
    return permissions.always_allow(pending("Bash", {"command": command}, suggested), "/w")[1]


def test_always_allow_of_a_command_is_its_prefix_not_the_exact_command() -> None:
    # "touch a.txt" then "touch b.txt": the second is allowed too (as Claude Code's terminal offers)
    assert always("touch a.txt", exact("touch a.txt")) == ["Bash(touch *)"]
    assert always("touch a", exact("touch a *")) == ["Bash(touch *)"]  # ("touch a *" is no wider)
    # tools with subcommands: the subcommand too, never every git command
    assert always("git status --short") == ["Bash(git status *)"]
    assert always("cargo build --release", exact("cargo build --release")) == ["Bash(cargo build *)"]
    assert always("FOO=1 make test") == ["Bash(make test *)"]
    # Claude's own wider suggestion stands
    assert always("npm run build", exact("npm run *")) == ["Bash(npm run *)"]


def test_always_allow_of_a_compound_command_covers_each_part() -> None:
    # Claude Code allows a compound command only when every part is allowed
    assert always("touch a.txt && rm -rf y", exact("touch a.txt && rm -rf y")) == ["Bash(touch *)", "Bash(rm *)"]
    assert always('git commit -m "a; b" | tee log; ls\nmake') == [
        "Bash(git commit *)", "Bash(tee *)", "Bash(ls *)", "Bash(make *)"]
    # what cannot be split safely is allowed exactly, never wider
    assert always("echo $(whoami)", exact("echo $(whoami)")) == ["Bash(echo $(whoami))"]
    assert always("(cd x; make)") == ["Bash((cd x; make))"]


def test_always_allow_is_never_everything() -> None:
    wide = ({"type": "addRules", "rules": [{"toolName": "Bash"}, {"toolName": "Bash", "ruleContent": "*"},
                                            {"toolName": "Edit", "ruleContent": "/**"}],
             "behavior": "allow", "destination": "localSettings"},)
    assert always("ls -la", wide) == ["Bash(ls *)"]
    assert always("   ") == [] and always("> out") == ["Bash(> out)"]
    assert permissions.always_allow(pending("Write", {"content": "x"}), "/w")[1] == []  # no path: no scope
    assert permissions.always_allow(pending("Edit", {"file_path": "src/a.py"}), "/w")[1] == ["Edit(//w/**)"]


def test_always_allow_of_a_fetch_is_its_domain() -> None:
    fetch = permissions.always_allow(pending("WebFetch", {"url": "https://docs.python.org/3/x?y"}), "/w")[1]
    assert fetch == ["WebFetch(domain:docs.python.org)"]
    assert permissions.always_allow(pending("WebFetch", {"url": "not a url"}), "/w")[1] == []
    assert permissions.always_allow(pending("Glob", {"pattern": "*"}), "/w")[1] == ["Glob"]  # (reads only)


def test_always_allow_of_a_file_tool_covers_a_directory_never_every_file() -> None:
    # Claude suggests no rule for a Write: "Write" alone allowed every later Write anywhere
    inside = permissions.always_allow(pending("Write", {"file_path": "/w/app/src/a.py", "content": ""}), "/w/app")
    assert inside[1] == ["Edit(//w/app/**)"]  # the session's directory
    outside = permissions.always_allow(pending("Edit", {"file_path": "/etc/x/hosts"}), "/w/app")
    assert outside[1] == ["Edit(//etc/x/**)"]  # only the file's own directory
    assert permissions.always_allow(pending("Write", {"file_path": "/w/apple/b"}), "/w/app")[1] == ["Edit(//w/apple/**)"]


def test_a_file_tool_rule_may_cover_a_directory_the_user_picks() -> None:
    edit = pending("Edit", {"file_path": "/w/app/src/pkg/a.py"})
    # the choices: the session's directory (the default), then each one down to the file's
    assert permissions.file_rule_dirs(edit, "/w/app") == ["/w/app", "/w/app/src", "/w/app/src/pkg"]
    assert permissions.always_allow(edit, "/w/app")[1] == ["Edit(//w/app/**)"]
    assert permissions.always_allow(edit, "/w/app", "/w/app/src")[1] == ["Edit(//w/app/src/**)"]
    assert permissions.always_allow(edit, "/w/app", "/w")[1] == ["Edit(//w/**)"]  # (above it too: it holds the file)
    for wrong in ("/w/other", "/", "/w/app/src/pkg/a.py"):  # a directory that does not hold the file, or everything
        with pytest.raises(OpError, match="does not hold"):
            permissions.always_allow(edit, "/w/app", wrong)
    with pytest.raises(OpError, match="not for Bash"):
        permissions.always_allow(pending("Bash", {"command": "touch x"}), "/w", "/w")
    assert permissions.file_rule_dirs(pending("Edit", {"file_path": "/etc/x/hosts"}), "/w/app") == ["/etc/x"]
    deep = pending("Write", {"file_path": "/w/app/a/b/c/d/e/f.py"})  # the session's, and the three nearest the file
    assert permissions.file_rule_dirs(deep, "/w/app") == ["/w/app", "/w/app/a/b/c", "/w/app/a/b/c/d",
                                                           "/w/app/a/b/c/d/e"]
    assert permissions.file_rule_dirs(pending("Bash", {"command": "ls"}), "/w") == []
    # in Telegram: one button per narrower directory, saying it below the session's
    prompt, token = prompts.build(request("Edit", {"file_path": "/w/app/src/pkg/a.py"}, always=["Edit(//w/app/**)"],
                                          always_dirs=["/w/app", "/w/app/src", "/w/app/src/pkg"]), 1)
    rows = prompts.keyboard(prompt, token)
    assert [label for row in rows[1:] for label, _ in row] == [
        "♾ Always allow edits in /w/app here", "♾ Always allow edits only in src/",
        "♾ Always allow edits only in src/pkg/"]
    assert [data for row in rows[2:] for _, data in row] == [f"perm:{token}:a:1", f"perm:{token}:a:2"]
    assert prompts.Prompt.from_kv(prompt.to_kv()) == prompt
    long_dir = "/w/app/" + "/".join(["directory"] * 8)
    assert len(prompts.dir_label("/w/app", long_dir)) <= 60


def test_a_rule_the_user_names(tmp_path) -> None:
    (tmp_path / "lib").mkdir()
    assert permissions.user_rule("Edit", "lib", str(tmp_path)) == f"Edit(/{tmp_path}/lib/**)"
    assert permissions.user_rule("Write", str(tmp_path), "/elsewhere") == f"Edit(/{tmp_path}/**)"
    assert permissions.user_rule("Bash", "npm test", "/w") == "Bash(npm test *)"
    assert permissions.user_rule("WebFetch", "docs.python.org", "/w") == "WebFetch(domain:docs.python.org)"
    assert permissions.user_rule("WebFetch", "https://example.com/a?b", "/w") == "WebFetch(domain:example.com)"
    # every subdomain, as the real CLI reads it (measured: not example.com itself)
    assert permissions.user_rule("WebFetch", "*.example.com", "/w") == "WebFetch(domain:*.example.com)"
    for tool, scope, why in (("Edit", "/", "never every file"), ("Edit", "missing", "is not a directory"),
                             ("Bash", "ls && rm -rf x", "not one command"), ("Bash", "*", "not one command"),
                             ("WebFetch", "*", "not a domain"), ("WebFetch", "*.org", "not a domain"),
                             ("WebFetch", "a.*.org", "not a domain"), ("Read", "/w", "not 'Read'")):
        with pytest.raises(OpError, match=why):
            permissions.user_rule(tool, scope, str(tmp_path))


def test_answers_go_back_in_the_input_one_per_question() -> None:
    req = pending("AskUserQuestion", {"questions": [COLOURS, EXTRAS]})
    updated, chosen = permissions.answered_input(req, [["Blue"], ["Tests", "Docs"]])
    assert chosen == {"Pick a colour": "Blue", "Extras?": "Tests, Docs"}
    assert updated == {"questions": [COLOURS, EXTRAS], "answers": chosen}
    with pytest.raises(OpError, match="takes one answer"):
        permissions.answered_input(req, [["Red", "Blue"], ["Tests"]])
    with pytest.raises(OpError, match="2 question"):
        permissions.answered_input(req, [["Red"]])
    with pytest.raises(OpError, match="not a question"):
        permissions.answered_input(pending("Bash", {}), [["x"]])
