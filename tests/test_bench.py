"""scripts/bench --quick runs in the suite: every figure is measured and written (errors
fail here; timings never do — they are read in docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_the_quick_benchmark_measures_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    plot = tmp_path / "scaling.png"
    growth = tmp_path / "growth.png"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--live-lag", "--json", str(out),
                          "--plot", str(plot), "--growth-plot", str(growth)], capture_output=True, text=True,
                         timeout=850)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("rt_ours_us", "rt_raw_p99_us", "status_claudectl_ms", "status_supervisorctl_ms",
                "status_circusctl_ms", "fork_ms_frozen", "pss_mib_frozen", "msg_ours_p99_us",
                "events_per_s", "bare_lines_per_s", "bare_orjson_lines_per_s", "supervisor_us_per_event",
                "keeper_us_per_event", "client_us_per_event", "stage_keeper_us", "stage_decode_us",
                "stage_pool_store_hub_us", "tg_lag_p50_ms", "tg_lag_p99_ms",
                "real_ours_ms", "real_protocol_ms", "real_bare_ms", "resume_ours_ms", "resume_bare_ms"):
        assert figures[key] > 0, key
    if Path("/usr/sbin/sshd").exists():  # (the ssh round trip needs a real sshd: scripts/test installs it)
        assert figures["ssh_rt_us"] > 0 and figures["ssh_direct_rt_us"] > 0 and figures["ssh_connect_ms"] > 0
        assert figures["ssh_ctl_before_ms"] > 0 and figures["ssh_ctl_next_ms"] > 0
    assert [row["sessions"] for row in figures["scaling"]] == [10]
    assert all(row["rss_mib"] > 0 and row["events_per_s"] > 0 for row in figures["scaling"])
    assert [row["events"] for row in figures["eventlog"]] == [10_000]
    assert [(row["on_file"], row["live"]) for row in figures["on_file"]] == [(0, 0), (10, 0), (1000, 50)]
    assert all(row["startup_s"] > 0 and row["list_request_ms"] > 0 and row["rss_mib"] > 0 for row in figures["on_file"])
    [streaming] = figures["streaming"]
    assert streaming["tg_sessions"] == 3 and streaming["tg_supervisor_cpu"] > 0 and streaming["tg_lag_p99_ms"] > 0
    assert streaming["live_lag_p99_ms"] > 0
    for png in (plot, growth):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
