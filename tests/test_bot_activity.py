"""How what a session does is described (``bot._activity``), as plain functions."""

from bot import _activity as activity


def test_the_stalled_notice_and_the_reminder_say_what_and_how_long() -> None:
    stalled = {"session": "work", "doing": "writing", "silent_for": 301, "cpu_percent": 0.4}
    assert activity.stalled_text(stalled) == ("⚠️ Claude in 'work' seems stuck: writing, and no output and almost no"
                                              " CPU (0.4%) for 5 min. Stop it, or keep waiting?")
    reminder = {"session": "work", "tool_name": "Bash", "detail": "make deploy", "waited": 600, "denied_in": 120}
    assert activity.reminder_text(reminder) == ("⏰ Claude in 'work' has been waiting 10 min for your answer to Bash"
                                                " (make deploy). Without an answer it is denied in 2 min.")
