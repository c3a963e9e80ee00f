"""claudectl's commands of the daily driver (issue #27): ``rules`` (always-allow),
``budget`` (spend and daily caps), ``diff`` (the session's git changes), ``schedule``
(prompts at set times), ``fork``; and their parsers."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import Any

from protocol import BudgetReport, Client, money

from ._common import show


def cmd_rules(client: Client, args: argparse.Namespace) -> int:
    """A session's always-allow rules, numbered; ``--remove N`` forgets rule N; ``--add
    TOOL SCOPE`` adds one (a file tool in a directory, a Bash command, a WebFetch domain)."""
    if args.add is not None:
        added = client.add_rule(args.name, args.add[0], args.add[1])
        show(args, added, f"added {added['added']} to '{args.name}' ({len(added['rules'])} rule(s); a running"
                          " Claude restarts with them after its turn)")
        return 0
    if args.remove is not None:
        result = client.remove_rule(args.name, index=args.remove)
        show(args, result, f"removed {result['removed']} from '{args.name}'"
               f" ({len(result['rules'])} rule(s) left; a running Claude restarts with them after its turn)")
        return 0
    rules = client.rules(args.name)
    rows = [f"{i}. {rule}" for i, rule in enumerate(rules, 1)]
    show(args, {"rules": rules}, "\n".join(rows) or f"'{args.name}' has no always-allow rules")
    return 0


def budget_lines(report: BudgetReport) -> list[str]:
    """Spend today and this month, per session and in total, against the daily caps."""
    def share(row: Mapping[str, Any]) -> str:
        cap, extra = row["cap"], row.get("extra") or 0.0
        more = f" + {money(extra)} today only" if extra else ""
        return f" of {money(cap)}{more} ({row['today'] / (cap + extra):.0%})" if cap else ""

    lines = [f"{r['session']}: today {money(r['today'])}{share(r)}, this month"
             f" {money(r['month'])}{'' if r['cap'] else ' (no daily cap)'}" for r in report["sessions"]]
    lines.append(f"all sessions: today {money(report['today'])}{share(report)}, this month"
                 f" {money(report['month'])}{'' if report['cap'] else ' (no daily cap)'}")
    return lines


def cmd_budget(client: Client, args: argparse.Namespace) -> int:
    """What Claude cost today and this month, per session and in total, with the daily
    caps; ``--cap USD`` (or ``none``) sets one: the session's with ``--session``, else the
    daily cap for all sessions."""
    if args.allow is not None:  # once: more today only
        result = client.budget_allow(args.allow, session=args.session or None)
        whose = f"session '{args.session}'" if args.session else "all sessions"
        show(args, result, f"{whose} may spend {money(args.allow)} more today (the cap is back tomorrow)\n"
             + "\n".join(budget_lines(result)))
        return 0
    if args.cap is not None:
        usd = None if args.cap == "none" else args.cap
        client.set_budget(usd, session=args.session or None, tz=args.tz)
        whose = f"session '{args.session}'" if args.session else "all sessions"
        print_done = f"daily cap of {whose}: {money(usd)}"
        result = client.budget(session=args.session or None)
        show(args, result, print_done + "\n" + "\n".join(budget_lines(result)))
        return 0
    result = client.budget(session=args.session or None)
    show(args, result, "\n".join(budget_lines(result)))
    return 0


def cap_arg(text: str) -> float | str:
    """``--cap``: US dollars (``5``, ``$0.50``), or ``none``."""
    if text.lower() == "none":
        return "none"
    try:
        return float(text.removeprefix("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of US dollars or 'none', not {text!r}") from None


def cmd_diff(client: Client, args: argparse.Namespace) -> int:
    """The session's git working-tree changes: staged, then not staged (the whole diffs),
    then untracked files."""
    result = client.diff(args.name, path=args.path or None)
    if not result["repo"]:
        show(args, result, f"{result['cwd']} is not in a git repository: no changes to show")
        return 0
    out = []
    for title, side in (("staged", result["staged"]), ("not staged", result["unstaged"])):
        if side["files"]:
            out.append(f"# {title}: " + ", ".join(f"{f['path']} +{f['added']} -{f['removed']}" for f in side["files"]))
            out.append(side["diff"].rstrip("\n") + ("\n# (cut)" if side["truncated"] else ""))
    if result["untracked"]:
        out.append("# untracked: " + ", ".join(result["untracked"]))
    show(args, result, "\n".join(out) or "no changes: the working tree matches the last commit")
    return 0


def schedule_line(s: Mapping[str, Any]) -> str:
    state = "paused" if s["paused"] else f"next {time.strftime('%Y-%m-%d %H:%M', time.localtime(s['next_run']))}"
    return f"{s['id']}. {s['session']}: {s['cron']}{' (' + s['tz'] + ')' if s['tz'] else ''} {s['prompt']!r}  {state}"


def cmd_schedule(client: Client, args: argparse.Namespace) -> int:
    """Schedules (kept and run by the supervisor): add, ls, pause, resume, rm."""
    if args.action == "add":
        made = client.schedule_add(args.name, args.when, prompt=args.prompt, tz=args.tz or None)
        show(args, made, f"added: {schedule_line(made)}")
    elif args.action == "ls":
        listed = client.schedules(session=args.name or None)
        show(args, {"schedules": listed}, "\n".join(schedule_line(s) for s in listed) or "no schedules")
    elif args.action == "rm":
        removed = client.schedule_remove(args.id)
        show(args, removed, f"removed: {schedule_line(removed)}")
    else:
        changed = client.schedule_set(args.id, args.action == "pause")
        show(args, changed, schedule_line(changed))
    return 0


def cmd_fork(client: Client, args: argparse.Namespace) -> int:
    """A new session that continues a copy of this one's conversation."""
    made = client.fork(args.name, args.new)
    copied = "continues a copy of its conversation" if made["copied"] else "starts afresh (it had no conversation)"
    show(args, made, f"session '{args.new}' forked from '{args.name}': {copied}; the original is untouched")
    return 0


