"""Faults at random points of a turn, many times each (issue "Security and reliability":
prove it). After every fault: each message ended in exactly one outcome (its result, or
a "not delivered" report), no process of a dead keeper is left, the store's sequence
numbers have no gap, and the next message is answered.

``FAULT_ROUNDS`` (default 5) sets the repetitions; ``./scripts/reliability`` runs them
many more times and writes the figures (``RELIABILITY_LOG``, one JSON line per test) into
``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest

from .conftest import SYSTEM, SupervisorProcess, wait_for

ROUNDS = int(os.environ.get("FAULT_ROUNDS") or 5)
pytestmark = pytest.mark.timeout(120 + 40 * ROUNDS)


def record(fault: str, **figures: Any) -> None:
    """One line of figures for docs/reliability.md (when the soak script asks for them)."""
    path = os.environ.get("RELIABILITY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"fault": fault, **figures}) + "\n")


def outcomes(sup: SupervisorProcess, name: str, message_id: int) -> list[dict]:
    return [e for e in sup.events(name) if e.get("message_id") == message_id
            and e["kind"] in ("result", "message_failed")]


def one_outcome(sup: SupervisorProcess, name: str, message_id: int) -> dict:
    """Wait for the message's outcome; then there must be exactly one."""
    sup.wait_event(name, lambda e: e.get("message_id") == message_id and e["kind"] in ("result", "message_failed"),
                   what=f"the outcome of message {message_id}")
    found = outcomes(sup, name, message_id)
    assert len(found) == 1, found
    return found[0]


def no_gaps(sup: SupervisorProcess, name: str) -> None:
    seqs = [e["seq"] for e in sup.events(name)]
    assert seqs == list(range(1, len(seqs) + 1))


def streaming_turn(sup: SupervisorProcess, name: str, i: int) -> tuple[int, int]:
    """Start a turn that streams for about a second; (message id, Claude's pid)."""
    with sup.client() as c:
        mid = c.request("send", session=name, text=f"stream:1 round {i} of a fault test")["message_id"]
    return mid, sup.wait_received(f"round {i} of a fault test")["pid"]


def gone(pid: int) -> bool:
    return not SYSTEM.alive(pid)


@pytest.mark.parametrize("victim", ["keeper", "claude"])
def test_kill_9_at_a_random_point_of_a_turn(make_supervisor, victim: str) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    seen: Counter[str] = Counter()
    rng = random.Random(f"{victim}-{ROUNDS}")
    started = time.monotonic()
    for i in range(ROUNDS):
        mid, claude = streaming_turn(sup, "alpha", i)
        keeper = sup.keeper_pid("alpha")
        assert keeper is not None
        time.sleep(rng.uniform(0, 1.2))  # the fault's moment: before, during or after the stream
        os.kill(keeper if victim == "keeper" else claude, signal.SIGKILL)
        outcome = one_outcome(sup, "alpha", mid)
        seen[outcome["kind"]] += 1
        wait_for(lambda c=claude: gone(c), what="Claude of the dead turn to be gone")  # nothing left over
        wait_for(lambda k=keeper: gone(k) or victim == "claude", what="the keeper to be gone")
        reply = sup.ctl("send", "alpha", f"after fault {i}", "--wait", timeout=90)
        assert reply.returncode == 0 and f"after fault {i}" in reply.stdout, reply.stderr
    no_gaps(sup, "alpha")
    assert sum(seen.values()) == ROUNDS
    record(f"kill -9 of the {victim} at a random point of a streaming turn", rounds=ROUNDS,
           outcomes=dict(seen), next_message_answered=ROUNDS, left_over_processes=0,
           seconds=round(time.monotonic() - started, 1))


