"""The fold takes the pipeline's output dumps back without validating or copying them.

``output_dump`` says a dump is exact only when validating it would give a model equal to
it field for field; the pipeline then marks its event with an ``ExactFields`` set, and
the fold's ``rebuild`` builds the model around the dump itself.
"""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from themis import Experiment
from themis.core._construct import maker
from themis.core._event_log import event_of
from themis.core._fold import CASE_HANDLERS
from themis.core._fold_speed import EMPTY, ExactFields, exact_makers, output_dump, rebuild
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.events import ReductionCompletedEvent, event_from_dict
from themis.core.models import (
    Case,
    Dataset,
    GenerationResult,
    Message,
    ParsedOutput,
    ReducedCandidate,
    Score,
    ScoreError,
)
from themis.core.projections import build_run_result
from themis.core.results import ExecutionState
from themis.core.stores import InMemoryRunStore

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
# Values a generator may hand back that JSON mode changes (a tuple, a set, bytes).
python_values = (
    json_values
    | st.tuples(st.integers(), st.text(max_size=3))
    | st.text(max_size=4).map(str.encode)
)
metadata = st.dictionaries(st.text(max_size=5), python_values, max_size=3)


def _outputs() -> st.SearchStrategy[BaseModel]:
    generation = st.builds(
        GenerationResult,
        candidate_id=st.text(min_size=1, max_size=6),
        final_output=python_values | st.floats(),
        artifacts=st.none() | metadata,
        token_usage=st.none() | st.dictionaries(st.text(max_size=5), st.integers(0, 10**6)),
        latency_ms=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    )
    reduced = st.builds(
        ReducedCandidate,
        candidate_id=st.text(min_size=1, max_size=6),
        source_candidate_ids=st.lists(st.text(max_size=6), max_size=3),
        final_output=python_values,
        metadata=metadata,
    )
    parsed = st.builds(
        ParsedOutput,
        value=python_values,
        format=st.none() | st.text(max_size=5),
        metadata=metadata,
    )
    score = st.builds(
        Score,
        metric_id=st.text(min_size=1, max_size=6),
        value=st.floats(allow_nan=True, allow_infinity=True),
        details=metadata,
    )
    return generation | reduced | parsed | score


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(_outputs())
def test_an_exact_dump_rebuilds_what_validation_gives(model: BaseModel) -> None:
    dump, exact = output_dump(model)
    assert type(dump) is dict
    assert _same(dump, model.__pydantic_serializer__.to_python(model, mode="json"))
    if not exact:
        return
    cls = type(model)
    validated = cls.model_validate(dict(dump))
    rebuilt = rebuild(cls, dump)
    assert type(rebuilt) is cls
    assert _same(dict(rebuilt.__dict__), dict(validated.__dict__))
    assert rebuilt.model_fields_set == validated.model_fields_set
    assert rebuilt.model_dump_json() == validated.model_dump_json()
    assert _hash_or_error(rebuilt) == _hash_or_error(validated)


def _hash_or_error(model: Any) -> str:
    try:
        return str(model.compute_hash())
    except ValueError as exc:  # canonical JSON refuses a non-finite float, in both alike
        return f"error: {exc}"


def test_each_output_class_is_exact() -> None:
    models: list[BaseModel] = [
        GenerationResult(candidate_id="c", final_output="42", artifacts={"k": [1, 2]}),
        ReducedCandidate(candidate_id="c", source_candidate_ids=["c"], final_output=42),
        ParsedOutput(value={"a": 1}, format="json"),
        Score(metric_id="m", value=1.0, details={"why": "equal"}),
        # JSON mode keeps a non-finite float as it is, and validation accepts it back.
        Score(metric_id="m", value=float("inf")),
    ]
    for model in models:
        dump, exact = output_dump(model)
        assert exact, type(model).__name__
        rebuilt = rebuild(type(model), dump)
        assert rebuilt == model
        # Built around the dump itself: no second copy of the output.
        assert rebuilt.__dict__ is dump


class _Tagged(Score):
    note: str = "kept"


@pytest.mark.parametrize(
    "model",
    [
        # A nested model dumps as a dict that only validation makes a model again.
        GenerationResult(
            candidate_id="c", final_output="x", conversation=[Message(role="user", content="q")]
        ),
        # A value that is not a float (a score built without validation) is validated.
        Score.model_construct(metric_id="m", value="high", details={}),
        # A subclass may add fields or validators of its own.
        _Tagged(metric_id="m", value=1.0),
        # Not an output the fold takes back.
        ScoreError(metric_id="m", reason="no answer"),
    ],
    ids=["nested-model", "unvalidated", "subclass", "score-error"],
)
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_dumps_validation_would_change_are_not_exact(model: BaseModel) -> None:
    dump, exact = output_dump(model)
    assert not exact
    assert dump == model.__pydantic_serializer__.to_python(model, mode="json")


