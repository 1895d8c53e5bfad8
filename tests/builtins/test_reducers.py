"""``builtin/majority_vote``: the most common output wins, ties to the first seen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from themis.core.contexts import ReduceContext
from themis.core.models import GenerationResult
from themis_builtins import MajorityVote

ReduceCtx = Callable[[list[str]], ReduceContext]


def _candidates(*outputs: Any) -> list[GenerationResult]:
    return [
        GenerationResult(candidate_id=f"case-1-candidate-{i}", final_output=output)
        for i, output in enumerate(outputs)
    ]


def _reduce(reduce_ctx: ReduceCtx, candidates: list[GenerationResult]) -> Any:
    return MajorityVote().reduce(candidates, reduce_ctx([c.candidate_id for c in candidates]))


def test_most_common_output_wins(reduce_ctx: ReduceCtx) -> None:
    reduced = _reduce(reduce_ctx, _candidates("4", "5", "4"))
    assert reduced.final_output == "4"
    assert reduced.metadata["vote_count"] == 2


def test_tie_goes_to_the_group_seen_first(reduce_ctx: ReduceCtx) -> None:
    reduced = _reduce(reduce_ctx, _candidates("5", "4", "4", "5"))
    assert reduced.final_output == "5"
    assert reduced.metadata["selected_candidate_id"] == "case-1-candidate-0"


def test_outputs_are_grouped_by_canonical_json(reduce_ctx: ReduceCtx) -> None:
    """Key order does not split a group; a number and its string do not merge."""
    candidates = _candidates({"a": 1, "b": 2}, "1", {"b": 2, "a": 1}, 1, "1")
    reduced = _reduce(reduce_ctx, candidates)
    assert reduced.final_output == {"a": 1, "b": 2}
    assert reduced.metadata["vote_count"] == 2


def test_reduced_candidate_id_is_case_id_reduced(reduce_ctx: ReduceCtx) -> None:
    assert _reduce(reduce_ctx, _candidates("x")).candidate_id == "case-1-reduced"


def test_source_ids_are_every_candidate_in_index_order(reduce_ctx: ReduceCtx) -> None:
    candidates = _candidates("a", "b", "c")
    ctx = reduce_ctx([c.candidate_id for c in candidates])
    reduced = MajorityVote().reduce(list(reversed(candidates)), ctx)
    assert reduced.source_candidate_ids == [
        "case-1-candidate-0",
        "case-1-candidate-1",
        "case-1-candidate-2",
    ]


def test_metadata_names_strategy_winner_and_counts(reduce_ctx: ReduceCtx) -> None:
    reduced = _reduce(reduce_ctx, _candidates("x", "y", "y"))
    assert reduced.metadata == {
        "strategy": "majority_vote",
        "selected_candidate_id": "case-1-candidate-1",
        "vote_count": 2,
        "candidate_count": 3,
    }


def test_reducing_nothing_is_an_error_naming_the_case(reduce_ctx: ReduceCtx) -> None:
    with pytest.raises(ValueError, match="case-1"):
        MajorityVote().reduce([], reduce_ctx([]))
