"""A Telegram user's own time zone (``/tz``): their schedules run on its clock and the
daily caps they set end their day at its midnight (``_schedules``, ``_budget``). Part of
the daily commands (``_daily``).
"""

from __future__ import annotations

import datetime
import zoneinfo

from . import _commands as commands
from ._commands import Link, Reply

#: a Telegram user's time zone (an IANA name), by user id: their schedules run on its
#: clock and the caps they set count its day
KV_TZ = "telegram.tz.{user}"
TZ_USAGE = ("Usage: /tz — your time zone; /tz <zone> — set it (an IANA name: Europe/Berlin, America/New_York,"
            " Asia/Kolkata); /tz default — the supervisor's again")


async def user_zone(link: Link) -> str | None:
    """The current user's time zone, if they set one."""
    user = commands.current_user.get()
    stored = await link.kv_cached(KV_TZ.format(user=user)) if user is not None else None
    return stored if isinstance(stored, str) else None


async def tz(link: Link, chat: int, args: list[str]) -> Reply:
    """``/tz [<zone>|default]``: show or set the user's time zone."""
    user = commands.current_user.get()
    if len(args) > 1 or user is None:
        return Reply(TZ_USAGE)
    if not args:
        mine = await user_zone(link)
        now = datetime.datetime.now(zoneinfo.ZoneInfo(mine)).strftime("%a %H:%M") if mine else None
        return Reply(f"🕘 Your time zone: {mine} (now {now}). " if mine else
                     "🕘 You have no time zone of your own: the supervisor's is used (its config's timezone, else"
                     " the machine's). " + TZ_USAGE.split(";", 1)[1].strip())
    name = args[0]
    if name.lower() == "default":
        await link.kv_put(KV_TZ.format(user=user), None)
        return Reply("✅ Your schedules and caps use the supervisor's time zone again (for those you set from now on).")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return Reply(f"'{name}' is not a time zone. {TZ_USAGE}")
    await link.kv_put(KV_TZ.format(user=user), name)
    now = datetime.datetime.now(zoneinfo.ZoneInfo(name)).strftime("%a %H:%M")
    return Reply(f"✅ Your time zone: {name} (now {now}). Schedules you make run on its clock, and the daily caps you"
                 " set end their day at its midnight.")


__all__ = [
    "KV_TZ",
    "TZ_USAGE",
    "tz",
    "user_zone",
]
