"""``themis quickcheck``, ``report`` and ``compare`` on stored SQLite runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from themis.core.reporter import SCORE_COLUMNS


def test_quickcheck_prints_the_summary(cli: Any, ran: tuple[Path, str, str]) -> None:
    _, spec, run_id = ran
    result = cli("quickcheck", "--store", spec, "--run-id", run_id)
    assert result.code == 0, result.err
    assert result.json() == {
        "run_id": run_id,
        "status": "partial_failure",
        "total_cases": 3,
        "completed_cases": 2,
        "failed_cases": 1,
        "metric_means": {"builtin/bleu": 1.0, "builtin/exact_match": pytest.approx(2 / 3)},
        "score_rows": 6,
    }


def test_quickcheck_by_config_equals_by_run_id(cli: Any, ran: tuple[Path, str, str]) -> None:
    config, spec, run_id = ran
    by_config = cli("quickcheck", "--config", str(config))
    assert by_config.out == cli("quickcheck", "--store", spec, "--run-id", run_id).out


def test_report_defaults_to_markdown(cli: Any, ran: tuple[Path, str, str]) -> None:
    config, _, run_id = ran
    result = cli("report", "--config", str(config))
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "# Run Report"
    assert f"- Run ID: {run_id}" in result.out


def test_report_in_every_format(cli: Any, ran: tuple[Path, str, str]) -> None:
    config = str(ran[0])
    rows = list(csv.reader(io.StringIO(cli("report", "--config", config, "--format", "csv").out)))
    assert tuple(rows[0]) == SCORE_COLUMNS and len(rows) == 7
    html = cli("report", "--config", config, "--format", "html").out
    assert "<h1>Run Report</h1>" in html and "<script" not in html
    latex = cli("report", "--config", config, "--format", "latex").out
    assert latex.startswith("\\begin{tabular}{llllllllll}")
    payload = json.loads(cli("report", "--config", config, "--format", "json").out)
    assert payload["benchmark_result"]["metric_aggregates"]["builtin/bleu"] == 1.0


def test_report_writes_to_a_file(cli: Any, ran: tuple[Path, str, str], tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    result = cli("report", "--config", str(ran[0]), "--format", "html", "--output", str(target))
    assert result.code == 0, result.err
    assert result.out == ""
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_report_of_an_unknown_format_exits_2(cli: Any, ran: tuple[Path, str, str]) -> None:
    result = cli("report", "--config", str(ran[0]), "--format", "pdf")
    assert result.code == 2
    assert "unknown report format 'pdf'" in result.message


def test_report_of_an_unknown_run_exits_1(cli: Any, ran: tuple[Path, str, str]) -> None:
    result = cli("report", "--store", ran[1], "--run-id", "0" * 64)
    assert result.code == 1
    assert f"Unknown run_id: {'0' * 64}" in result.message


def test_a_memory_config_explains_why_the_run_is_missing(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "mem.yaml"
    config.write_text(
        "generation: {generator: builtin/demo_generator}\n"
        "datasets: [{dataset_id: d, cases: [{case_id: x, input: 1}]}]\n"
    )
    result = cli("report", "--config", str(config))
    assert result.code == 1
    assert "a memory store keeps runs only inside one process" in result.message


def _two_runs(cli: Any, make_project: Any, tmp_path: Path) -> tuple[str, str, str]:
    """Six cases, three with numeric answers, which the candidate's text parser loses."""
    rows = [
        {"case_id": f"c{i}", "input": f"q{i}", "expected_output": i if i % 2 else f"a{i}"}
        for i in range(6)
    ]
    base = make_project(tmp_path, metrics="[builtin/exact_match]", rows=rows, name="base.yaml")
    spec = f"sqlite:{tmp_path / 'runs' / 'themis.sqlite3'}"
    base_id = cli("run", "--config", str(base)).json()["run_id"]
    # The candidate parses with builtin/text, so JSON numbers no longer equal their strings.
    cand = tmp_path / "cand.yaml"
    cand.write_text(base.read_text().replace("builtin/json_identity", "builtin/text"))
    cand_id = cli("run", "--config", str(cand)).json()["run_id"]
    return spec, base_id, cand_id


