"""Running an experiment: failure isolation, policies, stages, resume and observers."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from themis import Experiment, InMemoryRunStore, evaluate
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.errors import FingerprintMismatchError, RunExistsError, RunNotFoundError
from themis.core.models import Case, Dataset, GenerationResult, ParsedOutput

FAST = RuntimeConfig(generation_retry_attempts=1, retry_jitter=0.0)


class Scripted:
    """A generator that answers the input, fails on chosen case ids, and counts calls."""

    component_id = "test/scripted"
    version = "1"

    def __init__(self, fail: set[str] | None = None, wrong_type: set[str] | None = None):
        self.fail = set(fail or ())
        self.wrong_type = set(wrong_type or ())
        self.calls: list[str] = []

    def fingerprint(self) -> str:
        return "scripted"

    async def generate(self, case: Case, ctx: Any) -> Any:
        self.calls.append(case.case_id)
        if case.case_id in self.fail:
            raise RuntimeError(f"boom on {case.case_id}")
        if case.case_id in self.wrong_type:
            return "not a GenerationResult"
        return GenerationResult(candidate_id="generator-chosen-id", final_output=case.input)


def cases(n: int = 4) -> list[Dataset]:
    return [
        Dataset(
            dataset_id="d",
            cases=[Case(case_id=f"c{i}", input=str(i), expected_output=str(i)) for i in range(n)],
        )
    ]


def experiment(generator: Any, **fields: Any) -> Experiment:
    base: dict[str, Any] = {
        "generation": GenerationConfig(generator=generator),
        "evaluation": EvaluationConfig(metrics=["builtin/exact_match"]),
        "datasets": cases(),
        "runtime": FAST,
    }
    base.update(fields)
    return Experiment.model_validate(base)


def test_a_failing_case_never_fails_the_run() -> None:
    generator = Scripted(fail={"c1"})
    store = InMemoryRunStore()
    result = experiment(generator).run(store=store)
    assert result.status.value == "partial_failure"
    assert result.progress.completed_cases == 3 and result.progress.failed_cases == 1
    failed = next(c for c in result.cases if c.case_id == "c1")
    assert "boom on c1" in failed.generation_failures["c1-candidate-0"]
    rows = store.get_projection(result.run_id, "benchmark_result")["score_rows"]
    assert {r["case_id"]: r["error_category"] for r in rows}["c1"] == "generation_failure"


def test_a_wrong_return_type_fails_only_that_case_and_names_the_component() -> None:
    result = experiment(Scripted(wrong_type={"c2"})).run(store=InMemoryRunStore())
    failure = next(c for c in result.cases if c.case_id == "c2").generation_failures
    message = failure["c2-candidate-0"]
    assert "test/scripted.generate()" in message and "GenerationResult" in message
    assert result.progress.completed_cases == 3


def test_a_metric_that_raises_fails_only_that_metric() -> None:
    class Broken:
        component_id = "test/broken_metric"
        version = "1"
        metric_family = "pure"

        def fingerprint(self) -> str:
            return "b"

        def score(self, parsed: ParsedOutput, case: Case, ctx: Any) -> Any:
            raise ValueError("cannot score")

    exp = experiment(
        Scripted(), evaluation=EvaluationConfig(metrics=[Broken(), "builtin/exact_match"])
    )
    result = exp.run(store=InMemoryRunStore())
    for case in result.cases:
        errors = [s for s in case.scores if getattr(s, "reason", None)]
        values = [s.value for s in case.scores if hasattr(s, "value")]
        assert [e.reason for e in errors] == ["cannot score"]
        assert values == [1.0]


def test_planner_candidate_ids_replace_the_generators_and_keep_the_original() -> None:
    result = experiment(Scripted()).run(store=InMemoryRunStore())
    candidate = result.cases[0].generated_candidates[0]
    assert candidate.candidate_id == "c0-candidate-0"
    assert candidate.artifacts == {"generator_candidate_id": "generator-chosen-id"}


def test_until_stage_stops_each_case_after_that_stage() -> None:
    store = InMemoryRunStore()
    result = experiment(Scripted()).run(store=store, until_stage="parse")
    assert result.completed_through_stage == "parse"
    types = {e.event_type for e in store.query_events(result.run_id)}
    assert "parse_completed" in types and "score_completed" not in types


def test_auto_policy_returns_a_completed_run_without_calling_the_generator() -> None:
    generator, store = Scripted(), InMemoryRunStore()
    exp = experiment(generator)
    first = exp.run(store=store)
    calls = len(generator.calls)
    again = exp.run(store=store)
    assert again == first and len(generator.calls) == calls


def test_error_policy_refuses_a_stored_run_and_names_it() -> None:
    store = InMemoryRunStore()
    exp = experiment(Scripted())
    run_id = exp.run(store=store).run_id
    with pytest.raises(RunExistsError, match=run_id):
        exp.run(store=store, runtime=FAST.model_copy(update={"existing_run_policy": "error"}))


def test_rerun_policy_clears_the_run_and_starts_fresh() -> None:
    generator, store = Scripted(), InMemoryRunStore()
    exp = experiment(generator)
    exp.run(store=store)
    result = exp.run(store=store, runtime=FAST.model_copy(update={"existing_run_policy": "rerun"}))
    assert len(generator.calls) == 8
    assert store.query_events(result.run_id)[0].seq == 1


def test_resume_retries_only_failed_work() -> None:
    generator, store = Scripted(fail={"c1", "c3"}), InMemoryRunStore()
    exp = experiment(generator)
    assert exp.run(store=store).status.value == "partial_failure"
    generator.fail.clear()
    generator.calls.clear()
    result = exp.resume(store=store)
    assert sorted(generator.calls) == ["c1", "c3"]
    assert result.status.value == "completed"
    seqs = [e.seq for e in store.query_events(result.run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_resume_of_an_unknown_run_raises_run_not_found() -> None:
    with pytest.raises(RunNotFoundError, match="Unknown run_id"):
        experiment(Scripted()).resume(store=InMemoryRunStore())


def test_a_raising_subscriber_changes_nothing() -> None:
    class Noisy:
        def before_generate(self, case: Case, ctx: Any) -> None:
            raise RuntimeError("observer bug")

        async def on_event(self, event: Any) -> None:
            raise RuntimeError("observer bug")

    exp = experiment(Scripted())
    quiet = exp.run(store=InMemoryRunStore())
    noisy = exp.run(store=InMemoryRunStore(), subscribers=[Noisy()])
    assert noisy.run_id == quiet.run_id and noisy.status == quiet.status


def test_a_sync_run_inside_an_event_loop_names_its_async_twin() -> None:
    exp = experiment(Scripted())

    async def main() -> None:
        with pytest.raises(RuntimeError, match="run_async"):
            exp.run(store=InMemoryRunStore())
        result = await exp.run_async(store=InMemoryRunStore())
        assert result.status.value == "completed"

    anyio.run(main)


def test_a_component_changed_after_compile_is_refused_at_run_start() -> None:
    class Mutable(Scripted):
        fp = "one"

        def fingerprint(self) -> str:
            return self.fp

    generator = Mutable()
    exp = experiment(generator)
    exp.compile()
    generator.fp = "two"
    with pytest.raises(FingerprintMismatchError, match="recompile"):
        exp.run(store=InMemoryRunStore())


def test_large_payloads_go_to_blobs_and_read_back_the_same() -> None:
    class Big(Scripted):
        async def generate(self, case: Case, ctx: Any) -> Any:
            return GenerationResult(candidate_id=ctx.candidate_id, final_output="x" * 5000)

    store = InMemoryRunStore()
    runtime = FAST.model_copy(update={"inline_payload_limit": 1000})
    result = experiment(Big()).run(store=store, runtime=runtime)
    generated = [
        e for e in store.query_events(result.run_id) if e.event_type == "generation_completed"
    ]
    assert all(e.result is None and e.result_blob_ref for e in generated)
    assert result.cases[0].generated_candidates[0].final_output == "x" * 5000
    # With no reducer and no parser the output passes through both stages: their payloads
    # hold it too, and go to blobs the same way.
    for event_type in ("reduction_completed", "parse_completed"):
        passed = [e for e in store.query_events(result.run_id) if e.event_type == event_type]
        assert passed and all(e.result is None and e.result_blob_ref for e in passed)
    assert result.cases[0].parsed_output is not None
    assert result.cases[0].parsed_output.value == "x" * 5000


def test_a_payload_whose_escaped_json_exceeds_the_limit_goes_to_a_blob() -> None:
    """200 characters of "é" are 400 UTF-8 bytes, but 1,200 bytes of canonical JSON."""

    class Accented(Scripted):
        async def generate(self, case: Case, ctx: Any) -> Any:
            return GenerationResult(candidate_id=ctx.candidate_id, final_output="\u00e9" * 200)

    store = InMemoryRunStore()
    runtime = FAST.model_copy(update={"inline_payload_limit": 1000})
    result = experiment(Accented()).run(store=store, runtime=runtime)
    generated = [
        e for e in store.query_events(result.run_id) if e.event_type == "generation_completed"
    ]
    assert generated and all(e.result is None and e.result_blob_ref for e in generated)
    assert result.cases[0].generated_candidates[0].final_output == "\u00e9" * 200


def test_no_inline_payload_exceeds_the_limit_around_the_pass_through_stages() -> None:
    """Outputs whose payloads straddle the limit: every inline payload still fits.

    The pass-through parser's payload is not measured when the reduction's payload (which
    holds the same output under a longer key) went inline; this holds that shortcut to
    the rule at every size around the limit, for each stage's payload.
    """
    from themis.core.base import canonical_json

    class Sized(Scripted):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.size = size

        async def generate(self, case: Case, ctx: Any) -> Any:
            return GenerationResult(candidate_id=ctx.candidate_id, final_output="y" * self.size)

    limit = 400
    seen: dict[str, set[bool]] = {}
    for size in range(200, 420, 7):
        store = InMemoryRunStore()
        runtime = FAST.model_copy(update={"inline_payload_limit": limit})
        result = experiment(Sized(size)).run(store=store, runtime=runtime)
        assert result.cases[0].parsed_output is not None
        assert result.cases[0].parsed_output.value == "y" * size
        for event in store.query_events(result.run_id):
            if event.event_type not in ("reduction_completed", "parse_completed"):
                continue
            inline = event.result is not None
            seen.setdefault(event.event_type, set()).add(inline)
            if inline:
                assert len(canonical_json(event.result).encode("utf-8")) <= limit, (size, event)
            else:
                assert event.result_blob_ref is not None
    # The sizes cover both sides of the limit for both stages.
    assert seen == {"reduction_completed": {True, False}, "parse_completed": {True, False}}


def test_evaluate_gives_the_same_run_id_as_the_equivalent_experiment() -> None:
    data = [{"input": "a", "expected_output": "a"}, {"input": "b", "expected_output": "b"}]
    result = evaluate(model="builtin/demo_generator", data=data, metric="builtin/exact_match")
    exp = Experiment(
        generation=GenerationConfig(generator="builtin/demo_generator"),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[
            Dataset(
                dataset_id="inline",
                revision="inline",
                cases=[
                    Case(case_id="case-1", input="a", expected_output="a"),
                    Case(case_id="case-2", input="b", expected_output="b"),
                ],
            )
        ],
    )
    assert result.run_id == exp.compile().run_id
    assert result.status.value == "completed"


def test_evaluate_adds_majority_vote_only_for_several_samples() -> None:
    data = [{"input": "a", "expected_output": "a"}]
    store = InMemoryRunStore()
    result = evaluate(
        model="builtin/demo_generator",
        data=data,
        metric="builtin/exact_match",
        samples=3,
        store=store,
    )
    snapshot = store.load_snapshot(result.run_id)
    assert snapshot is not None
    assert snapshot.component_refs.reducer is not None
    assert snapshot.component_refs.reducer.component_id == "builtin/majority_vote"
    assert len(result.cases[0].generated_candidates) == 3


def test_estimate_counts_every_stage_that_runs() -> None:
    estimate = experiment(Scripted()).estimate()
    assert estimate.total_cases == 4
    assert estimate.planned_generation_tasks == 4
    assert estimate.planned_reduction_tasks == estimate.planned_parse_tasks == 4
    assert estimate.planned_score_tasks == 4
    assert estimate.estimated_generation_output_tokens == 4 * 256