def add_daily_parsers(sub: Any) -> None:
    """The daily driver's commands, on claudectl's subcommand parsers ``sub``."""
    s = sub.add_parser("rules", help="a session's always-allow rules; --remove N forgets rule N")
    s.add_argument("name")
    s.add_argument("--remove", type=int, metavar="N", help="forget rule N (as numbered by the list)")
    s.add_argument("--add", nargs=2, metavar=("TOOL", "SCOPE"),
                   help="allow Edit in a directory, Bash a command ('npm test') or WebFetch a domain from now on")
    s.set_defaults(func=cmd_rules)
    s = sub.add_parser("budget", help="spend today and this month per session and in total; --cap sets a daily cap")
    s.add_argument("--session", metavar="NAME", help="one session (with --cap: its own daily cap)")
    s.add_argument("--cap", metavar="USD", type=cap_arg, help="set the daily cap in US dollars ('none' removes it)")
    s.add_argument("--tz", metavar="ZONE", help="with --cap: the time zone its day ends in (e.g. Europe/Berlin)")
    s.add_argument("--allow", metavar="USD", type=float,
                   help="raise the cap once: USD more may be spent today (the cap is back tomorrow)")
    s.set_defaults(func=cmd_budget)
    s = sub.add_parser("diff", help="a session's git working-tree changes (staged and not staged)")
    s.add_argument("name")
    s.add_argument("path", nargs="?", help="only changes under this path (relative to the session's directory)")
    s.set_defaults(func=cmd_diff)
    s = sub.add_parser("fork", help="a new session that continues a copy of a session's conversation")
    s.add_argument("name")
    s.add_argument("new", help="the new session's name")
    s.set_defaults(func=cmd_fork)
    s = sub.add_parser("schedule", help="prompts sent to a session at set times (kept and run by the supervisor)")
    actions = s.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="add one: WHEN is a cron expression or e.g. 'weekdays 9:00', 'every 15m'")
    a.add_argument("name")
    a.add_argument("when")
    a.add_argument("prompt")
    a.add_argument("--tz", help="an IANA time zone (default: the supervisor's timezone, else the machine's)")
    a = actions.add_parser("ls", help="list them (of one session)")
    a.add_argument("name", nargs="?")
    for action, text in (("pause", "pause one"), ("resume", "resume one (from now on)"), ("rm", "remove one")):
        a = actions.add_parser(action, help=text)
        a.add_argument("id", type=int)
    s.set_defaults(func=cmd_schedule)

