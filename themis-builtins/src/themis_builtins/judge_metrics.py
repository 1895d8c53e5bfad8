"""LLM-judged metrics: a rubric, a panel, a majority vote and a pairwise comparison."""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from themis.core.contexts import EvalScoreContext
from themis.core.errors import WorkflowBuildError
from themis.core.models import Score
from themis.core.prompts import render_prompt_spec
from themis.core.snapshot import ComponentRef
from themis.core.subjects import CandidateSetSubject
from themis.core.workflows import (
    AggregationResult,
    JudgeCall,
    JudgeResponse,
    ParsedJudgment,
    RenderedJudgePrompt,
)

from themis_builtins._component import BuiltinComponent
from themis_builtins.text import text_of

__all__ = [
    "DEFAULT_RUBRIC",
    "LLMRubric",
    "MajorityVoteJudge",
    "PairwiseJudge",
    "PairwiseWorkflow",
    "PanelOfJudges",
    "RubricWorkflow",
    "rubric_label_score",
]

DEFAULT_RUBRIC = (
    "The candidate output answers the case input correctly and completely. "
    "PASS if it does, FAIL if it does not."
)

_PASS_LABELS = frozenset({"pass", "yes", "correct", "true", "1"})
_FAIL_LABELS = frozenset({"fail", "no", "incorrect", "false", "0"})
_PAIRWISE_SCORES = {"A": 1.0, "B": 0.0, "TIE": 0.5}

Aggregation = Literal["single", "panel", "majority"]
_W = TypeVar("_W", bound="_Workflow")


def _first_token(raw: str) -> tuple[str, str | None]:
    """(first word stripped of surrounding punctuation, the rest of the reply or None)."""
    parts = raw.strip().split(maxsplit=1)
    if not parts:
        return "", None
    rest = parts[1].strip() if len(parts) > 1 else ""
    return parts[0].strip(string.punctuation), rest or None


def rubric_label_score(raw: str) -> tuple[str, float]:
    """(label, score) of a rubric reply; raises ``ValueError`` when the label is unknown."""
    label, score, _ = _rubric_verdict(raw)
    return label, score


def _rubric_verdict(raw: str) -> tuple[str, float, str | None]:
    """(label, score, rationale) of a rubric reply, the reply split once."""
    token, rationale = _first_token(raw)
    label = token.lower()
    if label in _PASS_LABELS:
        return label, 1.0, rationale
    if label in _FAIL_LABELS:
        return label, 0.0, rationale
    try:
        value = float(label)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return label, value, rationale
    raise ValueError(
        f"cannot read a verdict from the judge reply {raw[:80]!r}: its first word should be "
        "PASS/FAIL (or yes/no, correct/incorrect, true/false, 1/0) or a number"
    )


def _judge_refs(metric_id: str, ctx: EvalScoreContext) -> list[ComponentRef]:
    refs = list(ctx.judge_model_refs)
    if not refs:
        raise WorkflowBuildError(
            f"{metric_id} needs at least one judge model; add one to "
            "evaluation.judge_models (e.g. builtin/demo_judge)"
        )
    return refs


def _candidate_set(metric_id: str, subject: Any, *, minimum: int, exact: bool) -> None:
    if not isinstance(subject, CandidateSetSubject):
        raise WorkflowBuildError(
            f"{metric_id} judges a candidate set, got a {type(subject).__name__}"
        )
    if (exact and subject.size != minimum) or subject.size < minimum:
        wanted = f"exactly {minimum}" if exact else f"at least {minimum}"
        raise WorkflowBuildError(
            f"{metric_id} needs {wanted} candidate(s), got {subject.size}"
            + ("" if exact else "; raise candidate_policy.num_samples")
        )


def _per_judge_calls(refs: list[ComponentRef], **extra: Any) -> list[JudgeCall]:
    # Zero-padded ids keep the planner's call_id sort in judge order past ten judges.
    return [
        JudgeCall(call_id=f"judge-{i:03d}", judge_model_id=ref.component_id, judge_index=i, **extra)
        for i, ref in enumerate(refs)
    ]


def _judge_details(call: JudgeCall) -> dict[str, Any]:
    return {"judge_index": call.judge_index, "judge_model_id": call.judge_model_id}


# Workflows by everything they are built from. A metric builds the same workflow for every
# case of a run and a workflow keeps no per-case state, so one is built (and its fingerprint
# hashed) per run rather than per case. Bounded, as runs are few.
_WORKFLOWS: dict[tuple[Any, ...], Any] = {}


def _shared(key: tuple[Any, ...], build: Callable[[], _W]) -> _W:
    """The workflow built for ``key`` before, else ``build()`` kept for the next case."""
    found: _W | None = _WORKFLOWS.get(key)
    if found is None:
        if len(_WORKFLOWS) >= 1024:
            _WORKFLOWS.clear()
        found = _WORKFLOWS[key] = build()
    return found


