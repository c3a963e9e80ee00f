"""What Claude cost and the daily caps (issue #27): ``/budget`` shows spend today and
this month and sets a session's or all sessions' cap; a message a cap held is kept, with
a button that raises the cap for today and sends it. Part of the daily commands
(``_daily``).

Buttons (callback data, at most 64 bytes):

    bud:<token>               allow one more day's cap today to the cap that held a message, send it
"""

from __future__ import annotations

import secrets

from protocol import BudgetReport, money

from . import _commands as commands
from ._commands import Link, Reply
from ._zone import user_zone

BUDGET_USAGE = ("Usage: /budget — what Claude cost today and this month; /budget <usd> — this session's daily"
                " cap; /budget all <usd> — the daily cap for all sessions; 'off' instead of <usd> removes one")


def _line(name: str, today: float, month: float, cap: float | None, extra: float = 0.0) -> str:
    limit = (cap or 0.0) + extra
    more = f" + {money(extra)} today only" if extra else ""
    share = f" of {money(cap)} a day{more} ({today / limit:.0%}{' ⚠️' if today >= 0.8 * limit else ''})" \
        if cap else ""
    return f"{name}: today {money(today)}{share} · this month {money(month)}"


def budget_text(report: BudgetReport, active: str | None) -> str:
    lines = ["💰 What Claude cost"]
    for row in report["sessions"]:
        mark = "→ " if row["session"] == active else ""
        lines.append(mark + _line(row["session"], row["today"], row["month"], row["cap"], row.get("extra", 0.0)))
    lines.append(_line("All sessions (the whole machine)", report["today"], report["month"], report["cap"],
                       report.get("extra", 0.0)))
    if report["cap"] is None and report.get("default_session_cap") is None and not any(
            r["cap"] for r in report["sessions"]):
        lines.append("\nNo caps set. " + BUDGET_USAGE.split(";", 1)[1].strip())
    return "\n".join(lines)


def _usd_arg(text: str) -> float | str | None:
    """A cap typed by the user: a number (``5``, ``$0.50``), None for off, or the problem."""
    if text.lower() in ("off", "none"):
        return None
    try:
        value = float(text.removeprefix("$"))
    except ValueError:
        return f"'{text}' is not an amount in US dollars."
    return value if value > 0 else "A cap must be more than $0 ('off' removes it)."


async def budget(link: Link, chat: int, args: list[str]) -> Reply:
    """``/budget [all] [<usd>|off]``: spend and caps; or set this session's (or all sessions') daily cap."""
    active = await link.active(chat)
    scope_all = bool(args) and args[0].lower() == "all"
    amount = args[1:] if scope_all else args
    if len(amount) > 1:
        return Reply(BUDGET_USAGE)
    if amount:
        value = _usd_arg(amount[0])
        if isinstance(value, str):
            return Reply(f"{value}\n{BUDGET_USAGE}")
        if not scope_all and active is None:
            return Reply("No active session: /budget all <usd> sets the cap for all sessions.")
        # (the cap's day ends at this user's midnight, if they set a zone)
        await link.set_budget(value, session=None if scope_all else active, tz=await user_zone(link) or None)
        whose = "all sessions together" if scope_all else f"'{active}'"
        said = f"✅ Daily cap of {whose}: {money(value)}." if value is not None else f"✅ No daily cap for {whose}."
        return Reply(said)
    report = await link.budget()
    report["sessions"] = [r for r in report["sessions"] if await link.visible(r["session"])
                          and (r["month"] or r["cap"] or r["session"] == active)]
    return Reply(budget_text(report, active))


#: messages a daily cap held, per chat, until the button under them is pressed:
#: ``[token, session, text, attachments, idempotency key, message id]`` — kept in the
#: supervisor (kv), so a press after a bot restart sends it, and sends it once (the
#: message's own idempotency key)
KV_OVER_BUDGET = "telegram.overbudget.{chat}"
OVER_BUDGET_KEPT = 50


async def hold_over_budget(link: Link, chat: int, session: str | None, text: str, attachments: list[str] | None,
                           key: str, message_id: int | None, why: str) -> Reply:
    """A message a daily cap refused: say why, keep it, offer to raise the cap for today and send it."""
    session = session or await link.active(chat)
    token = secrets.randbelow(2**31)
    await link._keep(KV_OVER_BUDGET.format(chat=chat), [token, session, text, attachments, key, message_id],
                     OVER_BUDGET_KEPT)
    reached = await _reached_cap(link, session)
    label = f"🔼 Allow {money(reached[1])} more today and send it" if reached else "🔼 Send it"
    return Reply(f"💸 Held, not sent: {why.split('; nothing was sent')[0]}.", buttons=[(label, f"bud:{token}")])


async def _reached_cap(link: Link, session: str | None) -> tuple[str | None, float, str | None] | None:
    """(scope, one day's cap, its zone) of the cap that is reached — the session's
    (scope: its name) or all sessions' (None); None if none is reached."""
    report = await link.budget(session=session or None)
    for row in report["sessions"]:
        if row["cap"] is not None and row["today"] >= row["cap"] + row.get("extra", 0.0):
            return row["session"], row["cap"], row.get("tz")
    if report["cap"] is not None and report["today"] >= report["cap"] + report.get("extra", 0.0):
        return None, report["cap"], report.get("tz")
    return None


async def raise_and_send(link: Link, chat: int, token: str) -> Reply:
    """The held message's button: let the cap that held it be passed by one more day's
    cap, today only, and send the message (once, whoever pressed first)."""
    entry = await link._take(KV_OVER_BUDGET.format(chat=chat), int(token)) if token.isdigit() else None
    if entry is None or len(entry) != 6:
        return Reply("That message is no longer held (sent already, or too old): send it again if it still matters.")
    _, session, text, attachments, key, message_id = entry
    reached = await _reached_cap(link, session)
    said = "Sent."
    if reached is not None:
        scope, usd, tz = reached
        await link.budget_allow(usd, session=scope or None)
        zone_name = tz or "the supervisor's time zone"
        said = (f"✅ {f'{scope!r}' if scope else 'All sessions'} may spend {money(usd)} more today; the cap is back"
                f" at midnight ({zone_name}). Sent.")
    reply = await commands.send(link, chat, text, attachments, key, message_id=message_id, session=session)
    return Reply("\n".join(filter(None, [said, reply.text if reply else None])), quiet=True)


__all__ = [
    "BUDGET_USAGE",
    "KV_OVER_BUDGET",
    "OVER_BUDGET_KEPT",
    "budget",
    "budget_text",
    "hold_over_budget",
    "raise_and_send",
]
