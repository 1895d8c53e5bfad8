"""The planner: candidate fan-out, derived seeds, judge seeds and run estimates."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from themis.core.base import content_hash
from themis.core.case_refs import case_key_for
from themis.core.results import GenerationWorkItem, RunEstimate
from themis.core.snapshot import RunSnapshot

__all__ = ["Planner", "candidate_count_of", "judge_seed_for_call"]

_COUNT_KEYS = ("num_samples", "pass_k", "best_of", "self_consistency_count")

DEFAULT_ASSUMPTIONS: dict[str, float] = {
    "chars_per_token": 4,
    "generation_output_tokens_per_candidate": 256,
    "judge_prompt_overhead_tokens": 200,
    "judge_candidate_output_tokens": 256,
    "judge_output_tokens_per_call": 64,
}


def candidate_count_of(policy: Mapping[str, Any]) -> int:
    """The largest positive int among the policy's count keys, or 1."""
    counts = [
        v
        for k in _COUNT_KEYS
        if isinstance(v := policy.get(k), int) and not isinstance(v, bool) and v > 0
    ]
    return max(counts, default=1)


def judge_seed_for_call(
    *,
    run_id: str,
    case_key: str,
    metric_id: str,
    judge_model_id: str,
    judge_index: int | None,
    repeat_index: int,
    dimension_id: str | None,
    candidate_indices: Sequence[int],
) -> int:
    """The first 8 hex digits of sha256 over the call's coordinates joined by ``:``."""
    parts = [
        run_id,
        case_key,
        metric_id,
        judge_model_id,
        "" if judge_index is None else str(judge_index),
        str(repeat_index),
        dimension_id or "",
        ",".join(str(i) for i in candidate_indices),
    ]
    return int(hashlib.sha256(":".join(parts).encode()).hexdigest()[:8], 16)


class Planner:
    """Turns a snapshot into ordered generation work items with stable ids and seeds."""

    def candidate_count(self, snapshot: RunSnapshot) -> int:
        return candidate_count_of(snapshot.identity.candidate_policy)

    def seeds(self, snapshot: RunSnapshot) -> list[int]:
        """The seed of each candidate index, explicit or derived (independent of metrics)."""
        identity = snapshot.identity
        count = self.candidate_count(snapshot)
        if identity.seeds:
            return list(identity.seeds)
        generation_key = content_hash(
            {
                "generator_ref": identity.generator_ref,
                "candidate_policy": identity.candidate_policy,
                "generation_prompt_spec": identity.generation_prompt_spec,
            }
        )
        return [
            int(hashlib.sha256(f"{generation_key}:{i}".encode()).hexdigest()[:8], 16)
            for i in range(count)
        ]

    def plan(self, snapshot: RunSnapshot) -> Iterator[GenerationWorkItem]:
        """Datasets in order, cases in order, then candidate index ``0..n-1``."""
        seeds = self.seeds(snapshot)
        run_id = snapshot.run_id
        for dataset in snapshot.datasets:
            for case in dataset.cases:
                key = case_key_for(dataset.dataset_id, case.case_id)
                for index, seed in enumerate(seeds):
                    yield GenerationWorkItem(
                        run_id=run_id,
                        dataset_id=dataset.dataset_id,
                        case=case,
                        case_id=case.case_id,
                        case_key=key,
                        candidate_index=index,
                        candidate_id=f"{case.case_id}-candidate-{index}",
                        seed=seed,
                    )

    def estimate(
        self,
        snapshot: RunSnapshot,
        *,
        assumptions: Mapping[str, float] | None = None,
        judge_calls_per_case: int | None = None,
    ) -> RunEstimate:
        """Count the planned tasks and estimate tokens (4 characters per token by default)."""
        from themis.core.prompts import PromptSpec

        assumed = {**DEFAULT_ASSUMPTIONS, **(assumptions or {})}
        chars_per_token = max(float(assumed["chars_per_token"]), 1e-9)
        cases = [case for dataset in snapshot.datasets for case in dataset.cases]
        total = len(cases)
        candidates = self.candidate_count(snapshot)
        kinds = snapshot.metric_kinds
        workflow = sum(1 for kind in kinds if kind != "pure")
        judges = len(snapshot.component_refs.judge_models)
        if judge_calls_per_case is None:
            judge_calls_per_case = workflow * judges
            if snapshot.component_refs.selector is not None and _is_best_of_n(snapshot):
                judge_calls_per_case += (candidates - 1) * judges
        spec = snapshot.identity.generation_prompt_spec or PromptSpec()
        input_tokens_per_case = [
            _tokens(spec.render_input(case.input), chars_per_token) for case in cases
        ]
        generation_tasks = total * candidates
        input_tokens = sum(input_tokens_per_case) * candidates
        output_tokens = int(generation_tasks * assumed["generation_output_tokens_per_candidate"])
        judge_calls = total * judge_calls_per_case
        judge_prompt = sum(
            judge_calls_per_case
            * (
                tokens
                + int(assumed["judge_candidate_output_tokens"])
                + int(assumed["judge_prompt_overhead_tokens"])
            )
            for tokens in input_tokens_per_case
        )
        judge_output = int(judge_calls * assumed["judge_output_tokens_per_call"])
        return RunEstimate(
            run_id=snapshot.run_id,
            total_cases=total,
            candidate_count=candidates,
            metric_count=len(kinds),
            pure_metric_count=len(kinds) - workflow,
            workflow_metric_count=workflow,
            planned_generation_tasks=generation_tasks,
            planned_selection_tasks=total if snapshot.component_refs.selector else 0,
            planned_reduction_tasks=total,
            planned_parse_tasks=total,
            planned_score_tasks=total * len(kinds),
            planned_judge_calls=judge_calls,
            estimated_generation_input_tokens=input_tokens,
            estimated_generation_output_tokens=output_tokens,
            estimated_judge_prompt_tokens=judge_prompt,
            estimated_judge_output_tokens=judge_output,
            estimated_total_tokens=input_tokens + output_tokens + judge_prompt + judge_output,
            assumptions=dict(assumed),
        )


def _is_best_of_n(snapshot: RunSnapshot) -> bool:
    selector = snapshot.component_refs.selector
    return selector is not None and selector.component_id == "builtin/best_of_n"


def _tokens(value: Any, chars_per_token: float) -> int:
    import json

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return int(-(-len(text) // chars_per_token))
