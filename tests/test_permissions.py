"""Permission modes, always-allow rules, questions and plans through the supervisor and
claudectl (real supervisor, keepers and sockets; the fake claude)."""

from __future__ import annotations

import json

import pytest

from .conftest import SupervisorProcess, wait_for

pytestmark = pytest.mark.timeout(180)


def arg_after(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def asked(sup: SupervisorProcess, text: str, name: str = "alpha") -> dict:
    """Send ``text`` and return the request Claude makes in that turn."""
    with sup.client() as c:
        mid = c.request("send", session=name, text=text)["message_id"]
    return sup.wait_event(name, lambda e: e["kind"] == "permission_request" and e.get("message_id") == mid)


def result_of(sup: SupervisorProcess, request: dict, name: str = "alpha") -> dict:
    return sup.wait_event(name, lambda e: e["kind"] == "result" and e.get("message_id") == request["message_id"])


def test_every_claude_may_ask_and_runs_in_the_sessions_mode(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "hello", "--wait", check=True)
    argv = sup.claude_starts()[-1]["argv"]
    assert arg_after(argv, "--permission-prompt-tool") == "stdio"
    assert arg_after(argv, "--permission-mode") == "default"  # "ask": Claude Code's own rules, then us
    assert sup.ctl("mode", "alpha", check=True).stdout.strip() == "Permission mode: ask"


def test_a_mode_change_restarts_claude_with_its_history_and_is_kept(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "remember", "--wait", check=True)
    starts = len(sup.claude_starts())
    assert "accept-edits" in sup.ctl("mode", "alpha", "accept-edits", check=True).stdout
    wait_for(lambda: len(sup.claude_starts()) > starts, what="Claude restarted for the new mode")
    argv = sup.claude_starts()[-1]["argv"]
    assert arg_after(argv, "--permission-mode") == "acceptEdits" and "--resume" in argv
    reply = sup.ctl("send", "alpha", "and now?", "--wait", check=True).stdout
    assert "history: 2 earlier messages" in reply  # the conversation went on
    assert "(unchanged)" in sup.ctl("mode", "alpha", "accept-edits", check=True).stdout
    sup.ctl("suspend", "alpha", check=True)
    sup.wait_state("alpha", "suspended")
    sup.stop()
    sup.start()
    sup.ctl("send", "alpha", "after a restart", "--wait", check=True)
    assert arg_after(sup.claude_starts()[-1]["argv"], "--permission-mode") == "acceptEdits"
    assert json.loads(sup.ctl("--json", "status", "alpha", check=True).stdout)["mode"] == "accept-edits"


def test_bypass_needs_the_config_to_allow_it(make_supervisor) -> None:
    sup = make_supervisor().start()
    refused = sup.ctl("new", "alpha", "--mode", "bypass")
    assert refused.returncode == 1 and "allow_bypass" in refused.stderr
    assert sup.request("list")["sessions"] == []  # nothing was created
    sup.ctl("new", "alpha", "--mode", "plan", check=True)
    refused = sup.ctl("mode", "alpha", "bypass")
    assert refused.returncode == 1 and "allow_bypass" in refused.stderr
    bad = sup.ctl("mode", "alpha", "yolo")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    with sup.client() as c:
        from protocol import RemoteError

        with pytest.raises(RemoteError, match="must be one of: ask, accept-edits, plan, bypass"):
            c.request("set_mode", session="alpha", mode="yolo")
    allowed = make_supervisor(config="allow_bypass = true").start()
    allowed.ctl("new", "beta", "--mode", "bypass", check=True)
    allowed.ctl("send", "beta", "hi", "--wait", check=True)
    assert arg_after(allowed.claude_starts()[-1]["argv"], "--permission-mode") == "bypassPermissions"


def test_always_allow_is_kept_across_suspend_and_resume(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    sup.ctl("new", "alpha", check=True)
    request = asked(sup, "needperm first")
    out = sup.ctl("permit", "alpha", request["request_id"], "--allow", "--always", check=True).stdout
    assert "always allowed (Bash(touch *))" in out
    assert result_of(sup, request)["text"].startswith("permission: allow always")
    sup.ctl("suspend", "alpha", check=True)
    sup.wait_state("alpha", "suspended")
    reply = sup.ctl("send", "alpha", "needperm again", "--wait", check=True).stdout
    assert "permission: allowed by rule" in reply  # no prompt: the resumed Claude has the rule
    argv = sup.claude_starts()[-1]["argv"]
    assert "--resume" in argv and arg_after(argv, "--allowedTools") == "Bash(touch *)"
    assert sup.session("alpha")["allowed_tools"] == ["Bash(touch *)"]


def test_claudectl_answers_questions_with_labels(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    request = asked(sup, "askq please")
    wrong = sup.ctl("permit", "alpha", request["request_id"], "--allow")
    assert wrong.returncode == 1 and "answered with 'answer'" in wrong.stderr
    two = sup.ctl("answer", "alpha", request["request_id"], "Red", "Blue")
    assert two.returncode == 1 and "takes one answer" in two.stderr
    out = sup.ctl("answer", "alpha", request["request_id"], "Blue", check=True).stdout
    assert out.strip() == "answered: Pick a colour = Blue"
    assert result_of(sup, request)["text"] == 'answers: {"Pick a colour": "Blue"}'
    request = asked(sup, "askmulti please")
    few = sup.ctl("answer", "alpha", request["request_id"], "Red")
    assert few.returncode == 2 and "2 questions" in few.stderr
    sup.ctl("answer", "alpha", request["request_id"], "my own words", "Docs,Bench", check=True)
    assert result_of(sup, request)["text"] == 'answers: {"Pick a colour": "my own words", "Which extras?": "Docs, Bench"}'
    stale = sup.ctl("answer", "alpha", request["request_id"], "Red", "Docs")
    assert stale.returncode == 1 and "no pending request" in stale.stderr


def test_approving_a_plan_switches_the_mode_without_restarting_claude(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", "--mode", "plan", check=True)
    request = asked(sup, "planexit now")
    assert request["input"] == {} and request["tool_use_input"]["plan"].startswith("1. Write hello.txt")
    tail = sup.ctl("tail", "alpha", check=True).stdout
    assert "Claude's plan:\n1. Write hello.txt" in tail and "--mode accept-edits" in tail
    starts = len(sup.claude_starts())
    out = sup.ctl("permit", "alpha", request["request_id"], "--allow", "--mode", "accept-edits", check=True).stdout
    assert "mode accept-edits" in out
    assert result_of(sup, request)["text"] == "plan: approved, mode acceptEdits"
    assert sup.session("alpha")["mode"] == "accept-edits"
    assert len(sup.claude_starts()) == starts  # Claude switched itself; nothing was restarted


def test_a_request_dies_with_its_claude_and_cannot_be_answered_after(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    request = asked(sup, "needperm now")
    sup.ctl("interrupt", "alpha", check=True)
    resolved = sup.wait_event("alpha", lambda e: e["kind"] == "permission_resolved")
    assert resolved["by"] == "claude" and resolved["allow"] is False and "turn ended" in resolved["message"]
    late = sup.ctl("permit", "alpha", request["request_id"], "--allow")
    assert late.returncode == 1 and "no pending request" in late.stderr


def test_a_pending_request_is_answerable_after_a_supervisor_restart(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    request = asked(sup, "needperm across a restart")
    sup.kill9()
    sup.start()
    wait_for(lambda: "Adopted 1 keepers" in sup.log(), what="the keeper adopted")
    assert [p["request_id"] for p in sup.session("alpha")["pending"]] == [request["request_id"]]
    sup.ctl("permit", "alpha", request["request_id"], "--allow", check=True)
    assert result_of(sup, request)["text"] == "permission: allow"


def test_an_unanswered_request_is_denied_after_the_timeout(make_supervisor) -> None:
    sup = make_supervisor(config="permission_timeout = 0.5").start()
    sup.ctl("new", "alpha", check=True)
    request = asked(sup, "needperm nobody answers")
    assert result_of(sup, request)["text"] == "permission: deny (No answer within 0.5 seconds: denied.)"
    [resolved] = [e for e in sup.events("alpha") if e["kind"] == "permission_resolved"]
    assert resolved["by"] == "timeout" and resolved["allow"] is False


def test_claudectl_lists_and_removes_rules_and_a_live_claude_asks_again(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    sup.ctl("new", "alpha", check=True)
    assert "has no always-allow rules" in sup.ctl("rules", "alpha", check=True).stdout
    request = asked(sup, "needperm first")
    sup.ctl("permit", "alpha", request["request_id"], "--allow", "--always", check=True)
    result_of(sup, request)
    assert sup.ctl("rules", "alpha", check=True).stdout.strip() == "1. Bash(touch *)"
    bad = sup.ctl("rules", "alpha", "--remove", "2")
    assert bad.returncode == 1 and "no rule 2" in bad.stderr
    starts = len(sup.claude_starts())
    out = sup.ctl("rules", "alpha", "--remove", "1", check=True).stdout
    assert "removed Bash(touch *)" in out
    # the live Claude kept the rule in-process: it restarts (with its history) without it
    wait_for(lambda: len(sup.claude_starts()) > starts, what="Claude restarted without the rule")
    assert "--allowedTools" not in sup.claude_starts()[-1]["argv"]
    assert "--resume" in sup.claude_starts()[-1]["argv"]
    again = asked(sup, "needperm again")  # asked again
    sup.ctl("permit", "alpha", again["request_id"], "--allow", "--always", check=True)
    result_of(sup, again)
    # kept by the supervisor's store: they survive its restart
    sup.stop()
    sup.start()
    assert json.loads(sup.ctl("--json", "rules", "alpha", check=True).stdout) == {"rules": ["Bash(touch *)"]}


def test_claudectl_adds_a_rule_by_name_and_a_live_claude_gets_it(make_supervisor, tmp_path) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "hello", "--wait", check=True)  # (a live Claude)
    starts = len(sup.claude_starts())
    out = sup.ctl("rules", "alpha", "--add", "Edit", str(tmp_path), check=True).stdout
    assert out.startswith(f"added Edit(/{tmp_path}/**) to 'alpha'")
    wait_for(lambda: len(sup.claude_starts()) > starts, what="Claude restarted with the rule")
    argv = sup.claude_starts()[-1]["argv"]
    assert argv[argv.index("--allowedTools") + 1] == f"Edit(/{tmp_path}/**)" and "--resume" in argv
    sup.ctl("rules", "alpha", "--add", "Bash", "npm test", check=True)
    for tool, scope, why in (("Edit", "/", "never every file"), ("Edit", "nowhere", "is not a directory"),
                             ("WebFetch", "*.org", "not a domain"), ("Glob", "*", "not 'Glob'")):
        bad = sup.ctl("rules", "alpha", "--add", tool, scope)
        assert bad.returncode == 1 and why in bad.stderr, bad.stderr
    assert sup.session("alpha")["allowed_tools"] == [f"Edit(/{tmp_path}/**)", "Bash(npm test *)"]


def test_a_deny_reason_as_long_as_a_message_reaches_claude(make_supervisor) -> None:
    """(typed under a prompt in Telegram and sent as the reason: it was refused past 200
    characters, and the text was lost)"""
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    request = asked(sup, "needperm with a long reason")
    why = "Do not touch that file: " + "it belongs to the release process, " * 60
    with sup.client() as c:
        c.request("permit", session="alpha", request_id=request["request_id"], allow=False, message=why)
    assert result_of(sup, request)["text"] == f"permission: deny ({why})"
