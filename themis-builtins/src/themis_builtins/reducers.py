"""``builtin/majority_vote``: reduce a case's candidates to their most common output."""

from __future__ import annotations

from themis.core.base import canonical_json
from themis.core.contexts import ReduceContext
from themis.core.models import GenerationResult, ReducedCandidate

from themis_builtins._component import BuiltinComponent

__all__ = ["MajorityVote"]


class MajorityVote(BuiltinComponent):
    """Groups candidates by canonical output; the largest group wins, ties to the first seen."""

    component_id = "builtin/majority_vote"

    def reduce(self, candidates: list[GenerationResult], ctx: ReduceContext) -> ReducedCandidate:
        """``{case_id}-reduced`` carrying the winning output and every source id."""
        if not candidates:
            raise ValueError(
                f"{self.component_id} got no candidates for case {ctx.case_id!r}; "
                "at least one generation must succeed before reduction"
            )
        ordered = _in_index_order(candidates, ctx.candidate_ids)
        groups: dict[str, list[GenerationResult]] = {}
        for candidate in ordered:
            groups.setdefault(canonical_json(candidate.final_output), []).append(candidate)
        # dicts keep insertion order and max() returns the first maximum: ties go to the
        # group seen first.
        winning = max(groups.values(), key=len)
        return ReducedCandidate(
            candidate_id=f"{ctx.case_id}-reduced",
            source_candidate_ids=[c.candidate_id for c in ordered],
            final_output=winning[0].final_output,
            metadata={
                "strategy": "majority_vote",
                "selected_candidate_id": winning[0].candidate_id,
                "vote_count": len(winning),
                "candidate_count": len(ordered),
            },
        )


def _in_index_order(
    candidates: list[GenerationResult], candidate_ids: list[str]
) -> list[GenerationResult]:
    """The candidates in the order of ``ctx.candidate_ids`` (index order), unknown ids last."""
    position = {cid: i for i, cid in enumerate(candidate_ids)}
    return sorted(candidates, key=lambda c: position.get(c.candidate_id, len(position)))