class _Workflow(BuiltinComponent):
    """Shared workflow plumbing: the planned calls and a memoised fingerprint.

    A workflow is immutable once built: the metrics share one across the cases of a run.
    """

    def __init__(self, *, metric_id: str, calls: list[JudgeCall]) -> None:
        self.metric_id = metric_id
        self.calls = calls
        self._fingerprint: str | None = None

    def params(self) -> dict[str, Any]:
        return {"metric_id": self.metric_id, "calls": [c.canonical_data() for c in self.calls]}

    def fingerprint(self) -> str:
        """The content hash of ``{component_id, version, params}``, computed once."""
        if self._fingerprint is None:
            self._fingerprint = super().fingerprint()
        return self._fingerprint

    def judge_calls(self) -> list[JudgeCall]:
        return list(self.calls)

    def score_judgment(
        self, call: JudgeCall, judgment: ParsedJudgment, ctx: EvalScoreContext
    ) -> Score | None:
        """The judgment's score under the metric's id, or None when it has none."""
        if judgment.score is None:
            return None
        return Score.model_construct(
            metric_id=self.metric_id,
            value=judgment.score,
            details={"label": judgment.label, **_judge_details(call)},
        )


class RubricWorkflow(_Workflow):
    """Asks judges whether a candidate meets the rubric and aggregates their verdicts."""

    component_id = "builtin/rubric_workflow"

    def __init__(
        self,
        *,
        metric_id: str,
        calls: list[JudgeCall],
        rubric: str,
        aggregation: Aggregation,
    ) -> None:
        super().__init__(metric_id=metric_id, calls=calls)
        self.rubric = rubric
        self.aggregation = aggregation

    def params(self) -> dict[str, Any]:
        return {**super().params(), "rubric": self.rubric, "aggregation": self.aggregation}

    def render_prompt(
        self, call: JudgeCall, subject: Any, ctx: EvalScoreContext
    ) -> RenderedJudgePrompt:
        """Evaluation-spec sections, the rubric, the case input, the output, PASS/FAIL."""
        candidate = subject.candidates[0]
        body = "\n\n".join(
            [
                f"Rubric:\n{self.rubric}",
                f"Case input:\n{text_of(ctx.case.input)}",
                f"Candidate output:\n{text_of(candidate.final_output)}",
                "Does the candidate output meet the rubric? Reply with PASS or FAIL as the "
                "first word, then a one-sentence rationale.",
            ]
        )
        return RenderedJudgePrompt.model_construct(
            prompt_id=call.call_id, content=render_prompt_spec(ctx.prompt_spec, body)
        )

    def parse_judgment(
        self, call: JudgeCall, response: JudgeResponse, ctx: EvalScoreContext
    ) -> ParsedJudgment:
        """The reply's first word as the label, scored by the rubric rules."""
        label, score, rationale = _rubric_verdict(response.raw_response)
        return ParsedJudgment.model_construct(
            label=label, score=score, rationale=rationale, details=_judge_details(call)
        )

    def aggregate(
        self, judgments: list[ParsedJudgment], scores: list[Score], ctx: EvalScoreContext
    ) -> AggregationResult | None:
        """Mean (single, panel) or the winning label's score (majority); None with no score."""
        scored = [j for j in judgments if j.score is not None]
        if not scored:
            return None
        if self.aggregation == "majority":
            counts = Counter(j.label for j in scored)
            # ``most_common`` keeps first-seen order among equal counts: ties go to the first.
            winner = counts.most_common(1)[0][0]
            value = next(j.score for j in scored if j.label == winner)
            return AggregationResult(
                method="majority_vote",
                value=value,
                details={"winner": winner, "counts": dict(counts)},
            )
        mean = sum(j.score for j in scored if j.score is not None) / len(scored)
        if self.aggregation == "single":
            return AggregationResult.model_construct(
                method="mean", value=mean, details={"label": scored[0].label}
            )
        labels = [j.label for j in scored]
        pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
        # One judge agrees with itself: a lone verdict counts as full agreement.
        agreement = sum(a == b for a, b in pairs) / len(pairs) if pairs else 1.0
        per_judge = [
            {
                "judge_index": j.details.get("judge_index"),
                "judge_model_id": j.details.get("judge_model_id"),
                "label": j.label,
                "score": j.score,
            }
            for j in scored
        ]
        return AggregationResult(
            method="mean",
            value=mean,
            details={"count": len(scored), "per_judge": per_judge, "agreement": agreement},
        )


