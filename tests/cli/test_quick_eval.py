"""``themis quick-eval inline|file``: one case or one file, compact JSON out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def test_readme_example_works_end_to_end(process: Any, tmp_path: Path) -> None:
    """The upstream README command, in a fresh process: compact JSON, exact match 1.0."""
    result = process(
        "quick-eval",
        "inline",
        "--model",
        "builtin/demo_generator",
        "--input",
        '"2+2"',
        "--expected-output",
        '"2+2"',
        cwd=tmp_path,
    )
    assert result.code == 0, result.err
    assert "\n" not in result.out.strip()  # compact: one line
    payload = json.loads(result.out)
    assert set(payload) == {"run_id", "status", "metric_means"}
    assert payload["status"] == "completed"
    assert payload["metric_means"] == {"builtin/exact_match": 1.0}
    assert len(payload["run_id"]) == 64


def test_defaults_and_json_aliases(cli: Any) -> None:
    result = cli(
        "quick-eval", "inline", "--input-json", "[1, 2]", "--expected-output-json", "[1,2]"
    )
    assert result.code == 0, result.err
    assert result.json()["metric_means"] == {"builtin/exact_match": 1.0}


def test_a_value_that_is_not_json_is_used_as_a_string(cli: Any) -> None:
    matched = cli("quick-eval", "inline", "--input", "hello", "--expected-output", "hello")
    assert matched.json()["metric_means"] == {"builtin/exact_match": 1.0}
    quoted = cli("quick-eval", "inline", "--input", "hello", "--expected-output", '"hello"')
    assert quoted.json()["run_id"] == matched.json()["run_id"]  # the same case either way


def test_inline_run_id_equals_the_equivalent_evaluate_call(cli: Any) -> None:
    from themis.core.evaluate import evaluate
    from themis.core.models import Case, Dataset

    result = cli("quick-eval", "inline", "--input", '"x"', "--expected-output", '"y"')
    dataset = Dataset(
        dataset_id="inline", cases=[Case(case_id="case-1", input="x", expected_output="y")]
    )
    direct = evaluate(
        model="builtin/demo_generator",
        data=dataset,
        metric="builtin/exact_match",
        parser="builtin/json_identity",
    )
    assert result.json()["run_id"] == direct.run_id


def test_samples_and_seeds_and_several_metrics(cli: Any) -> None:
    result = cli(
        "quick-eval",
        "inline",
        "--input",
        '"the cat"',
        "--expected-output",
        '"the cat"',
        "--metric",
        "builtin/exact_match",
        "--metric",
        "builtin/f1",
        "--samples",
        "3",
        "--seed",
        "1",
        "--seed",
        "2",
        "--seed",
        "3",
    )
    assert result.code == 0, result.err
    assert result.json()["metric_means"] == {"builtin/exact_match": 1.0, "builtin/f1": 1.0}


def test_seeds_that_do_not_match_samples_exit_2(cli: Any) -> None:
    result = cli("quick-eval", "inline", "--input", "1", "--samples", "2", "--seed", "1")
    assert result.code == 2
    assert "one seed per candidate" in result.message


def test_an_unknown_model_exits_2_naming_it(cli: Any) -> None:
    result = cli("quick-eval", "inline", "--input", "1", "--model", "builtin/demo_generater")
    assert result.code == 2
    assert "builtin/demo_generator" in result.message


def test_inline_with_a_sqlite_store_keeps_the_run(cli: Any, tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'q.db'}"
    result = cli("quick-eval", "inline", "--input", "1", "--expected-output", "2", "--store", spec)
    assert result.code == 0, result.err
    check = cli("quickcheck", "--store", spec, "--run-id", result.json()["run_id"])
    assert check.json()["metric_means"] == result.json()["metric_means"]
    assert check.json()["total_cases"] == 1


@pytest.mark.parametrize("layout", ["jsonl", "json"])
def test_file_reads_jsonl_or_a_json_list_with_custom_fields(
    cli: Any, tmp_path: Path, layout: str
) -> None:
    rows = [
        {"id": "q1", "question": "2+2", "answer": "4"},
        {"id": "q2", "question": "3+3", "answer": "6"},
    ]
    path = tmp_path / f"maths.{layout}"
    if layout == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    spec = f"sqlite:{tmp_path / 'f.db'}"
    result = cli(
        "quick-eval",
        "file",
        str(path),
        "--input-field",
        "question",
        "--expected-output-field",
        "answer",
        "--case-id-field",
        "id",
        "--store",
        spec,
    )
    assert result.code == 0, result.err
    assert result.json()["metric_means"] == {"builtin/exact_match": 1.0}
    snapshot = cli("inspect", "snapshot", "--store", spec, "--run-id", result.json()["run_id"])
    dataset = snapshot.json()["datasets"][0]
    assert dataset["dataset_id"] == "maths"  # the file's stem
    assert [c["case_id"] for c in dataset["cases"]] == ["q1", "q2"]


def test_file_accepts_path_as_an_option(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"input": "a", "expected_output": "a"}\n')
    result = cli("quick-eval", "file", "--path", str(path))
    assert result.code == 0, result.err
    assert result.json()["metric_means"] == {"builtin/exact_match": 1.0}


def test_file_that_does_not_exist_exits_2(cli: Any, tmp_path: Path) -> None:
    result = cli("quick-eval", "file", str(tmp_path / "nope.jsonl"))
    assert result.code == 2
    assert "nope.jsonl" in result.message
