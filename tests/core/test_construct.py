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


def test_a_new_case_state_equals_pydantics_default_and_shares_nothing() -> None:
    """The fold's hand-built ``CaseExecutionState``: every field, fresh containers."""
    from themis.core.results import CaseExecutionState, _new_case_state

    built, other = _new_case_state(), _new_case_state()
    assert set(built.__dict__) == set(CaseExecutionState.model_fields)
    assert built == CaseExecutionState()
    assert built.model_dump() == CaseExecutionState().model_dump()
    assert built._case_error_rank == 0 and built.model_fields_set == set()
    built.generation_failures["c-candidate-0"] = "boom"
    assert other.generation_failures == {}


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
