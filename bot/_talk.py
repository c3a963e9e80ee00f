"""Messages to Claude and stopping it: ``send`` (what a message is answered when it joins
a running answer or waits), /cancel, the Retry button, and the fresh conversation a
failed resume offers.
"""

from __future__ import annotations

from typing import Any

from protocol import RemoteError

from . import _activity as activity
from . import _hosts as hosts
from . import _render as render
from ._link import Link, origin_of
from ._reply import Reply, on_active_session
from ._sessions import first_offer


@on_active_session
async def cancel(link: Link, active: str, args: list[str]) -> Reply:
    """Interrupt the running answer; with messages queued behind it, first ask whether
    they go too (asked before anything stops: the next one would start at once)."""
    info = await link.request("status", session=active)
    waiting = info["queued"]  # (not yet handed to Claude)
    if waiting > 0 and info["state"] == "busy":
        return Reply(f"Claude is answering, and {render.messages_text(waiting)}"
                     f" {'waits' if waiting == 1 else 'wait'} behind it. Stop what?",
                     buttons=[("Stop this answer", f"cancel:{active}"),
                              (f"Stop it and drop the {render.messages_text(waiting)}", f"cancelall:{active}")])
    return await interrupt(link, active)


async def interrupt(link: Link, session: str, drop_queued: bool = False) -> Reply:
    await link.check_visible(session)  # (a forged button)
    dropped = ""
    if drop_queued:  # before the interrupt: the keeper takes them in this order
        kept = (await link.request("drop_queued", session=session)).get("kept") or []
        dropped = " The queued messages were dropped." + (
            f" {render.messages_text(len(kept))} that joined the answer {'was' if len(kept) == 1 else 'were'}"
            f" already with Claude: it reads {'it' if len(kept) == 1 else 'them'} next." if kept else "")
    try:
        result = await link.request("interrupt", session=session)
    except RemoteError as exc:
        if exc.code == "not_busy":
            return await nothing_answering(link, session, dropped)
        raise
    if result.get("confirmed") is False:  # (nothing reached Claude, or it did not say so)
        return Reply(f"⚠️ Claude did not confirm the interrupt: {result.get('detail')}." + dropped)
    return Reply("Interrupting Claude..." + dropped)


async def nothing_answering(link: Link, session: str, dropped: str) -> Reply:
    """Claude is not answering in ``session``: messages that wait for it to start (a cold
    start, a resume) are what there is to cancel; else name the sessions of this user that
    do answer, with a button to stop each."""
    waiting = int((await link.request("status", session=session)).get("queued") or 0)
    if waiting and not dropped:
        await link.request("drop_queued", session=session)
        return Reply(f"Cancelled before Claude started on it: {render.messages_text(waiting)} not sent.")
    answering = [s["name"] for s in (await link.request("list"))["sessions"]
                 if s["state"] == "busy" and s["name"] != session and await link.visible(s["name"])]
    if not answering:
        return Reply("Nothing to cancel: Claude is not answering." + dropped)
    where = ", ".join(f"'{name}'" for name in answering)
    return Reply(f"Nothing to cancel in '{session}'. Claude is answering in {where}: stop it?" + dropped,
                 buttons=[(f"Stop '{name}'", f"cancel:{name}") for name in answering])


async def send(
    link: Link, chat: int, text: str, attachments: list[str] | None, update_key: str,
    timeout: float | None = None, message_id: int | None = None, session: str | None = None,
    queue: bool = False,
) -> Reply | None:
    """Forward a message to ``session`` (by default the chat's active one); None when
    there is nothing to say (the answer arrives through the event stream). While Claude
    answers there, the message joins that answer (quietly acknowledged), or with ``queue``
    waits for an answer of its own."""
    active = session or await link.active(chat, timeout)
    if active is None:  # a first message: offer to make a session for it
        return await first_offer(link)
    fields: dict[str, Any] = {"session": active, "text": text, "origin": origin_of(chat, message_id),
                              "idempotency_key": update_key}
    if attachments:
        fields["attachments"] = attachments
    if queue:
        fields["queue"] = True
    sent = await link.request("send", timeout=timeout, **fields)
    if isinstance(sent.get("message_id"), int):
        link.remember(sent["message_id"], fields)
    if sent.get("terminal") and not sent.get("duplicate"):  # kept until the terminal closes
        return Reply(activity.waiting_text(active, sent["terminal"]), quiet=True)
    ahead = sent.get("ahead")
    warning = f"💸 {sent['budget_warning']}" if sent.get("budget_warning") else None  # (80 % of a daily cap)
    if sent.get("steering") and not sent.get("duplicate"):
        return Reply("\n".join(filter(None, [render.STEERED, warning])), quiet=True)
    if isinstance(ahead, int) and ahead > 0 and not sent.get("duplicate"):
        return Reply("\n".join(filter(None, [render.queued_text(ahead), warning])), quiet=True)
    return Reply(warning, quiet=True) if warning else None


async def fresh_conversation(link: Link, chat: int, name: str) -> Reply:
    """The user chose a fresh conversation after a failed resume: start it, and send it
    the messages of this chat that failed (the user does not type them again)."""
    await link.check_visible(name)  # (a forged button)
    await link.request("new_conversation", session=name)
    failed = await link.failed_to_resume(chat, name)
    resent = [m for m in failed if await resend(link, chat, m) is None]
    if not resent:
        return Reply(f"Session '{name}' starts a fresh conversation with your next message.")
    return Reply(f"Session '{name}' starts a fresh conversation: your {render.messages_text(len(resent))}"
                 f" {'was' if len(resent) == 1 else 'were'} sent to it again.")


async def resend(link: Link, chat: int, message: hosts.MessageKey) -> Reply | None:
    """Send a failed message again (its Retry button): None once it is sent, else why
    not. Its key is the failed message's, so a second press sends nothing more."""
    fields = await link.take_failed(chat, message)
    if fields is None:
        return Reply(render.RETRY_GONE)
    await link.check_visible(fields["session"])
    sent = await link.request("send", **fields, idempotency_key=f"tg-retry:{message}")
    if sent.get("duplicate"):
        return Reply(render.RETRY_DONE)
    link.remember(sent["message_id"], fields)
    return None


async def retry(link: Link, chat: int, message: hosts.MessageKey) -> Reply:
    """The Retry button under a failure."""
    why_not = await resend(link, chat, message)
    return why_not or Reply(render.RETRY_SENT, quiet=True)
