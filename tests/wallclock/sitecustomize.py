"""Test shim (put on PYTHONPATH): shifts this process's wall clock — ``time.time`` and
``time.time_ns`` — by the seconds written in the file ``$FAKE_WALL_OFFSET_FILE``, read on
every call, as if the system clock were stepped (NTP, a resumed VM, an operator). The
monotonic clock is left alone, as a real step leaves it."""

from __future__ import annotations

import os
import time

_path = os.environ.get("FAKE_WALL_OFFSET_FILE")
if _path:
    _real_time, _real_time_ns = time.time, time.time_ns

    def _offset() -> float:
        try:
            with open(_path) as f:
                return float(f.read() or 0)
        except (OSError, ValueError):
            return 0.0

    time.time = lambda: _real_time() + _offset()
    time.time_ns = lambda: _real_time_ns() + int(_offset() * 1e9)