def test_compare_by_run_id_prints_the_paired_statistics(
    cli: Any, make_project: Any, tmp_path: Path
) -> None:
    spec, base_id, cand_id = _two_runs(cli, make_project, tmp_path)
    result = cli(
        "compare",
        "--baseline",
        base_id,
        "--candidate",
        cand_id,
        "--store",
        spec,
        "--resamples",
        "200",
    )
    assert result.code == 0, result.err
    payload = result.json()
    assert (payload["baseline_run_id"], payload["candidate_run_id"]) == (base_id, cand_id)
    assert (payload["test"], payload["resamples"], payload["seed"]) == ("permutation", 200, 0)
    metric = payload["metrics"]["builtin/exact_match"]
    assert metric["pairs"] == 6
    assert (metric["wins"], metric["losses"], metric["ties"]) == (0, 3, 3)
    assert metric["mean_delta"] == -0.5
    # Three equal losses: exact, P(|K - 1.5| >= 1.5) for K ~ Bin(3, 1/2) = 2/8.
    assert metric["p_value"] == 0.25
    assert metric["ci_lower"] <= -0.5 <= metric["ci_upper"] <= 0.0
    assert "fingerprints differ" not in result.err


def test_compare_by_configs_with_the_sign_test_and_formats(
    cli: Any, make_project: Any, tmp_path: Path
) -> None:
    _two_runs(cli, make_project, tmp_path)
    args = [
        "compare",
        "--baseline-config",
        str(tmp_path / "base.yaml"),
        "--candidate-config",
        str(tmp_path / "cand.yaml"),
        "--test",
        "sign",
    ]
    assert cli(*args).json()["test"] == "sign"
    table = cli(*args, "--format", "table")
    assert table.code == 0
    assert "builtin/exact_match" in table.out and "p (sign)" in table.out
    markdown = cli(*args, "--format", "markdown").out.splitlines()
    assert markdown[0].startswith("| Metric | Pairs | W/L/T |")
    assert markdown[2].startswith("| builtin/exact_match | 6 | 0/3/3 | 1.0000 | 0.5000 |")


def test_compare_warns_when_the_datasets_differ(
    cli: Any, make_project: Any, tmp_path: Path
) -> None:
    first = make_project(tmp_path, metrics="[builtin/exact_match]", name="one.yaml")
    other_rows = [{"case_id": "a", "input": "x", "expected_output": "x"}]
    second = make_project(
        tmp_path,
        metrics="[builtin/exact_match]",
        rows=other_rows,
        name="two.yaml",
        dataset_id="other",
    )
    cli("run", "--config", str(first))
    cli("run", "--config", str(second))
    result = cli("compare", "--baseline-config", str(first), "--candidate-config", str(second))
    assert result.code == 0, result.err
    assert "dataset fingerprints differ" in result.message
    metric = result.json()["metrics"]["builtin/exact_match"]
    assert (metric["pairs"], metric["unpaired_baseline"], metric["unpaired_candidate"]) == (
        0,
        3,
        1,
    )


def test_compare_needs_each_side_once(cli: Any, ran: tuple[Path, str, str]) -> None:
    result = cli("compare", "--baseline", ran[2], "--store", ran[1])
    assert result.code == 2
    assert "--candidate-config PATH or --candidate RUN_ID" in result.message


def test_compare_by_run_id_needs_a_store(cli: Any) -> None:
    result = cli("compare", "--baseline", "a", "--candidate", "b")
    assert result.code == 2
    assert "--store SPEC" in result.message


def test_compare_of_an_unknown_metric_exits_2(cli: Any, ran: tuple[Path, str, str]) -> None:
    _, spec, run_id = ran
    result = cli(
        "compare",
        "--baseline",
        run_id,
        "--candidate",
        run_id,
        "--store",
        spec,
        "--metric-id",
        "builtin/nope",
    )
    assert result.code == 2
    assert "builtin/nope" in result.message
