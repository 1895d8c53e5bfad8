"""Protocols every component implements; all are ``runtime_checkable`` structural types."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from themis.core.contexts import (
    EvalScoreContext,
    GenerateContext,
    ParseContext,
    ReduceContext,
    ScoreContext,
    SelectContext,
)
from themis.core.events import RunEvent
from themis.core.models import Case, GenerationResult, ParsedOutput, ReducedCandidate, Score
from themis.core.snapshot import RunSnapshot, StoredRun

if TYPE_CHECKING:
    from themis.core.results import RunResult
    from themis.core.workflows import (
        AggregationResult,
        EvaluationExecution,
        JudgeCall,
        JudgeResponse,
        ParsedJudgment,
        RenderedJudgePrompt,
    )

__all__ = [
    "AfterGenerate",
    "AfterJudge",
    "AfterParse",
    "AfterReduce",
    "AfterRun",
    "AfterScore",
    "AfterSelect",
    "BeforeGenerate",
    "BeforeJudge",
    "BeforeParse",
    "BeforeReduce",
    "BeforeRun",
    "BeforeScore",
    "BeforeSelect",
    "CandidateReducer",
    "CandidateSelector",
    "Component",
    "EvaluationWorkflow",
    "Generator",
    "JudgeModel",
    "LLMMetric",
    "LifecycleSubscriber",
    "OnEvent",
    "Parser",
    "PureMetric",
    "RunStore",
    "SelectionMetric",
    "TraceMetric",
    "TracingProvider",
    "WorkflowRunner",
]


@runtime_checkable
class Component(Protocol):
    """The identity triple: ``component_id``, ``version`` and ``fingerprint()``."""

    component_id: str
    version: str

    def fingerprint(self) -> str: ...


@runtime_checkable
class Generator(Component, Protocol):
    def generate(self, case: Case, ctx: GenerateContext) -> Any: ...


@runtime_checkable
class CandidateSelector(Component, Protocol):
    def select(self, candidates: list[GenerationResult], ctx: SelectContext) -> Any: ...


@runtime_checkable
class CandidateReducer(Component, Protocol):
    def reduce(self, candidates: list[GenerationResult], ctx: ReduceContext) -> Any: ...


@runtime_checkable
class Parser(Component, Protocol):
    def parse(self, candidate: ReducedCandidate, ctx: ParseContext) -> Any: ...


@runtime_checkable
class PureMetric(Component, Protocol):
    def score(self, parsed: ParsedOutput, case: Case, ctx: ScoreContext) -> Any: ...


@runtime_checkable
class LLMMetric(Component, Protocol):
    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> EvaluationWorkflow: ...


@runtime_checkable
class SelectionMetric(Component, Protocol):
    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> EvaluationWorkflow: ...


@runtime_checkable
class TraceMetric(Component, Protocol):
    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> EvaluationWorkflow: ...


@runtime_checkable
class JudgeModel(Component, Protocol):
    def judge(self, prompt: str, *, seed: int | None = None) -> Any: ...


@runtime_checkable
class EvaluationWorkflow(Component, Protocol):
    def judge_calls(self) -> list[JudgeCall]: ...

    def render_prompt(
        self, call: JudgeCall, subject: Any, ctx: EvalScoreContext
    ) -> RenderedJudgePrompt: ...

    def parse_judgment(
        self, call: JudgeCall, response: JudgeResponse, ctx: EvalScoreContext
    ) -> ParsedJudgment: ...

    def score_judgment(
        self, call: JudgeCall, judgment: ParsedJudgment, ctx: EvalScoreContext
    ) -> Score | None: ...

    def aggregate(
        self, judgments: list[ParsedJudgment], scores: list[Score], ctx: EvalScoreContext
    ) -> AggregationResult | None: ...


@runtime_checkable
class WorkflowRunner(Protocol):
    async def run_evaluation(
        self, workflow: EvaluationWorkflow, subject: Any, metric_id: str, ctx: EvalScoreContext
    ) -> EvaluationExecution: ...


# Lifecycle hooks: one protocol per hook; a subscriber implements any subset.
@runtime_checkable
class BeforeRun(Protocol):
    def before_run(self, snapshot: RunSnapshot) -> Any: ...


@runtime_checkable
class AfterRun(Protocol):
    def after_run(self, result: RunResult) -> Any: ...


@runtime_checkable
class BeforeGenerate(Protocol):
    def before_generate(self, case: Case, ctx: GenerateContext) -> Any: ...


@runtime_checkable
class AfterGenerate(Protocol):
    def after_generate(self, result: GenerationResult, ctx: GenerateContext) -> Any: ...


@runtime_checkable
class BeforeSelect(Protocol):
    def before_select(self, candidates: list[GenerationResult], ctx: SelectContext) -> Any: ...


@runtime_checkable
class AfterSelect(Protocol):
    def after_select(self, selected: list[GenerationResult], ctx: SelectContext) -> Any: ...


@runtime_checkable
class BeforeReduce(Protocol):
    def before_reduce(self, candidates: list[GenerationResult], ctx: ReduceContext) -> Any: ...


@runtime_checkable
class AfterReduce(Protocol):
    def after_reduce(self, reduced: ReducedCandidate, ctx: ReduceContext) -> Any: ...


@runtime_checkable
class BeforeParse(Protocol):
    def before_parse(self, candidate: ReducedCandidate, ctx: ParseContext) -> Any: ...


@runtime_checkable
class AfterParse(Protocol):
    def after_parse(self, parsed: ParsedOutput, ctx: ParseContext) -> Any: ...


@runtime_checkable
class BeforeScore(Protocol):
    def before_score(self, parsed: ParsedOutput, ctx: ScoreContext) -> Any: ...


@runtime_checkable
class AfterScore(Protocol):
    def after_score(self, score: Any, ctx: ScoreContext) -> Any: ...


@runtime_checkable
class BeforeJudge(Protocol):
    def before_judge(self, subject: Any, ctx: EvalScoreContext) -> Any: ...


@runtime_checkable
class AfterJudge(Protocol):
    def after_judge(self, execution: EvaluationExecution, ctx: EvalScoreContext) -> Any: ...


@runtime_checkable
class OnEvent(Protocol):
    def on_event(self, event: RunEvent) -> Any: ...


class LifecycleSubscriber(
    BeforeRun,
    AfterRun,
    BeforeGenerate,
    AfterGenerate,
    BeforeSelect,
    AfterSelect,
    BeforeReduce,
    AfterReduce,
    BeforeParse,
    AfterParse,
    BeforeScore,
    AfterScore,
    BeforeJudge,
    AfterJudge,
    OnEvent,
    Protocol,
):
    """Every hook; a real subscriber may implement any subset of them."""


@runtime_checkable
class TracingProvider(Protocol):
    def start_span(self, name: str, attributes: dict[str, object]) -> object: ...

    def end_span(self, span: object, status: str) -> None: ...


@runtime_checkable
class RunStore(Protocol):
    """Where a run's snapshot, events, blobs and stage cache live. Every method is sync."""

    def initialize(self) -> None: ...

    def close(self) -> None: ...

    def persist_snapshot(self, snapshot: RunSnapshot) -> None: ...

    def load_snapshot(self, run_id: str) -> RunSnapshot | None: ...

    def list_runs(self) -> list[str]: ...

    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None: ...

    def query_events(
        self,
        run_id: str,
        *,
        after_seq: int | None = None,
        event_types: Collection[str] | None = None,
    ) -> list[RunEvent]: ...

    def get_projection(self, run_id: str, name: str) -> Any: ...

    def resume(self, run_id: str) -> StoredRun | None: ...

    def store_blob(self, blob: bytes, media_type: str) -> str: ...

    def load_blob(self, ref: str) -> tuple[str, bytes] | None: ...

    def load_stage_cache(self, stage: str, key: str) -> Any: ...

    def store_stage_cache(self, stage: str, key: str, payload: Any) -> None: ...

    def clear_run(self, run_id: str) -> None: ...