def test_kill_9_of_the_supervisor_at_a_random_point_of_a_turn(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    rng = random.Random(f"supervisor-{ROUNDS}")
    seen: Counter[str] = Counter()
    claude_kept = 0
    for i in range(ROUNDS):
        mid, claude = streaming_turn(sup, "alpha", i)
        time.sleep(rng.uniform(0, 1.2))
        sup.kill9()
        sup.start()
        outcome = one_outcome(sup, "alpha", mid)
        seen[outcome["kind"]] += 1
        claude_kept += outcome["kind"] == "result" and SYSTEM.alive(claude)
        reply = sup.ctl("send", "alpha", f"after restart {i}", "--wait", timeout=90)
        assert reply.returncode == 0 and f"after restart {i}" in reply.stdout, reply.stderr
    no_gaps(sup, "alpha")
    assert seen == Counter(result=ROUNDS)  # a supervisor restart never costs an answer
    record("kill -9 of the supervisor at a random point of a streaming turn, then a restart", rounds=ROUNDS,
           outcomes=dict(seen), same_claude_went_on=claude_kept, next_message_answered=ROUNDS)


def test_a_stopped_keeper_goes_on_where_it_was_when_continued(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    rng = random.Random(f"stop-{ROUNDS}")
    for i in range(ROUNDS):
        mid, _ = streaming_turn(sup, "alpha", i)
        keeper = sup.keeper_pid("alpha")
        assert keeper is not None
        time.sleep(rng.uniform(0, 0.8))
        os.kill(keeper, signal.SIGSTOP)
        time.sleep(rng.uniform(0.2, 1.5))
        os.kill(keeper, signal.SIGCONT)
        outcome = one_outcome(sup, "alpha", mid)
        assert outcome["kind"] == "result" and f"round {i}" in outcome["text"]
        assert sup.keeper_pid("alpha") == keeper  # the same keeper, nothing restarted
    no_gaps(sup, "alpha")
    record("SIGSTOP of a keeper for 0.2-1.5 s at a random point of a turn, then SIGCONT", rounds=ROUNDS,
           outcomes={"result": ROUNDS}, restarts=0)


def test_a_claude_that_ignores_sigterm_is_killed_and_shutdown_ends(make_supervisor) -> None:
    sup = make_supervisor()
    sup.env["FAKE_CLAUDE_IGNORE_SIGTERM"] = "1"
    sup.start()
    for name in ("alpha", "beta"):
        sup.ctl("new", name, check=True)
        sup.ctl("send", name, "hello", "--wait", check=True)
    claudes = sup.claude_pids()
    assert len(claudes) == 2
    t0 = time.monotonic()
    assert sup.stop(timeout=30) == 0
    took = time.monotonic() - t0
    assert all(gone(pid) for pid in claudes) and not sup.pids()
    record("shutdown with two Claude processes that ignore SIGTERM", rounds=1, shutdown_seconds=round(took, 1),
           left_over_processes=0)


def test_a_claude_that_floods_its_output_is_stored_and_answered(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    t0 = time.monotonic()
    count = 20_000 if ROUNDS > 5 else 4_000  # (the soak writes the large one)
    reply = sup.ctl("send", "alpha", f"burst:{count} flood", "--wait", timeout=300)
    assert reply.returncode == 0 and f"echo: burst:{count} flood" in reply.stdout
    texts = [e for e in sup.events("alpha") if e["kind"] == "assistant_text"]
    assert len(texts) == count + 1  # every line written at once is an event, none lost
    no_gaps(sup, "alpha")
    record(f"a Claude that writes {count:,} messages at once", rounds=1, events_stored=len(texts),
           seconds=round(time.monotonic() - t0, 1))


def test_a_line_over_the_limit_stops_claude_with_a_clear_error(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        mid = c.request("send", session="alpha", text="hugeline please")["message_id"]
    outcome = one_outcome(sup, "alpha", mid)
    assert outcome["kind"] == "message_failed" and "over the 64 MiB limit" in outcome["reason"]
    assert "echo: next" in sup.ctl("send", "alpha", "next", "--wait", check=True, timeout=90).stdout
    record("a Claude that writes one 65 MB line", rounds=1, outcome="message_failed (line over the 64 MiB limit)",
           next_message_answered=1)


def test_kill_9_of_the_bot_while_answers_stream(make_supervisor, bot_env, telegram) -> None:
    from .test_bot_app import USER, say

    sup = make_supervisor().start()
    bot = bot_env(sup)
    say(telegram, "/new alpha", "created")
    rng = random.Random(f"bot-{ROUNDS}")
    for i in range(ROUNDS):
        drafts = len(telegram.drafts)
        telegram.message(USER, f"stream:1.5 streamed reply {i}")
        wait_for(lambda d=drafts: len(telegram.drafts) > d, what=f"reply {i} to start streaming")
        time.sleep(rng.uniform(0, 0.8))  # somewhere in the stream, before its final message
        bot.kill9()
        bot = bot_env(sup)
        telegram.wait_for_text(lambda t, i=i: t.startswith(f"echo: stream:1.5 streamed reply {i}"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    replies = [t.split(" (")[0] for t in telegram.texts(USER) if t.startswith("echo:")]
    assert replies == [f"echo: stream:1.5 streamed reply {i}" for i in range(ROUNDS)]  # each once, in order
    record("kill -9 of the Telegram bot while an answer streams, then a new bot", rounds=ROUNDS,
           replies_delivered=len(replies), duplicates=0, out_of_order=0)


def test_a_50_mb_answer_line_is_cut_to_a_sane_size(make_supervisor) -> None:
    from supervisord_claude._claude import MAX_ANSWER_CHARS

    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        mid = c.request("send", session="alpha", text="bigline:50 please")["message_id"]
    outcome = one_outcome(sup, "alpha", mid)
    assert outcome["kind"] == "result" and not outcome["is_error"]
    assert len(outcome["text"]) < MAX_ANSWER_CHARS + 100 and outcome["text"].endswith("more characters]")
    [text] = [e for e in sup.events("alpha") if e["kind"] == "assistant_text"]
    assert len(text["text"]) < MAX_ANSWER_CHARS + 100
    assert "echo: next" in sup.ctl("send", "alpha", "next", "--wait", check=True, timeout=90).stdout
    record("a Claude that writes a 50 MB answer in one line", rounds=1,
           outcome=f"answered, cut to {MAX_ANSWER_CHARS} characters with a note", next_message_answered=1)


def test_a_claude_that_floods_100_mb_of_output_costs_its_keeper_little(make_supervisor) -> None:
    from .test_load import rss_mib

    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "warm up", "--wait", check=True)
    keeper = sup.keeper_pid("alpha")
    assert keeper is not None
    before = rss_mib(keeper)
    t0 = time.monotonic()
    reply = sup.ctl("send", "alpha", "flood:100 then answer", "--wait", timeout=300)
    assert reply.returncode == 0 and "echo: flood:100 then answer" in reply.stdout
    record("a Claude that writes 100 MB of output lines the keeper does not keep", rounds=1,
           outcome="answered", keeper_rss_mib_before=round(before, 1), keeper_rss_mib_after=round(rss_mib(keeper), 1),
           seconds=round(time.monotonic() - t0, 1))
