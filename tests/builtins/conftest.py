"""Shared fixtures for the builtin component tests: contexts built the way the runtime does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from themis.core.case_refs import case_key_for
from themis.core.contexts import ParseContext, ReduceContext, ScoreContext, SelectContext
from themis.core.models import Case, ParsedOutput, ReducedCandidate

RUN_ID = "run-builtins"
DATASET_ID = "sample"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def score_ctx() -> Callable[[ParsedOutput, Case], ScoreContext]:
    def make(parsed: ParsedOutput, case: Case) -> ScoreContext:
        return ScoreContext(
            run_id=RUN_ID,
            dataset_id=DATASET_ID,
            case_key=case_key_for(DATASET_ID, case.case_id),
            case=case,
            parsed_output=parsed,
        )

    return make


@pytest.fixture
def parse_ctx() -> ParseContext:
    return ParseContext(
        run_id=RUN_ID,
        dataset_id=DATASET_ID,
        case_key=case_key_for(DATASET_ID, "case-1"),
        case_id="case-1",
        candidate_id="case-1-reduced",
    )


@pytest.fixture
def reduce_ctx() -> Callable[[list[str]], ReduceContext]:
    def make(candidate_ids: list[str]) -> ReduceContext:
        return ReduceContext(
            run_id=RUN_ID,
            dataset_id=DATASET_ID,
            case_key=case_key_for(DATASET_ID, "case-1"),
            case_id="case-1",
            candidate_ids=candidate_ids,
        )

    return make


@pytest.fixture
def select_ctx() -> Callable[[list[str], list[Any]], SelectContext]:
    def make(candidate_ids: list[str], judges: list[Any]) -> SelectContext:
        return SelectContext(
            run_id=RUN_ID,
            dataset_id=DATASET_ID,
            case_key=case_key_for(DATASET_ID, "case-1"),
            case_id="case-1",
            candidate_ids=candidate_ids,
            judge_models=judges,
        )

    return make


@pytest.fixture
def reduced() -> Callable[[Any], ReducedCandidate]:
    def make(output: Any) -> ReducedCandidate:
        return ReducedCandidate(
            candidate_id="case-1-reduced",
            source_candidate_ids=["case-1-candidate-0"],
            final_output=output,
        )

    return make
