"""``builtin/best_of_n``: a sequential tournament decided by a strict majority of judges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from themis.core.contexts import SelectContext
from themis.core.models import GenerationResult
from themis.core.planner import judge_seed_for_call
from themis.core.workflows import JudgeResponse
from themis.testing import FakeJudge
from themis_builtins import BestOfN
from themis_builtins.selectors import vote_of

pytestmark = pytest.mark.anyio

SelectCtx = Callable[[list[str], list[Any]], SelectContext]


def _candidates(*outputs: str) -> list[GenerationResult]:
    return [
        GenerationResult(candidate_id=f"case-1-candidate-{i}", final_output=output)
        for i, output in enumerate(outputs)
    ]


class SyncJudge:
    """A sync judge that prefers the candidate whose text contains ``favourite``."""

    component_id = "test/sync_judge"
    version = "1.0"

    def __init__(self, favourite: str, *, as_string: bool = False) -> None:
        self.favourite = favourite
        self.as_string = as_string
        self.calls: list[tuple[str, int | None]] = []

    def fingerprint(self) -> str:
        return self.favourite

    def judge(self, prompt: str, *, seed: int | None = None) -> JudgeResponse | str:
        self.calls.append((prompt, seed))
        b_part = prompt.split("Candidate B:", 1)[1]
        reply = "B" if self.favourite in b_part else "A"
        return reply if self.as_string else JudgeResponse(raw_response=reply)


def _ids(candidates: Sequence[GenerationResult]) -> list[str]:
    return [c.candidate_id for c in candidates]


async def test_single_candidate_is_returned_without_asking_a_judge(select_ctx: SelectCtx) -> None:
    judge = FakeJudge("B")
    candidates = _candidates("only")
    selected = await BestOfN().select(candidates, select_ctx(_ids(candidates), [judge]))
    assert selected == candidates
    assert judge.prompts == []


async def test_challenger_with_unanimous_b_votes_wins(select_ctx: SelectCtx) -> None:
    candidates = _candidates("first", "second")
    judges = [FakeJudge("B"), FakeJudge("B"), FakeJudge("B")]
    selected = await BestOfN().select(candidates, select_ctx(_ids(candidates), judges))
    assert _ids(selected) == ["case-1-candidate-1"]


async def test_challenger_needs_more_than_half_of_the_judges(select_ctx: SelectCtx) -> None:
    """Two judges split one each: a tie keeps the incumbent."""
    candidates = _candidates("first", "second")
    judges = [FakeJudge("B"), FakeJudge("A")]
    selected = await BestOfN().select(candidates, select_ctx(_ids(candidates), judges))
    assert _ids(selected) == ["case-1-candidate-0"]


async def test_challenger_wins_with_two_of_three_votes(select_ctx: SelectCtx) -> None:
    candidates = _candidates("first", "second")
    judges = [FakeJudge("B"), FakeJudge("A"), FakeJudge("B")]
    selected = await BestOfN().select(candidates, select_ctx(_ids(candidates), judges))
    assert _ids(selected) == ["case-1-candidate-1"]


async def test_unreadable_reply_counts_against_the_challenger(select_ctx: SelectCtx) -> None:
    candidates = _candidates("first", "second")
    judges = [FakeJudge("B"), FakeJudge("I cannot decide")]
    selected = await BestOfN().select(candidates, select_ctx(_ids(candidates), judges))
    assert _ids(selected) == ["case-1-candidate-0"]


async def test_tournament_is_sequential_and_the_winner_carries_on(select_ctx: SelectCtx) -> None:
    """Candidate 2 beats 0 only after 1 lost: every round pits the incumbent against the next."""
    judge = SyncJudge("gold")
    candidates = _candidates("tin", "lead", "gold", "iron")
    selected = await BestOfN().select(candidates, select_ctx(_ids(candidates), [judge]))
    assert _ids(selected) == ["case-1-candidate-2"]
    pairs = [
        (p.split("Candidate A:\n")[1].split("\n")[0], p.split("Candidate B:\n")[1].split("\n")[0])
        for p, _ in judge.calls
    ]
    assert pairs == [("tin", "lead"), ("tin", "gold"), ("gold", "iron")]


async def test_sync_judges_returning_strings_are_accepted(select_ctx: SelectCtx) -> None:
    candidates = _candidates("tin", "gold")
    judge = SyncJudge("gold", as_string=True)
    selected = await BestOfN().select(candidates, select_ctx(_ids(candidates), [judge]))
    assert _ids(selected) == ["case-1-candidate-1"]


async def test_every_judge_is_asked_once_per_round(select_ctx: SelectCtx) -> None:
    judges = [FakeJudge("A"), FakeJudge("A")]
    candidates = _candidates("a", "b", "c")
    await BestOfN().select(candidates, select_ctx(_ids(candidates), judges))
    assert [len(j.prompts) for j in judges] == [2, 2]


async def test_prompt_shows_both_outputs_and_asks_for_one_letter(select_ctx: SelectCtx) -> None:
    judge = FakeJudge("A")
    candidates = _candidates("forty-two", "forty-three")
    await BestOfN().select(candidates, select_ctx(_ids(candidates), [judge]))
    (prompt,) = judge.prompts
    assert "Candidate A:\nforty-two" in prompt
    assert "Candidate B:\nforty-three" in prompt
    assert "one letter" in prompt


async def test_votes_are_recorded_in_the_selection_metadata(select_ctx: SelectCtx) -> None:
    candidates = _candidates("first", "second")
    judges = [FakeJudge("B"), FakeJudge("b."), FakeJudge("maybe")]
    ctx = select_ctx(_ids(candidates), judges)
    await BestOfN().select(candidates, ctx)
    assert ctx.metadata == {
        "strategy": "best_of_n",
        "winner": "case-1-candidate-1",
        "votes": [
            {
                "incumbent": "case-1-candidate-0",
                "challenger": "case-1-candidate-1",
                "votes": ["B", "B", ""],
                "b_votes": 2,
                "winner": "case-1-candidate-1",
            }
        ],
    }


async def test_winner_is_returned_unchanged(select_ctx: SelectCtx) -> None:
    candidates = [
        GenerationResult(candidate_id="case-1-candidate-0", final_output="x", artifacts={"k": 1}),
        GenerationResult(candidate_id="case-1-candidate-1", final_output="y"),
    ]
    (winner,) = await BestOfN().select(candidates, select_ctx(_ids(candidates), [FakeJudge("A")]))
    assert winner == candidates[0]


async def test_judge_seeds_are_derived_per_call_under_the_selection_metric_id(
    select_ctx: SelectCtx,
) -> None:
    judge = FakeJudge("A", component_id="fake/judge")
    candidates = _candidates("a", "b")
    ctx = select_ctx(_ids(candidates), [judge])
    await BestOfN().select(candidates, ctx)
    assert ctx.case_key is not None
    expected = judge_seed_for_call(
        run_id=ctx.run_id,
        case_key=ctx.case_key,
        metric_id="selection",
        judge_model_id="fake/judge",
        judge_index=0,
        repeat_index=0,
        dimension_id=None,
        candidate_indices=[0, 1],
    )
    assert judge.seeds == [expected]


async def test_no_judges_is_an_error_that_says_to_add_one(select_ctx: SelectCtx) -> None:
    candidates = _candidates("a", "b")
    with pytest.raises(ValueError, match="judge_models"):
        await BestOfN().select(candidates, select_ctx(_ids(candidates), []))


async def test_no_candidates_is_an_error_naming_the_case(select_ctx: SelectCtx) -> None:
    with pytest.raises(ValueError, match="case-1"):
        await BestOfN().select([], select_ctx([], [FakeJudge("A")]))


def test_requires_judges() -> None:
    assert BestOfN().requires_judges is True


@pytest.mark.parametrize(
    ("reply", "vote"),
    [
        ("A", "A"),
        ("b", "B"),
        ("B.", "B"),
        ("**A**", "A"),
        ("B because", "B"),
        ("", ""),
        ("Answer: B", ""),
        ("AB", ""),
        (JudgeResponse(raw_response=" a "), "A"),
    ],
)
def test_vote_is_read_from_the_first_word(reply: object, vote: str) -> None:
    assert vote_of(reply) == vote
