"""Render docs/reliability.md from the figures the soak's tests wrote (``scripts/reliability``)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

INTRO = """# Reliability: faults, load and hostile input

Written by `./scripts/reliability` from the figures its tests record (one JSON line per
test, `RELIABILITY_LOG`); do not edit by hand. The same tests run in every
`./scripts/test` with few repetitions (`FAULT_ROUNDS=5`, `HOSTILE_FRAMES=10000`,
`LOAD_SESSIONS=20`); the soak runs them many more times. Each row says what was tried,
how often, and what held. After every fault the test checks that each message ended in
exactly one outcome (its answer, or a "not delivered" report), that no process of a dead
keeper is left, that the session's event sequence has no gap, and that the next message
is answered.
"""

HOLES = """## The holes closed, each with its test

| hole | now | test |
|---|---|---|
| runtime dir spoofable (made first by another user, or a symlink swapped later) | supervisor and every client check with `lstat`: a real directory, ours, 0700; the socket ours | `tests/test_access.py` |
| another user's process titled like a keeper stops start-up | reaping considers only processes of our uid, and never raises | `tests/test_supervisor.py` |
| `subscribe after=2**63` breaks delivery for everyone | integers are validated to 0..2**63-1; a failing subscription is dropped alone | `tests/test_bounds.py` |
| nothing bounds a client (kv, subscriptions, slow subscribers, log) | kv values 64 KiB, 10,000 keys; 64 subscriptions per connection; 4 MiB in flight per subscription; bad-input warnings 10/min; subscriptions of clients that left are swept | `tests/test_bounds.py` |
| shutdown with a full disk never finishes | shutdown always ends and frees the lock | `tests/test_supervisor.py::test_shutdown_with_a_full_disk_still_finishes` |
| store file deleted or replaced under a running supervisor | noticed (inode, every 2 s and before each write op); a deleted one is written back from the open database; a replaced one: new work refused with `storage`, CRITICAL in the log every minute, `status.store_problem` | `tests/test_supervisor.py::test_a_store_file_deleted_or_replaced_under_a_running_supervisor_is_noticed`, `tests/test_faults_more.py` |
| `KeyError` when a client leaves right after `subscribe` | fixed | `tests/test_bounds.py` |
| a stale `control.sock` made every command wait 10 s | the free lock says at once that no supervisor runs | `tests/test_supervisor.py` |
| a keeper that hangs before its hello holds its messages for ever | killed after `keeper_start_timeout`, its messages reported not delivered | `tests/test_supervisor.py` |
| attachments: FIFOs, devices, directories, `/proc` | refused at `send`: an attachment is an ordinary readable file, copied there (below); a 2 GB sparse "image" is over the 32 MiB limit (`too_large`) | `tests/test_bounds.py` |
| a bug in the keeper (its state machine raising half-way through an event) was only logged: the session could stay stuck with no one told (a turn never answered, a message never handed to Claude; an illegal transition once sent a message to the wrong Claude) | the session fails clearly: an `error` event names the internal error, every message the keeper held is reported not delivered (none handed to a new keeper by itself: it might trip the bug again), Claude is stopped, the keeper ends `failed` (`internal-error`); the next message resumes the conversation. An undecodable frame or a value the keeper does not know is input: logged and ignored | `tests/test_keeper_errors.py` |
| a bug while the keeper made its hello (on a reconnect: a new supervisor) killed the link's task before the hello went out: the supervisor saw only a keeper that never spoke (reaped, or dead: its messages "killed", no word why) | the session fails as on any other bug, and the keeper says hello all the same by what stays true (who it is, `failed`, whether the conversation exists); it is taken on, and waits up to 5 s for the Welcome so its reports (the `error` event, each message not answered, `failed` `internal-error`) reach the supervisor | `tests/test_keeper_errors.py::test_a_bug_while_the_keeper_says_hello_fails_the_session_clearly_and_it_introduces_itself_all_the_same`, `::test_a_bug_while_an_adopted_keeper_says_hello_fails_its_session_clearly` |
| a message steered into a turn (written to Claude while it answers) whose Claude then exited "already in use" was never written to the Claude that resumed the conversation: the session stayed busy for ever once that Claude answered the turn's own message | the resumed Claude is given the turn's message and each steered one again, once each, in order (the user is not told twice); one whose attachment is gone meanwhile fails alone | `tests/test_keeper_machine.py::test_a_steered_message_to_a_claude_that_exits_already_in_use_is_written_once_to_the_resumed_one`, `…::test_a_steered_message_not_taken_by_the_resumed_claude_is_its_next_turn_and_answered`, `…::test_when_the_carried_over_message_fails_the_steered_one_is_still_written_and_answered`, `tests/test_steering.py::test_a_steered_message_to_a_claude_that_exits_already_in_use_reaches_the_resumed_one_once` |
| a keeper whose connection dropped and came back while its supervisor ran on (ZeroMQ reconnects by itself) said hello again and got no `Welcome` ("second hello … ignored"): it kept every report from then on (the answer never reached the user) and after `orphan_timeout` stopped Claude | welcomed again from the first report not stored (what it kept for a full disk stays kept: a keeper drops what comes before its welcome; what it sends again that was handled is not handled twice): its reports go on, each stored once; a message handed to it while the link was down (lost on the way: it waited for ever) is handed to it again unless its hello names it (a keeper ignores a message it has already) | `tests/test_lifecycle.py::test_a_keeper_that_reconnects_to_the_same_supervisor_is_welcomed_again_and_its_answer_arrives`, `::test_a_message_handed_to_a_keeper_while_its_connection_was_down_reaches_it_when_it_reconnects`, `::test_a_keeper_that_reconnects_while_the_disk_is_full_keeps_the_reports_not_stored` |
| the keeper's report that Claude's conversation exists, when the store failed to write it (disk full), was acked and lost: the session's next keeper started Claude without `--resume` and the conversation's history was gone | not acked until stored (the keeper keeps it; tried again every second with the acks); a keeper started meanwhile resumes the conversation; a fresh conversation meanwhile (/clear, /cd) forgets it (its Claude is not resumed, nor marked started) | `tests/test_lifecycle.py::test_a_conversation_started_whose_store_write_fails_is_kept_until_stored`, `::test_a_fresh_conversation_is_not_resumed_for_the_old_ones_start_waiting_for_the_store` |
"""

#: figures measured by hand (before and after the fix), kept with every regenerated report
SEND_PATH = """## Send-path bounds (issue #30)

