"""``construct`` and ``maker``: models built without validation equal pydantic's own."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from themis.core._construct import construct, maker
from themis.core.contexts import GenerateContext
from themis.core.events import GenerationCompletedEvent, ScoreCompletedEvent
from themis.core.models import ParsedOutput

EVENT: dict[str, Any] = {
    "run_id": "run-1",
    "case_id": "c1",
    "dataset_id": "d",
    "case_key": "d:c1",
    "candidate_id": "c1-candidate-0",
    "candidate_index": 0,
    "seed": 7,
    "provider_key": None,
    "result": {"candidate_id": "c1-candidate-0", "final_output": 3},
    "result_blob_ref": None,
    "cache_hit": False,
    "source_run_id": None,
}


def _without_time(model: Any) -> dict[str, Any]:
    data = dict(model.__dict__)
    data.pop("occurred_at", None)
    return data


def test_a_made_event_equals_the_validated_one_field_for_field() -> None:
    make = maker(GenerationCompletedEvent, *EVENT)
    made = make(**EVENT)
    validated = GenerationCompletedEvent.model_validate(EVENT)
    assert _without_time(made) == _without_time(validated)
    assert list(made.__dict__) == list(validated.__dict__)  # the declared field order
    assert made.model_fields_set == set(EVENT)
    assert made.model_extra == {}
    assert isinstance(made.occurred_at, dt.datetime)
    assert made.occurred_at.tzinfo is not None
    assert made.to_dict()["event_type"] == "generation_completed"


def test_a_maker_takes_its_shared_fields_from_one_dict() -> None:
    ids = ("run_id", "case_id", "dataset_id", "case_key")
    make = maker(GenerationCompletedEvent, *EVENT, shared=ids)
    shared = {name: EVENT[name] for name in ids}
    rest = {name: value for name, value in EVENT.items() if name not in ids}
    made = make(shared, **rest)
    keyword = maker(GenerationCompletedEvent, *EVENT)(**EVENT)
    assert _without_time(made) == _without_time(keyword)
    assert list(made.__dict__) == list(keyword.__dict__)  # the declared field order
    assert made.model_fields_set == set(EVENT)
    with pytest.raises(TypeError):  # shared names are not keywords as well
        make(shared, **rest, run_id="other")
    with pytest.raises(KeyError, match="case_key"):
        make({name: EVENT[name] for name in ids[:3]}, **rest)


def test_a_maker_refuses_shared_fields_it_does_not_set() -> None:
    with pytest.raises(TypeError, match="shared"):
        maker(ParsedOutput, "value", shared=("format",))
    only_shared = maker(ParsedOutput, "value", shared=("value",))
    assert only_shared({"value": 1}).value == 1


def test_a_made_model_gets_fresh_mutable_defaults_each_time() -> None:
    make = maker(GenerateContext, "run_id", "case_id")
    first, second = make(run_id="r", case_id="a"), make(run_id="r", case_id="b")
    assert first.metadata == {} and first.metadata is not second.metadata
    assert first == GenerateContext(run_id="r", case_id="a")


def test_a_maker_agrees_with_construct() -> None:
    make = maker(ParsedOutput, "value", "format", "metadata")
    values = {"value": [1, 2], "format": "json", "metadata": {"k": "v"}}
    assert make(**values) == construct(ParsedOutput, None, values)


def test_a_maker_takes_only_its_own_fields() -> None:
    make = maker(ParsedOutput, "value")
    with pytest.raises(TypeError):
        make(value=1, format="json")


def test_a_maker_for_an_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="nonsense"):
        maker(ParsedOutput, "value", "nonsense")


def test_a_maker_that_leaves_a_required_field_out_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="metric_id"):
        maker(ScoreCompletedEvent, "run_id", "case_id", "score")


def test_a_new_case_state_equals_pydantics_default_and_shares_only_what_it_cannot_change() -> None:
    """The fold's hand-built ``CaseExecutionState``: every field, and the containers a
    successful case never writes to shared read-only until ``own`` gives it its own."""
    from themis.core._fold_speed import own
    from themis.core.results import CaseExecutionState, _new_case_state

    built, other = _new_case_state(), _new_case_state()
    assert set(built.__dict__) == set(CaseExecutionState.model_fields)
    assert built == CaseExecutionState()
    assert built.model_dump() == CaseExecutionState().model_dump()
    assert built.model_dump_json() == CaseExecutionState().model_dump_json()
    assert built._case_error_rank == 0
    # One fields set naming every field: pydantic's __setattr__ adding to it is a no-op.
    assert built.model_fields_set == set(CaseExecutionState.model_fields)
    built.selection_error = "no candidate"
    assert other.selection_error is None
    assert other.model_fields_set == set(CaseExecutionState.model_fields)
    # What a successful case writes to is its own from the start.
    built.generated_candidates["c-candidate-0"] = None  # type: ignore[assignment]
    assert other.generated_candidates == {}
    # A shared container refuses a write instead of changing every case ...
    with pytest.raises(TypeError, match="read-only"):
        built.generation_failures["c-candidate-0"] = "boom"
    with pytest.raises(TypeError, match="read-only"):
        built.generation_failures.update({"c-candidate-0": "boom"})
    with pytest.raises(TypeError, match="read-only"):
        built._case_error_rank = 3
    assert built.generation_failures.pop("absent", None) is None  # removing nothing is fine
    built.score_failures.clear()
    # ... and own() gives the state a dict of its own.
    own(built, "generation_failures")["c-candidate-0"] = "boom"
    assert built.generation_failures == {"c-candidate-0": "boom"}
    assert other.generation_failures == {}
    assert _new_case_state().generation_failures == {}


def test_copies_of_a_case_state_with_shared_containers() -> None:
    """A copy of a shared container is a plain dict; a deep copy or a pickle of a state
    keeps it shared and read-only (both write a dict once for all its holders, so a plain
    one would be one mutable dict for every case of the copy)."""
    import copy
    import pickle

    from themis.core._fold_speed import EMPTY, own, set_case_error_rank
    from themis.core.results import ExecutionState, _new_case_state

    assert type(copy.copy(EMPTY)) is dict
    state = ExecutionState(run_id="r", case_states={"a": _new_case_state(), "b": _new_case_state()})
    copied = state.model_copy(deep=True)
    a, b = copied.case_states["a"], copied.case_states["b"]
    own(a, "generation_failures")["x"] = "boom"
    assert b.generation_failures == {} and state.case_states["a"].generation_failures == {}
    back = pickle.loads(pickle.dumps(state))
    assert back.case_states == state.case_states
    with pytest.raises(TypeError, match="read-only"):
        back.case_states["a"].generation_failures["x"] = "boom"
    own(back.case_states["a"], "generation_failures")["x"] = "boom"
    assert back.case_states["b"].generation_failures == {}
    set_case_error_rank(back.case_states["a"], 2)
    assert back.case_states["a"]._case_error_rank == 2
    assert back.case_states["b"]._case_error_rank == 0
    assert (
        ExecutionState.model_validate_json(state.model_dump_json()).case_states == state.case_states
    )


def test_models_the_fold_keeps_share_one_fields_set_and_stay_independent() -> None:
    """Validated from full dumps, a frozen model's fields set is its class's shared one;
    a copy with an update gets a set of its own, and the others do not change."""
    from themis.core._fold_speed import share_fields_set
    from themis.core.models import GenerationResult
    from themis.core.results import CaseExecutionState

    dump = GenerationResult(candidate_id="c-0", final_output=2).model_dump(mode="json")
    first = share_fields_set(GenerationResult.model_validate(dump))
    second = share_fields_set(GenerationResult.model_validate({**dump, "candidate_id": "c-1"}))
    assert first.__pydantic_fields_set__ is second.__pydantic_fields_set__
    assert first == GenerationResult.model_validate(dump)
    assert first.model_dump(exclude_unset=True) == dump
    changed = first.model_copy(update={"latency_ms": 5.0})
    assert changed.__pydantic_fields_set__ is not first.__pydantic_fields_set__
    assert first.model_fields_set == set(GenerationResult.model_fields)
    partial = share_fields_set(GenerationResult(candidate_id="c-2", final_output=1))
    assert partial.model_fields_set == {"candidate_id", "final_output"}  # not all set: own set
    mutable = share_fields_set(CaseExecutionState.model_validate(CaseExecutionState().model_dump()))
    assert (
        mutable.__pydantic_fields_set__
        is not share_fields_set(
            CaseExecutionState.model_validate(CaseExecutionState().model_dump())
        ).__pydantic_fields_set__
    )  # not frozen: never shared
