"""The two seed guides (API.md Appendix A) run unchanged and print what they promise."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        lines[key] = value
    return lines


def test_capture_traces_guide_records_one_generation_trace() -> None:
    printed = run_example("capture_traces.py")
    run_id = printed["run_id"]
    assert len(run_id) == 64 and all(c in "0123456789abcdef" for c in run_id)
    assert printed["status"] == "completed"
    assert printed["generation_traces"] == "1"
    assert printed["conversation_traces"] == "1"


def test_observe_runs_guide_sees_hooks_events_and_spans_in_order() -> None:
    printed = run_example("observe_runs.py")
    assert printed["status"] == "completed"
    assert ast.literal_eval(printed["subscriber_calls"]) == [
        "RunStartedEvent",
        "before_generate:case-1",
        "GenerationCompletedEvent",
        "ReductionCompletedEvent",
        "ParseCompletedEvent",
        "ScoreCompletedEvent",
        "RunCompletedEvent",
    ]
    assert ast.literal_eval(printed["span_names"]) == [
        "run",
        "generation",
        "reduction",
        "parse",
        "score",
    ]
    assert ast.literal_eval(printed["ended_spans"]) == [
        ("generation", "ok"),
        ("reduction", "ok"),
        ("parse", "ok"),
        ("score", "ok"),
        ("run", "ok"),
    ]