Measured by hand (2026-12-06, 2 cores) with one session held busy by a turn and 1,500
messages of 190,000 characters sent at it through the socket, then 3 s for the keeper to
take what was accepted; main at `2daba58` before, this branch after (default limits:
100 messages, 64 MiB per session's queue):

| | before | after |
|---|---|---|
| messages accepted | 1,500 | 100; 1,400 refused with `queue_full` (nothing queued for them) |
| keeper resident memory | 25 → 298 MiB | 25 → 44 MiB |
| store (SQLite file and WAL) | +276 MiB | +22 MiB |
| supervisor resident memory | 33 → 36 MiB | 34 → 36 MiB |

`tests/test_send_bounds.py::test_a_flood_of_large_messages_into_one_session_is_bounded`
does the same in every run (300 messages; the soak sends 1,500, `SEND_FLOOD`) and asserts
the keeper and the store grow by less than the 64 MiB bound, and that every accepted
message ends in exactly one outcome.

| hole | now | test (`tests/test_send_bounds.py`) |
|---|---|---|
| an attachment swapped for a FIFO after `send` hung its session for ever; a link to `/dev/zero` grew the keeper to 6.7 GiB | taken at `send`: opened with `O_NOFOLLOW`/`O_NONBLOCK`, `fstat`, an ordinary file of at most 32 MiB (`max_attachment_mib`), copied into `<state dir>/attachments/<session>/`; the keeper reads only the copy (also without following links or blocking); FIFOs, links, directories, devices and larger files are refused at `send`; a session keeps the newest 256 MiB of its copies for later turns, all until it is archived | `test_what_is_not_an_ordinary_file_under_the_limit_is_refused_at_send`, `test_an_attachment_arrives_from_its_copy_which_stays_for_later_turns`, `test_a_session_keeps_the_newest_copies_within_its_bound_and_never_one_still_owed` |
| queued messages unbounded per session | 100 messages, 64 MiB (`max_queued_messages`, `max_queued_mib`); beyond: `queue_full`, in claudectl and the bot | `test_a_full_queue_refuses_send_with_queue_full_and_loses_nothing`, `test_a_flood_of_large_messages_into_one_session_is_bounded`, `test_the_bot_says_plainly_that_a_message_was_not_sent_to_a_full_queue` |
| `interrupt` said success when nothing reached Claude (a stopped keeper) | the reply waits (at most `interrupt_timeout`, 5 s) for Claude's `control_response`: `{confirmed, detail}`; claudectl exits 1 when not confirmed | `test_interrupt_says_whether_claude_confirmed_it` |
| `v: true` and `v: 1.0` accepted as version 1 | only the integer 1 | `test_only_the_integer_1_is_protocol_version_1` |
"""

HELPERS_AND_FAULTS = """## Helper processes and faults (issue #30)

Items 5, 6, 10 and 12 of issue #30, each with its test in `tests/test_faults_more.py`
(run by `./scripts/reliability`; the figures are in the table above). Faults injected by
these tests in one run: 43 (a second supervisor, 7 fork-server kills, a foreign runtime
dir, 2 SIGSTOPs, 2 clock steps, a deleted store, a read-only file system, 25 malformed
and 3 enormous lines). Messages lost: 0; messages answered twice: 0.

| fault | before | now | test |
|---|---|---|---|
| a second supervisor on the same state dir, another runtime dir | both ran: two keepers and two Claudes on one conversation | refused at once, exit 1, naming the pid that holds `<state dir>/supervisor.lock` | `test_a_second_supervisor_on_the_same_state_dir_is_refused_naming_the_first` |
| kill -9 of the fork server | every session stopped, exit 0 (so `Restart=on-failure` did nothing) | a new fork server (fork and exec: the supervisor has threads by then); every keeper and its turn go on, answered once; new sessions start; the old keepers' exits are watched by pidfd (suspend and kill -9 both noticed). A spawn the dead server never answered: the keeper's hello settles it, else after `keeper_start_timeout` it is started anew (or, if a keeper was forked and hung, killed and its messages reported) | `test_kill_9_of_the_fork_server_keeps_every_keeper_and_its_turn`, `test_a_spawn_the_dead_fork_server_never_answered_is_started_anew_with_its_message`, `test_a_keeper_forked_just_before_the_fork_server_died_is_taken_on_by_its_hello` |
| the fork server dies 4 times within a minute | — | the supervisor gives up: exit 1 without stopping a keeper; restarted (as systemd would), it adopts them and the running turn is answered once | `test_a_fork_server_that_keeps_dying_makes_the_supervisor_exit_1_and_the_next_adopts_its_keepers` |
| `/tmp/supervisord-claude-<uid>` made by another user | refused; the docs said to remove it (impossible) | the refusal and docs/troubleshooting.md say what to do: `--runtime-dir` / `SUPERVISORD_CLAUDE_RUNTIME_DIR`, `XDG_RUNTIME_DIR`, ask the administrator | `test_a_runtime_dir_made_by_another_user_is_refused_saying_what_to_do_instead` |
| SIGSTOP of a keeper mid-turn | — | another session answered 3 times meanwhile; after SIGCONT the stopped session's 2 messages answered once each, in order | `test_a_stopped_keeper_holds_up_no_other_session_and_loses_nothing` |
| SIGSTOP of the bot | — | claudectl served meanwhile; the answer written while it was stopped and the message sent meanwhile: each delivered once, in order; Claude got the message once | `test_a_stopped_bot_loses_and_doubles_nothing` |
| Telegram hangs on every call about one chat (the fake Bot API holds them, then answers 502), another chat's session answers 3 times meanwhile; then the bot is killed (kill -9) before the first chat's answer got through | the other chat got nothing until the hanging chat's answer went through: the delivery showed one event at a time, for every chat | the other chat's 3 answers came at once, in order; after the kill -9 and a new bot, the held answer came once and the other chat's 3 were not shown again (they were kept as shown in the kv, `telegram.delivery.done`) | `tests/test_bot_workers.py::test_a_chat_whose_telegram_calls_hang_holds_up_no_other_chat`, `::test_answers_shown_past_a_hanging_chat_are_not_shown_again_after_a_bot_kill_9` |
| the wall clock stepped an hour forward, then back (a `sitecustomize` shim shifts `time.time` in every process) | `status` `uptime` was wall-clock: +1 h, or negative | idle timers are on the monotonic clock: a 4 s timeout fired after 4.0 s both times; `uptime` is monotonic; "idle for" after a suspension is the wall clock's (a step forward counts), never negative | `test_the_wall_clock_stepped_an_hour_forward_and_back_fires_no_idle_timer_early_or_never`, `test_uptime_stays_sane_when_the_wall_clock_steps_an_hour` |
| the store file deleted mid-turn | new work refused; what was acknowledged was gone at the next restart | written back from the open database (SQLite backup API) within 2 s; after kill -9 and a restart all 4 acknowledged messages are there, answered once | `test_a_store_file_deleted_under_a_running_supervisor_is_restored_and_nothing_is_lost` |
| the state dir's file system goes read-only mid-turn. As root `chmod` stops nothing and a mounted file system with files open for writing cannot be remounted read-only, so the test does what the kernel does on an I/O error: an ext4 loop image mounted `errors=remount-ro`, then `trigger_fs_error` | new work refused with "disk I/O error" | refused with a `storage` error saying the file system is read-only and what to do; the supervisor keeps running (no crash loop); after kill -9, fsck and a restart the running turn's answer, kept by its keeper, is delivered once | `test_a_state_dir_gone_read_only_under_a_running_supervisor_loses_nothing_acknowledged` |
| Claude writes malformed lines (24 kinds: not JSON, cut short, fields of the wrong shape) and a result whose every field has the wrong type | the turn hung for ever (the keeper's reader died on e.g. `"message": "x"`) | skipped; the turn is answered; the odd result ends its turn; same keeper | `test_malformed_lines_from_claude_are_skipped_and_the_turn_is_answered` |
| Claude writes three 50 MB lines, one per turn | — | answered, cut with a note; the keeper 25 MiB → 76 MiB after the first and flat after (76.0, 76.0, 76.2); same keeper | `test_enormous_lines_from_claude_leave_the_keeper_alive_and_its_memory_flat` |
"""


#: the figures of issue #30, before and after (the "before" cannot be measured again)
BOUNDS = """## Bounds (issue #30)

Measured on this machine (2 cores shared with other work), the supervisor's resident
memory as its `status` reports it, with the fake Claude; the tests in
`tests/test_bounds.py` repeat each case on every `./scripts/test` and record their
figures in the table above when the soak runs.

| case | before the fix | after | test |
|---|---|---|---|
| one client sends 6,000 `status`/`list`/`kv_get` (64 KiB value) requests and never reads | 34 → 139 MiB (every reply kept: the control socket had no send high-water mark) | 34 → 37 MiB; 4,849 of its replies dropped, its own; another client's turn answered meanwhile | `test_a_client_that_never_reads_its_replies_costs_a_bounded_amount` |
| ack everything, unsubscribe, subscribe again from the start, 100 times, never reading (~5 MB of stored events) | 44 → 381 MiB (232 in another run) | 45 → 58 MiB, and 45 → 58 MiB after 400 loops (what its pipe may hold, once: ~8 MiB); another client's subscription got every new event, in order | `test_ack_all_unsubscribe_resubscribe_in_a_loop_costs_a_bounded_amount` |
| 1,200 connections at once, open files soft 512 / hard 1,024, a turn running | libzmq aborted the supervisor (`Too many open files (src/ipc_listener.cpp:297)`, SIGABRT, exit 134): the turn lost, every session gone | soft limit raised to 1,024; the door closed at 746 connections (at most 774 to 825 descriptors in use over 6 runs under load, 1,024 allowed); 0 aborts; the turn answered during the flood; a new client served after it | `test_more_connections_than_open_files_never_take_the_supervisor_down` |
| 60 connections at once with `max_connections = 20` | — | ~20 served, the others wait and are told why; served again once they leave | `test_clients_over_max_connections_wait_and_the_others_are_served` |
| a subscriber 3,000 events behind sends 20 requests | — | every reply, then every event in order | `test_a_subscriber_behind_on_events_still_gets_every_reply` |
| a client fills its pipe with 400 unread 64 KiB replies, then reads again | — | what was held comes in order, then the reply to its next request | `test_a_client_that_was_slow_and_reads_again_is_served_again` |

The limits (also in docs/protocol.md, "Limits"):

- What waits for one client to read it: 128 frames (the control socket's send
  high-water mark) and about 8 MiB (the pipe holds at most the last 128 frames sent, so
  nothing more is sent while those add up to 8 MiB); replies that find it full wait, up
  to 64 and 1 MiB, and go before any event. Beyond that a client that does not read
  loses its own replies (logged at most 10 times a minute). Events wait in the store.
  An ack is only the client's word, so this bound does not depend on acks or on what
  the client does with its subscriptions.
- Requests waiting to be read, per client: 64.
- Clients connected at once: `max_connections` (default 1000), and never so many that
  fewer than a quarter of the open-files limit (at least 256 descriptors) stays free
  for keepers and the store. libzmq 4.3.5 aborts when its ipc listener's `accept` fails
  with EMFILE, cannot refuse one connection, and drops every accepted connection when
  its listener is unbound; so at the limit the supervisor hides `control.sock` (unlinks
  it; a second name keeps the listener) until clients leave. A ZeroMQ socket monitor
  counts connections; the door closes as soon as an accepted descriptor is that high.
  The soft `RLIMIT_NOFILE` is raised to the hard one at start.
- `claudectl status` shows them on its `limits:` line (⚠ from 80%).
"""


#: what adoption after a restart guarantees (tests/test_lifecycle.py, test_restart.py, test_upgrade.py)
ADOPTION = """## Adoption across a supervisor restart

A supervisor that is restarted, upgraded or killed (kill -9) leaves its keepers running;
the next one adopts each keeper that says hello within 3 s. What each message then
becomes:

- **Nothing acknowledged is lost.** A message is stored (`queued`) before `send` is
  answered. A keeper numbers every report and keeps it until the supervisor has stored
  it (its ack); the new supervisor's welcome names the first report it has not stored,
  and the keeper sends everything from there again, in order: each event is stored once.
- **A message is handed to Claude once.** The store says `queued` until the keeper's
  report that Claude took it (`user`, `steered`/`taken`, its `result`, or its failure) is
  stored. A supervisor killed after such a report left the keeper but before it stored it
  leaves the message `queued` while Claude has had it. So the new supervisor hands an
  adopted keeper nothing until it has stored every report that keeper had sent when it
  said hello (its hello names the number of its last one, `last_n`); then the store knows,
  and only what is still `queued` is owed. A message the keeper holds or steered (its
  hello names them) is the keeper's own and is never handed to it again.
- **A keeper takes a message once.** The hello names what the keeper had processed when
  it said it; a `Deliver` the old supervisor sent just before it died can be read by the
  keeper after that (it sat in the keeper's socket while the keeper was stopped or busy),
  so the new supervisor finds it `queued`, named nowhere, and hands it over again. The
  keeper knows every message it was given (held, answered or failed) and ignores one
  given again (logged): Claude answers it once.
- **A message dropped meanwhile is dropped once it is known.** `drop_queued` while an
  adopted keeper's reports from before the restart are not stored yet: a message the
  store still calls `queued` may be one Claude answered. Each is reported dropped once
  the reports are stored (or the keeper is gone), if it is still owed then; one Claude
  had gets its answer only (it got "dropped" and then the answer). A message sent after
  the drop is not dropped.
- **What is owed is delivered**,
 in the order it came, also a message the keeper never
  got (its `Deliver` died with the old supervisor): it goes to the adopted keeper once its
  reports are stored; messages sent to the new supervisor meanwhile wait behind it.
- **Nothing waits for ever.** The keeper sends its reports again as soon as it is welcomed
  (a fraction of a second). If it exits first, what the store still owes goes to the next
  keeper of the session (Claude may then see a second time a message whose answer was
  never stored: an answer the user never got). If they have not come within
  `keeper_start_timeout` (30 s; a keeper stopped after its hello), its messages go to it
  anyway, with a warning in the log. Reports that came and wait for a full disk are
  waited for, as every ack is, until they can be stored.
- A keeper forked by a release before this one (wire 7 and before, adopted after an
  upgrade in place) does not say its last report: its owed messages go to it when the
  adoption window closes, as before. Its reports usually arrive first; if not, a message
  it took in the moment the old supervisor died can reach Claude twice (at that upgrade
  only: the keepers forked after it say their last report).

Tests: `tests/test_lifecycle.py::test_a_message_an_adopted_keeper_took_before_its_supervisor_stored_that_is_not_sent_again`
(answered, taken into the running turn, failed),
`::test_an_adopted_keeper_that_dies_before_its_reports_come_again_leaves_its_owed_messages_to_the_next`,
`::test_an_adopted_keeper_that_does_not_send_its_reports_again_holds_its_messages_only_so_long`,
`::test_an_adopted_keepers_reports_that_wait_for_a_full_disk_are_waited_for`,
`::test_an_adopted_keeper_of_an_older_wire_gets_what_is_owed_without_waiting`,
`::test_a_message_an_adopted_keeper_steered_before_its_supervisor_died_is_sent_once_and_not_left_waiting`,
`tests/test_keeper_machine.py::test_a_message_handed_to_the_keeper_again_is_not_given_to_claude_twice`,
`tests/test_lifecycle.py::test_messages_dropped_while_an_adopted_keepers_reports_are_awaited_are_dropped_once_known`,

`tests/test_restart.py::test_messages_a_keeper_answered_while_no_supervisor_ran_are_not_given_to_claude_again`
(a real kill -9: the keeper answers two held messages after a turn of 100,000 events
while no supervisor runs; before the fix Claude got each twice, 3 runs of 3),
`tests/test_upgrade.py`.

## What a graceful shutdown does with the messages held

A shutdown (SIGTERM, `claudectl shutdown`) stops every keeper, and each keeper stops its
Claude. What becomes of each message not answered yet:

| the message | at the shutdown | after the next start |
|---|---|---|
| waiting in the supervisor (not handed to a keeper) | kept (`queued` in the store) | delivered, in order |
| held by the keeper, queued behind the turn | given back to the supervisor (`Rejected`), kept | delivered, in order |
| written into the running turn (steered) that Claude had not taken (no echo: it is not in the conversation) | given back once Claude has stopped, kept (`queued` again) — it was reported not delivered before | delivered, in order |
| the one Claude was answering, and the steered ones Claude took into its turn | reported not delivered ("Claude was stopped before it finished answering (supervisor shutdown)"; the bot offers Retry): the turn was cut, and its partial answer is in the conversation | — |

Stopping a keeper for the terminal (`claudectl attach`) does the same (kept until the
terminal closes); archiving reports every kept message not delivered ("session
archived"). Should the store fail to record a given-back steered message as owed again,
the next start reports it not delivered (it stays `written`). A keeper forked by the
release before (internal wire 8, adopted after an upgrade in place) still reports its
steered messages not delivered at a stop, and a message handed to it while its
connection was down is not handed to it again (it would take a repeat as new).


Tests: `tests/test_restart.py::test_messages_held_at_a_graceful_shutdown_are_answered_after_the_next_start`,
`tests/test_keeper_machine.py::test_a_stop_mid_turn_gives_back_the_steered_messages_claude_never_took_as_the_queued_ones`,
`tests/test_lifecycle.py::test_a_steered_message_a_stopping_keeper_gives_back_is_owed_again`.
"""


def cell(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def main() -> int:
    path, status = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "?"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    params = ", ".join(f"{k}={os.environ.get(k, '-')}" for k in
                       ("FAULT_ROUNDS", "HOSTILE_FRAMES", "LOAD_SESSIONS", "LOAD_STREAMING", "UPGRADE_SESSIONS"))
    out = [INTRO, f"Run: {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {platform.python_version()},"
           f" {params}; pytest exit status {status}.\n", "## What was tried and what held\n",
           "| what was tried | how often | what held |", "|---|---|---|"]
    for row in rows:
        fault = row.pop("fault")
        rounds = row.pop("rounds", 1)
        out.append(f"| {fault} | {rounds} | {'; '.join(f'{k}: {cell(v)}' for k, v in row.items())} |")
    out += ["", HOLES, SEND_PATH, BOUNDS, HELPERS_AND_FAULTS, ADOPTION]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