class PairwiseWorkflow(_Workflow):
    """Asks judges which of candidates A and B is better, or TIE."""

    component_id = "builtin/pairwise_workflow"

    def render_prompt(
        self, call: JudgeCall, subject: Any, ctx: EvalScoreContext
    ) -> RenderedJudgePrompt:
        """The case input, candidates A and B, and a request for A, B or TIE."""
        first, second = call.candidate_indices[:2] or [0, 1]
        candidates = subject.candidates
        body = "\n\n".join(
            [
                "Compare two candidate outputs for the same case and decide which is better.",
                f"Case input:\n{text_of(ctx.case.input)}",
                f"Candidate A:\n{text_of(candidates[first].final_output)}",
                f"Candidate B:\n{text_of(candidates[second].final_output)}",
                "Reply with A if candidate A is better, B if candidate B is better, or TIE, "
                "as the first word.",
            ]
        )
        return RenderedJudgePrompt(
            prompt_id=call.call_id, content=render_prompt_spec(ctx.prompt_spec, body)
        )

    def parse_judgment(
        self, call: JudgeCall, response: JudgeResponse, ctx: EvalScoreContext
    ) -> ParsedJudgment:
        """A, B or TIE from the reply's first word (A 1.0, B 0.0, TIE 0.5)."""
        token, rationale = _first_token(response.raw_response)
        label = token.upper()
        if label not in _PAIRWISE_SCORES:
            raise ValueError(
                f"cannot read a preference from the judge reply "
                f"{response.raw_response[:80]!r}: its first word should be A, B or TIE"
            )
        return ParsedJudgment(
            label=label,
            score=_PAIRWISE_SCORES[label],
            rationale=rationale,
            details=_judge_details(call),
        )

    def aggregate(
        self, judgments: list[ParsedJudgment], scores: list[Score], ctx: EvalScoreContext
    ) -> AggregationResult | None:
        """The mean preference for A; ``details.winner`` is A, B or TIE."""
        values = [j.score for j in judgments if j.score is not None]
        if not values:
            return None
        mean = sum(values) / len(values)
        winner = "A" if mean > 0.5 else "B" if mean < 0.5 else "TIE"
        votes = Counter(j.label for j in judgments)
        return AggregationResult(
            method="mean",
            value=mean,
            details={"winner": winner, "count": len(values), "votes": dict(votes)},
        )


def _rubric_of(ctx: EvalScoreContext) -> str:
    rubric = ctx.eval_workflow_config.get("rubric", DEFAULT_RUBRIC)
    return rubric if isinstance(rubric, str) else text_of(rubric)


def _rubric_workflow(
    metric_id: str, ctx: EvalScoreContext, aggregation: Aggregation
) -> RubricWorkflow:
    """The rubric put to every judge of ``ctx``, aggregated by ``aggregation``."""
    refs = _judge_refs(metric_id, ctx)
    rubric = _rubric_of(ctx)
    return _shared(
        (metric_id, rubric, *(ref.component_id for ref in refs)),
        lambda: RubricWorkflow(
            metric_id=metric_id,
            calls=_per_judge_calls(refs),
            rubric=rubric,
            aggregation=aggregation,
        ),
    )


class LLMRubric(BuiltinComponent):
    """One rubric call to the first judge model; the score is its verdict."""

    component_id = "builtin/llm_rubric"
    metric_family = "llm"

    def estimated_judge_calls(self, n_judges: int) -> int:
        """One call, whatever the number of judges."""
        return 1 if n_judges > 0 else 0

    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> RubricWorkflow:
        """A rubric workflow with a single call to judge 0."""
        _candidate_set(self.component_id, subject, minimum=1, exact=True)
        judge_id = _judge_refs(self.component_id, ctx)[0].component_id
        rubric = _rubric_of(ctx)
        return _shared(
            (self.component_id, judge_id, rubric),
            lambda: RubricWorkflow(
                metric_id=self.component_id,
                calls=[
                    JudgeCall.model_construct(
                        call_id="rubric", judge_model_id=judge_id, judge_index=0
                    )
                ],
                rubric=rubric,
                aggregation="single",
            ),
        )


class PanelOfJudges(BuiltinComponent):
    """The rubric put to every judge model; the score is their mean verdict."""

    component_id = "builtin/panel_of_judges"
    metric_family = "llm"

    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> RubricWorkflow:
        """One rubric call per judge; details ``{count, per_judge, agreement}``."""
        _candidate_set(self.component_id, subject, minimum=1, exact=True)
        return _rubric_workflow(self.component_id, ctx, "panel")


class MajorityVoteJudge(BuiltinComponent):
    """The rubric put to every judge; the most common label decides (ties: first seen)."""

    component_id = "builtin/majority_vote_judge"
    metric_family = "llm"

    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> RubricWorkflow:
        """One rubric call per judge; details ``{winner, counts}``."""
        _candidate_set(self.component_id, subject, minimum=1, exact=True)
        return _rubric_workflow(self.component_id, ctx, "majority")


class PairwiseJudge(BuiltinComponent):
    """Every judge compares candidates 0 (A) and 1 (B); the score is the mean preference."""

    component_id = "builtin/pairwise_judge"
    metric_family = "selection"

    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> PairwiseWorkflow:
        """One A/B/TIE call per judge on candidates ``[0, 1]``."""
        _candidate_set(self.component_id, subject, minimum=2, exact=False)
        refs = _judge_refs(self.component_id, ctx)
        return _shared(
            (self.component_id, *(ref.component_id for ref in refs)),
            lambda: PairwiseWorkflow(
                metric_id=self.component_id,
                calls=_per_judge_calls(refs, dimension_id="winner", candidate_indices=[0, 1]),
            ),
        )