def test_a_marked_event_is_stored_encoded_and_compared_as_any_other() -> None:
    reduced = ReducedCandidate(
        candidate_id="c", source_candidate_ids=["c"], final_output="7", metadata={"k": 1}
    )
    dump, exact = output_dump(reduced)
    assert exact
    names = ("run_id", "case_id", "dataset_id", "case_key", "candidate_id", "result")
    fields = {"run_id": "r", "case_id": "c", "dataset_id": "d", "case_key": "d:c"}
    make_event, make_record = exact_makers(ReductionCompletedEvent, *names)
    marked = event_of(make_record(**fields, candidate_id="c", result=dump), 1)
    # The event maker builds the same event the record stands for.
    made = make_event(**fields, candidate_id="c", result=dump)
    assert type(made.__pydantic_fields_set__) is ExactFields
    made.__dict__.update(occurred_at=marked.occurred_at, seq=1)
    assert made == marked and made.model_dump_json() == marked.model_dump_json()
    assert type(marked.__pydantic_fields_set__) is ExactFields
    plain = maker(ReductionCompletedEvent, *names)(**fields, candidate_id="c", result=dump)
    plain.__dict__["occurred_at"] = marked.occurred_at  # made a moment apart
    plain.__dict__["seq"] = 1
    assert marked.model_fields_set == plain.model_fields_set
    assert marked == plain
    assert marked.model_dump_json() == plain.model_dump_json()
    assert marked.model_dump() == plain.model_dump()
    # A copy may carry another payload, and a pickle leaves this process: neither is marked.
    copied = marked.model_copy(update={"result": {"not": "a dump"}})
    assert type(copied.__pydantic_fields_set__) is set
    assert type(marked.__pydantic_fields_set__) is ExactFields
    assert type(marked.model_copy(deep=True).__pydantic_fields_set__) is set
    assert type(pickle.loads(pickle.dumps(marked)).__pydantic_fields_set__) is set


def test_a_copied_event_with_another_payload_is_validated() -> None:
    """The mark must not let a replaced payload skip validation."""
    from themis.core._fold import Fold
    from themis.core.results import _new_case_state

    reduced = ReducedCandidate(candidate_id="c", final_output="7")
    dump, _ = output_dump(reduced)
    names = ("run_id", "case_id", "dataset_id", "case_key", "candidate_id", "result")
    fields = {"run_id": "r", "case_id": "c", "dataset_id": "d", "case_key": "d:c"}
    marked = event_of(
        exact_makers(ReductionCompletedEvent, *names)[1](**fields, candidate_id="c", result=dump), 1
    )
    bad = marked.model_copy(update={"result": {"candidate_id": "c"}})  # no final_output
    state = _new_case_state()
    with pytest.raises(ValidationError):
        CASE_HANDLERS["reduction_completed"](Fold(), state, bad)
    CASE_HANDLERS["reduction_completed"](Fold(), state, marked)
    assert state.reduced_candidate is not None
    assert state.reduced_candidate.__dict__ is dump


class _Answers:
    """Answers every case with its input, and an artifact the fold must keep as given."""

    component_id = "test/answers"
    version = "1"

    def fingerprint(self) -> str:
        return "answers"

    def generate(self, case: Case, ctx: Any) -> GenerationResult:
        return GenerationResult(
            candidate_id=ctx.candidate_id,
            final_output=case.input,
            artifacts={"seed": ctx.seed, "tags": ["a", "b"]},
            token_usage={"input_tokens": 3},
        )


def _experiment(parsers: list[str], **fields: Any) -> Experiment:
    data = [
        Dataset(
            dataset_id="d",
            cases=[
                Case(case_id=f"c{i}", input=str(i % 3), expected_output=str(i % 2))
                for i in range(6)
            ],
        )
    ]
    return Experiment.model_validate(
        {
            "generation": GenerationConfig(generator=_Answers(), **fields),
            "evaluation": EvaluationConfig(metrics=["builtin/exact_match"], parsers=parsers),
            "datasets": data,
        }
    )


