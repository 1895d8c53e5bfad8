"""``builtin/best_of_n``: keep the candidate that wins a judged knockout tournament."""

from __future__ import annotations

import inspect
import string
from typing import Any

from themis.core.contexts import SelectContext
from themis.core.models import GenerationResult
from themis.core.planner import judge_seed_for_call

from themis_builtins._component import BuiltinComponent
from themis_builtins.text import text_of

__all__ = ["BestOfN"]

# Judge seeds of selection calls are derived under this pseudo metric id (API §5.4).
_SELECTION_METRIC_ID = "selection"


class BestOfN(BuiltinComponent):
    """Runs a sequential tournament in which each challenger needs a strict judge majority."""

    component_id = "builtin/best_of_n"
    requires_judges = True

    async def select(
        self, candidates: list[GenerationResult], ctx: SelectContext
    ) -> list[GenerationResult]:
        """``[winner]``; the tournament's rounds go to ``ctx.metadata["votes"]``."""
        if not candidates:
            raise ValueError(
                f"{self.component_id} got no candidates for case {ctx.case_id!r}; "
                "at least one generation must succeed before selection"
            )
        if len(candidates) == 1:
            return list(candidates)
        judges = list(ctx.judge_models)
        if not judges:
            raise ValueError(
                f"{self.component_id} needs at least one judge model to compare candidates; "
                "add one to evaluation.judge_models (e.g. builtin/demo_judge)"
            )
        incumbent = 0
        rounds: list[dict[str, Any]] = []
        for challenger in range(1, len(candidates)):
            prompt = comparison_prompt(candidates[incumbent], candidates[challenger])
            votes: list[str] = []
            for judge_index, judge in enumerate(judges):
                seed = judge_seed_for_call(
                    run_id=ctx.run_id,
                    case_key=ctx.case_key or ctx.case_id,
                    metric_id=_SELECTION_METRIC_ID,
                    judge_model_id=str(getattr(judge, "component_id", "")),
                    judge_index=judge_index,
                    repeat_index=0,
                    dimension_id=None,
                    candidate_indices=[incumbent, challenger],
                )
                reply = judge.judge(prompt, seed=seed)
                if inspect.isawaitable(reply):
                    reply = await reply
                votes.append(vote_of(reply))
            b_votes = votes.count("B")
            # Strictly more than half: a tie, or an unreadable reply, keeps the incumbent.
            challenger_wins = 2 * b_votes > len(judges)
            rounds.append(
                {
                    "incumbent": candidates[incumbent].candidate_id,
                    "challenger": candidates[challenger].candidate_id,
                    "votes": votes,
                    "b_votes": b_votes,
                    "winner": candidates[challenger if challenger_wins else incumbent].candidate_id,
                }
            )
            if challenger_wins:
                incumbent = challenger
        winner = candidates[incumbent]
        # The runtime hands every selector a fresh metadata dict and records what the
        # selector put there in selection_completed.metadata.
        ctx.metadata.update(
            {"strategy": "best_of_n", "winner": winner.candidate_id, "votes": rounds}
        )
        return [winner]


def comparison_prompt(incumbent: GenerationResult, challenger: GenerationResult) -> str:
    """The A/B question put to every judge: A is the incumbent, B the challenger."""
    return (
        "Compare two candidate answers to the same task and pick the better one.\n\n"
        f"Candidate A:\n{text_of(incumbent.final_output)}\n\n"
        f"Candidate B:\n{text_of(challenger.final_output)}\n\n"
        "Reply with exactly one letter: A if candidate A is better, B if candidate B is better."
    )


def vote_of(reply: Any) -> str:
    """``"A"`` or ``"B"`` from the reply's first word (punctuation stripped), else ``""``."""
    raw = getattr(reply, "raw_response", reply)
    words = str(raw).split()
    if not words:
        return ""
    letter = words[0].strip(string.punctuation).upper()
    return letter if letter in ("A", "B") else ""
