"""The benchmark harness keeps working: ``benchmarks/run.py --quick`` prints valid JSON lines.

Only the shape is checked. Wall-clock figures come from the harness, never from a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIRED_KEYS = {
    "scenario",
    "variant",
    "n",
    "concurrency",
    "wall_s",
    "cases_per_s",
    "us_per_case",
    "peak_rss_mb",
    "efficiency",
}
SCENARIOS = {"P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"}


def test_quick_mode_prints_one_valid_json_line_per_scenario_run() -> None:
    """Every stdout line parses as an object with the required keys, and every scenario ran."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    records = [json.loads(line) for line in lines]
    for record in records:
        assert isinstance(record, dict)
        assert REQUIRED_KEYS <= record.keys(), record
        assert record.get("ok", True) is True, record
    assert {r["scenario"] for r in records} == SCENARIOS
    p4 = [r for r in records if r["scenario"] == "P4"]
    assert all("rss_per_case_kb" in r for r in p4)
    assert all(r["efficiency"] is not None for r in records if r["scenario"] == "P3")
    p8 = {r["variant"]: r for r in records if r["scenario"] == "P8"}
    assert p8.keys() == {"untraced", "otel"}
    traced = p8["otel"]
    # One run span plus a generation and a score span per case, all exported by the flush.
    assert traced["spans_exported"] == traced["spans_expected"] == 1 + 2 * traced["n"]
    assert traced["overhead_ratio"] > 0
    assert "overhead_ratio" not in p8["untraced"]
