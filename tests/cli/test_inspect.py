"""``themis inspect snapshot|state|events|trace|evaluation`` on a stored run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def test_inspect_snapshot_is_the_stored_snapshot(cli: Any, ran: tuple[Path, str, str]) -> None:
    _, spec, run_id = ran
    result = cli("inspect", "snapshot", "--store", spec, "--run-id", run_id)
    assert result.code == 0, result.err
    snapshot = result.json()
    assert snapshot["run_id"] == run_id
    assert [d["dataset_id"] for d in snapshot["datasets"]] == ["sample"]
    assert snapshot["provenance"]["components"][0]["slot"] == "generator"


def test_inspect_state_has_every_case(cli: Any, ran: tuple[Path, str, str]) -> None:
    config, _, _ = ran
    state = cli("inspect", "state", "--config", str(config)).json()
    assert state["status"] == "partial_failure"
    assert sorted(state["case_states"]) == ["6:sample:a", "6:sample:b", "6:sample:c"]


def test_inspect_events_in_seq_order_with_filters(cli: Any, ran: tuple[Path, str, str]) -> None:
    config = str(ran[0])
    events = cli("inspect", "events", "--config", config).json()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))
    assert events[0]["event_type"] == "run_started"
    assert events[-1]["event_type"] == "run_completed"
    scores = cli(
        "inspect",
        "events",
        "--config",
        config,
        "--type",
        "score_completed",
        "--type",
        "score_failed",
        "--case-id",
        "c",
    ).json()
    assert [(e["event_type"], e["metric_id"]) for e in scores] == [
        ("score_completed", "builtin/exact_match"),
        ("score_failed", "builtin/bleu"),
    ]
    tail = cli("inspect", "events", "--config", config, "--after-seq", "3", "--limit", "2").json()
    assert [e["seq"] for e in tail] == [4, 5]


def test_inspect_events_as_jsonl(cli: Any, ran: tuple[Path, str, str]) -> None:
    result = cli("inspect", "events", "--config", str(ran[0]), "--jsonl", "--limit", "3")
    lines = result.out.splitlines()
    assert len(lines) == 3
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]


def test_inspect_events_rejects_an_unknown_type(cli: Any, ran: tuple[Path, str, str]) -> None:
    result = cli("inspect", "events", "--config", str(ran[0]), "--type", "score_done")
    assert result.code == 2
    assert "score_completed" in result.message


def test_inspect_trace_filters_by_case_and_kind(cli: Any, ran: tuple[Path, str, str]) -> None:
    config = str(ran[0])
    whole = cli("inspect", "trace", "--config", config).json()
    assert len(whole["conversation_traces"]) == 3  # the demo generator records conversations
    one = cli(
        "inspect", "trace", "--config", config, "--case-id", "b", "--kind", "conversation"
    ).json()
    assert [t["case_id"] for t in one["conversation_traces"]] == ["b"]
    assert one["generation_traces"] == []
    assert one["evaluation_traces"] == []
    none = cli("inspect", "trace", "--config", config, "--candidate-id", "b-candidate-9").json()
    assert none["conversation_traces"] == []


def test_inspect_evaluation_of_a_judge_metric(cli: Any, make_project: Any, tmp_path: Path) -> None:
    config = make_project(tmp_path, metrics="[builtin/llm_rubric]", judges="[builtin/demo_judge]")
    assert cli("run", "--config", str(config)).code == 0
    result = cli(
        "inspect",
        "evaluation",
        "--config",
        str(config),
        "--case-id",
        "a",
        "--metric-id",
        "builtin/llm_rubric",
        "--dataset-id",
        "sample",
    )
    assert result.code == 0, result.err
    execution = result.json()
    assert execution["status"] == "completed"
    assert execution["scores"][0]["value"] == 1.0


def test_inspect_evaluation_not_found_exits_1(cli: Any, ran: tuple[Path, str, str]) -> None:
    result = cli(
        "inspect",
        "evaluation",
        "--config",
        str(ran[0]),
        "--case-id",
        "a",
        "--metric-id",
        "builtin/exact_match",
    )
    assert result.code == 1
    assert result.out == ""
    assert "no evaluation execution found for case a, metric builtin/exact_match" in (
        result.message
    )