@pytest.mark.parametrize(
    "fields",
    [{}, {"candidate_policy": {"num_samples": 3}, "reducer": "builtin/majority_vote"}],
    ids=["pass-through", "three-samples-majority-vote"],
)
@pytest.mark.parametrize("parser", [None, "builtin/text"], ids=["no-parser", "text-parser"])
def test_a_run_folds_its_own_outputs_without_copies_and_a_reread_agrees(
    fields: dict[str, Any], parser: str | None
) -> None:
    experiment = _experiment([parser] if parser else [], **fields)
    store = InMemoryRunStore()
    live = experiment.run(store=store)
    assert live.status.value == "completed"
    run_id = live.run_id
    folder = store.projection_folder(run_id)
    assert folder is not None
    events = store.query_events(run_id)
    completed = [event for event in events if event.event_type.endswith("_completed")]
    completed = [event for event in completed if event.event_type != "run_completed"]
    for event in completed:  # each marked, each payload a plain dict
        assert type(event.__pydantic_fields_set__) is ExactFields, event.event_type
    payloads = {
        (event.case_key, event.event_type): event.result
        for event in completed
        if event.event_type in ("reduction_completed", "parse_completed")
    }
    generated = {
        e.candidate_id: e.result for e in completed if e.event_type == "generation_completed"
    }
    scores = {e.case_key: e.score for e in completed if e.event_type == "score_completed"}
    state = folder._state
    assert len(state.case_states) == 6
    for key, case_state in state.case_states.items():
        # The fold's models are built around the events' payloads, not copies of them.
        assert case_state.reduced_candidate is not None
        assert case_state.reduced_candidate.__dict__ is payloads[key, "reduction_completed"]
        assert case_state.parsed_output is not None
        assert case_state.parsed_output.__dict__ is payloads[key, "parse_completed"]
        for candidate in case_state.generated_candidates.values():
            assert candidate.__dict__ is generated[candidate.candidate_id]
        for score in case_state.successful_scores.values():
            assert score.__dict__ is scores[key]
    # A result's empty dicts are the shared read-only one: a copy is needed to change one.
    case = live.cases[0]
    assert case.generation_failures is EMPTY and case.evaluation_failures is EMPTY
    with pytest.raises(TypeError, match="change a copy"):
        case.generation_failures["c0-candidate-0"] = "boom"
    assert dict(case.generation_failures) == {}
    # Folding the log read back from its JSON gives the same state and result.
    reread = [event_from_dict(json.loads(event.model_dump_json())) for event in events]
    refolded = ExecutionState.from_events(run_id, reread, snapshot=experiment.compile())
    assert refolded.case_states == state.case_states
    assert refolded.model_dump_json() == state.model_dump_json()
    assert build_run_result(experiment.compile(), reread) == live


class _Outputs:
    """Answers case ``i`` with the ``i``-th of a list of outputs of every JSON kind."""

    component_id = "test/outputs"
    version = "1"
    OUTPUTS: list[Any] = ["text", 7, 2.5, True, None, ["a", 1], {"k": [1, 2]}, math.inf, ""]

    def fingerprint(self) -> str:
        return "outputs"

    def generate(self, case: Case, ctx: Any) -> GenerationResult:
        output = self.OUTPUTS[int(case.case_id[1:])]
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=output)


def test_a_pass_through_reduction_payload_is_the_dump_of_its_candidate() -> None:
    """The pass-through builds its payload from the candidate's dump for scalar outputs;
    it must equal the reduced candidate's own JSON-mode dump for every kind of output,
    and never share a container with the candidate's payload."""
    cases = [Case(case_id=f"c{i}", input="x") for i in range(len(_Outputs.OUTPUTS))]
    experiment = Experiment(
        generation=GenerationConfig(generator=_Outputs()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
    )
    store = InMemoryRunStore()
    result = experiment.run(store=store)
    events = store.query_events(result.run_id)
    generated = {e.case_key: e for e in events if e.event_type == "generation_completed"}
    reduced = {e.case_key: e for e in events if e.event_type == "reduction_completed"}
    assert len(reduced) == len(_Outputs.OUTPUTS)
    for key, event in reduced.items():
        candidate = generated[key]
        expected = ReducedCandidate(
            candidate_id=candidate.candidate_id,
            source_candidate_ids=[candidate.candidate_id],
            final_output=candidate.result["final_output"],
            metadata={"selected_candidate_id": candidate.candidate_id},
        ).model_dump(mode="json")
        assert event.result == expected
        assert json.dumps(event.result) == json.dumps(expected)  # the same key order
        output = event.result["final_output"]
        if isinstance(output, (list, dict)):
            assert output is not candidate.result["final_output"]
        case = next(c for c in result.cases if c.case_key == key)
        assert case.reduced_candidate is not None
        assert case.reduced_candidate.model_dump(mode="json") == expected
