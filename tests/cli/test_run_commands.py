"""``themis run``, ``resume``, ``replay``, ``rejudge`` and ``estimate`` on real SQLite stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from themis.core.base import content_hash
from themis.core.config import EvaluationConfig, GenerationConfig, StorageConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.stores import create_run_store


def test_run_prints_status_progress_and_means(cli: Any, project: Path) -> None:
    result = cli("run", "--config", str(project))
    assert result.code == 0, result.err
    payload = result.json()
    assert set(payload) == {
        "run_id",
        "status",
        "completed_through_stage",
        "progress",
        "metric_means",
    }
    assert payload["status"] == "partial_failure"
    assert payload["completed_through_stage"] == "judge"
    assert payload["progress"] == {"total_cases": 3, "completed_cases": 2, "failed_cases": 1}
    assert payload["metric_means"]["builtin/exact_match"] == pytest.approx(2 / 3)
    assert result.out.startswith('{\n  "completed_through_stage"')  # indent=2, sorted keys


def test_run_takes_the_config_as_a_positional_path(cli: Any, project: Path) -> None:
    assert cli("run", str(project)).code == 0


def test_strict_partial_failure_exits_3(cli: Any, project: Path) -> None:
    result = cli("run", "--config", str(project), "--strict")
    assert result.code == 3
    assert result.json()["status"] == "partial_failure"


def test_strict_completed_run_exits_0(make_project: Any, cli: Any, tmp_path: Path) -> None:
    config = make_project(tmp_path, metrics="[builtin/exact_match]")
    assert cli("run", "--config", str(config), "--strict").code == 0


def test_a_bad_config_exits_2_with_one_line(process: Any, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("generation: {generator: builtin/demo_generator}\nseeds: nope\n")
    result = process("run", "--config", str(config), cwd=tmp_path)
    assert result.code == 2
    assert "seeds" in result.message
    assert "Traceback" not in result.message


def test_a_missing_config_exits_2(cli: Any, tmp_path: Path) -> None:
    result = cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert result.code == 2
    assert "does not exist" in result.message


def test_an_unknown_component_exits_2_with_a_suggestion(cli: Any, project: Path) -> None:
    typo = "evaluation.metrics=[builtin/exact_mach]"
    result = cli("run", "--config", str(project), "--set", typo)
    assert result.code == 2
    assert "builtin/exact_match" in result.message  # the close match


def test_run_without_a_config_is_a_usage_error(cli: Any) -> None:
    result = cli("run")
    assert result.code == 2
    assert "--config PATH" in result.message


def test_set_overrides_change_the_run(cli: Any, project: Path) -> None:
    first = cli("run", "--config", str(project)).json()["run_id"]
    second = cli("run", "--config", str(project), "--set", "evaluation.metrics=[builtin/f1]")
    assert second.code == 0
    assert second.json()["run_id"] != first
    assert set(second.json()["metric_means"]) == {"builtin/f1"}


def test_policy_error_refuses_a_stored_run(cli: Any, ran: tuple[Path, str, str]) -> None:
    config, _, run_id = ran
    result = cli("run", "--config", str(config), "--policy", "error")
    assert result.code == 1
    assert run_id in result.message


def test_store_flag_overrides_the_config_storage(cli: Any, project: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.db"
    result = cli("run", "--config", str(project), "--store", f"sqlite:{other}")
    assert result.code == 0
    assert other.exists()
    assert not (project.parent / "runs").exists()


def test_until_stage_then_resume_finishes_the_run(cli: Any, project: Path) -> None:
    partial = cli("run", "--config", str(project), "--until-stage", "parse")
    assert partial.code == 0
    assert partial.json()["completed_through_stage"] == "parse"
    assert partial.json()["metric_means"] == {}
    resumed = cli("resume", "--config", str(project))
    assert resumed.code == 0, resumed.err
    assert resumed.json()["completed_through_stage"] == "judge"
    assert resumed.json()["metric_means"]["builtin/exact_match"] == pytest.approx(2 / 3)


def test_resume_by_store_and_run_id_rebuilds_the_components(
    cli: Any, project: Path, tmp_path: Path
) -> None:
    first = cli("run", "--config", str(project), "--until-stage", "generate").json()
    spec = f"sqlite:{project.parent / 'runs' / 'themis.sqlite3'}"
    project.unlink()  # the config is gone: only the store remains
    result = cli("resume", "--store", spec, "--run-id", first["run_id"], "--strict")
    assert result.code == 3  # finished, and partial_failure under --strict
    assert result.json()["run_id"] == first["run_id"]
    assert result.json()["progress"]["completed_cases"] == 2


def test_resume_uses_the_themis_store_variable(
    cli: Any, ran: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, spec, run_id = ran
    monkeypatch.setenv("THEMIS_STORE", spec)
    assert cli("resume", "--run-id", run_id).code == 0


class EchoGenerator:
    """A live generator object: runs with it cannot be rebuilt from the store."""

    component_id = "test/echo"
    version = "1"

    def fingerprint(self) -> str:
        return content_hash({"component_id": self.component_id})

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)


def test_resume_of_a_run_built_from_live_objects_asks_for_config(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    storage = StorageConfig(store="sqlite", parameters={"path": str(path)})
    experiment = Experiment(
        generation=GenerationConfig(generator=EchoGenerator()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[Dataset(dataset_id="d", cases=[Case(case_id="x", input=1, expected_output=1)])],
        storage=storage,
    )
    store = create_run_store(storage)
    store.initialize()
    try:
        run_id = experiment.run(store=store).run_id
    finally:
        store.close()
    result = cli("resume", "--store", f"sqlite:{path}", "--run-id", run_id)
    assert result.code == 2
    assert "live Python objects (generator)" in result.message
    assert "--config" in result.message


def test_resume_of_an_unknown_run_exits_1(cli: Any, tmp_path: Path) -> None:
    result = cli("resume", "--store", f"sqlite:{tmp_path / 'empty.db'}", "--run-id", "abc")
    assert result.code == 1
    assert "Unknown run_id: abc" in result.message


def test_run_selection_needs_config_or_store_and_run_id(cli: Any) -> None:
    result = cli("resume", "--run-id", "abc")
    assert result.code == 2
    assert "--store SPEC --run-id ID" in result.message


def test_replay_from_score_prints_status_and_means(cli: Any, ran: tuple[Path, str, str]) -> None:
    _, spec, run_id = ran
    result = cli("replay", "--store", spec, "--run-id", run_id, "--stage", "score")
    assert result.code == 0, result.err
    assert set(result.json()) == {"run_id", "status", "metric_means"}
    assert result.json()["metric_means"]["builtin/exact_match"] == pytest.approx(2 / 3)


def test_replay_with_metric_ids_below_score_is_a_usage_error(
    cli: Any, ran: tuple[Path, str, str]
) -> None:
    config, _, _ = ran
    result = cli(
        "replay", "--config", str(config), "--stage", "parse", "--metric-id", "builtin/bleu"
    )
    assert result.code == 2
    assert "metric_ids cannot be combined" in result.message


def test_replay_rejects_an_unknown_stage(cli: Any, ran: tuple[Path, str, str]) -> None:
    config, _, _ = ran
    assert cli("replay", "--config", str(config), "--stage", "generate").code == 2


def test_rejudge_reruns_the_judge_metric(make_project: Any, cli: Any, tmp_path: Path) -> None:
    config = make_project(
        tmp_path,
        metrics="[builtin/exact_match, builtin/llm_rubric]",
        judges="[builtin/demo_judge]",
    )
    first = cli("run", "--config", str(config))
    assert first.code == 0, first.err
    result = cli("rejudge", "--config", str(config), "--metric-id", "builtin/llm_rubric")
    assert result.code == 0, result.err
    assert result.json()["metric_means"]["builtin/llm_rubric"] == 1.0
    events = cli("inspect", "events", "--config", str(config), "--type", "replay_started")
    assert [e["stage"] for e in events.json()] == ["judge"]


def test_estimate_counts_tasks_and_echoes_assumptions(cli: Any, project: Path) -> None:
    result = cli("estimate", "--config", str(project), "--assume", "chars_per_token=2")
    assert result.code == 0, result.err
    estimate = result.json()
    assert estimate["total_cases"] == 3
    assert estimate["planned_generation_tasks"] == 3
    assert estimate["planned_score_tasks"] == 6
    assert estimate["assumptions"]["chars_per_token"] == 2
    assert not (project.parent / "runs").exists()  # nothing ran


def test_estimate_rejects_an_unknown_assumption(cli: Any, project: Path) -> None:
    result = cli("estimate", str(project), "--assume", "tokens_per_dollar=3")
    assert result.code == 2
    assert "chars_per_token" in result.message


def test_max_concurrency_is_recorded_in_the_run_provenance(cli: Any, project: Path) -> None:
    assert cli("run", "--config", str(project), "--max-concurrency", "2").code == 0
    started = cli("inspect", "events", "--config", str(project), "--type", "run_started").json()
    assert started[-1]["provenance"]["runtime"]["max_concurrent_tasks"] == 2
