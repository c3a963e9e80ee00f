"""The session keeper: the process the fork server forks for each live session.

It owns Claude's process and the session's idle timer. ``_machine`` is the session's logic
as a state machine without I/O (fed events, returning ``_actions``), with the parts it
owns, each pure: ``_turns`` (queue, message in flight, steering), ``_prompts`` (permission
requests), ``_interrupts``, ``_settings`` (launch settings, budget), ``_runs`` (which
Claude is which, what its end means), ``_idle`` (the idle timer). ``_keeper`` carries the
actions out (Claude's process, timers) and ``_uplink`` is its link to the supervisor.
It never imports the supervisor's room; what both sides share is at the package's top
(``_wire``, ``_claude``, ``_permissions``, ``_clock``, ``_os``).
"""
