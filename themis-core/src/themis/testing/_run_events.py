"""Hand-built runs for tests: a small snapshot and its events, with no orchestrator."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

from themis.core.base import canonical_json
from themis.core.events import (
    CaseFailedEvent,
    EvaluationCompletedEvent,
    EvaluationFailedEvent,
    GenerationCompletedEvent,
    GenerationFailedEvent,
    ParseCompletedEvent,
    ParseFailedEvent,
    ReductionCompletedEvent,
    ReductionFailedEvent,
    ReplayStartedEvent,
    RunCompletedEvent,
    RunEvent,
    RunFailedEvent,
    RunStartedEvent,
    ScoreCompletedEvent,
    ScoreFailedEvent,
    SelectionCompletedEvent,
    SelectionFailedEvent,
    StepCompletedEvent,
)
from themis.core.models import Case, Dataset
from themis.core.snapshot import ComponentRef, ComponentRefs, DatasetRef, RunIdentity, RunSnapshot

__all__ = [
    "T0",
    "RunEvents",
    "execution_payload",
    "generation_payload",
    "json_blob",
    "parse_payload",
    "reduction_payload",
    "sample_run",
    "sample_snapshot",
]

T0 = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC)


def _ref(component_id: str) -> ComponentRef:
    return ComponentRef(component_id=component_id, version="1", fingerprint=f"fp-{component_id}")


def sample_snapshot(
    *,
    cases: int = 3,
    datasets: Sequence[str] = ("alpha",),
    metrics: Sequence[tuple[str, str]] = (("test/exact", "pure"), ("test/judge", "llm")),
    candidate_policy: dict[str, Any] | None = None,
    label: str = "",
) -> RunSnapshot:
    """A compiled-looking snapshot with ``cases`` cases per dataset; ``label`` varies run_id."""
    dataset_models = [
        Dataset(
            dataset_id=dataset_id,
            cases=[
                Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}")
                for i in range(1, cases + 1)
            ],
        )
        for dataset_id in datasets
    ]
    metric_refs = [_ref(metric_id) for metric_id, _ in metrics]
    judges = [_ref("test/judge_model")] if any(kind != "pure" for _, kind in metrics) else []
    identity = RunIdentity(
        dataset_refs=[
            DatasetRef(dataset_id=d.dataset_id, fingerprint=d.compute_hash())
            for d in dataset_models
        ],
        generator_ref=_ref("test/generator"),
        metric_refs=metric_refs,
        judge_model_refs=judges,
        candidate_policy=dict(candidate_policy or {}),
        judge_config={"label": label} if label else {},
    )
    return RunSnapshot(
        identity=identity,
        component_refs=ComponentRefs(
            generator=_ref("test/generator"), metrics=metric_refs, judge_models=judges
        ),
        datasets=dataset_models,
        metric_kinds=[kind for _, kind in metrics],
    )


def execution_payload(
    metric_id: str, value: float = 1.0, *, partial: bool = False
) -> dict[str, Any]:
    """An ``EvaluationExecution`` JSON with one score (and one failure when ``partial``)."""
    failures = (
        [
            {
                "call_id": "call-0",
                "step_id": "call-0:model_call",
                "step_type": "model_call",
                "error_message": "judge timed out",
            }
        ]
        if partial
        else []
    )
    return {
        "execution_id": f"exec:{metric_id}",
        "subject_kind": "candidate_set",
        "status": "partial_failure" if partial else "completed",
        "scores": [{"metric_id": metric_id, "value": value}],
        "failures": failures,
        "trace": {"trace_id": f"exec:{metric_id}:trace"},
    }


class RunEvents:
    """Builds a run's events by hand: dense ``seq`` from ``start_seq``, distinct timestamps."""

    def __init__(
        self,
        snapshot: RunSnapshot,
        *,
        start_seq: int = 1,
        dataset_id: str = "alpha",
        start: _dt.datetime = T0,
    ) -> None:
        self.run_id = snapshot.run_id
        self.dataset_id = dataset_id
        self._seq = start_seq - 1
        self._start = start

    @property
    def last_seq(self) -> int:
        return self._seq

    def _next(self, cls: type[RunEvent], **fields: Any) -> RunEvent:
        self._seq += 1
        when = self._start + _dt.timedelta(milliseconds=self._seq)
        return cls(run_id=self.run_id, seq=self._seq, occurred_at=when, **fields)

    def _case(self, case_id: str, dataset_id: str | None) -> dict[str, Any]:
        return {"case_id": case_id, "dataset_id": dataset_id or self.dataset_id}

    # Run-level events.

    def run_started(self, until_stage: str = "judge", mode: str = "fresh") -> RunEvent:
        return self._next(RunStartedEvent, until_stage=until_stage, mode=mode)

    def run_completed(self, stage: str = "judge") -> RunEvent:
        return self._next(RunCompletedEvent, completed_through_stage=stage)

    def run_failed(self, message: str = "store went away") -> RunEvent:
        return self._next(RunFailedEvent, error_message=message)

    def replay(self, stage: str, metric_ids: list[str] | None = None) -> RunEvent:
        return self._next(ReplayStartedEvent, stage=stage, metric_ids=metric_ids)

    # Case events.

    def generated(
        self,
        case_id: str,
        index: int = 0,
        *,
        output: Any = "ok",
        dataset_id: str | None = None,
        trace: bool = False,
        conversation: bool = False,
        blob_ref: str | None = None,
    ) -> RunEvent:
        candidate_id = f"{case_id}-candidate-{index}"
        return self._next(
            GenerationCompletedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=candidate_id,
            candidate_index=index,
            result=None
            if blob_ref
            else generation_payload(candidate_id, output, trace, conversation),
            result_blob_ref=blob_ref,
        )

    def generation_failed(
        self,
        case_id: str,
        index: int = 0,
        *,
        message: str = "generator down",
        dataset_id: str | None = None,
    ) -> RunEvent:
        return self._next(
            GenerationFailedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=f"{case_id}-candidate-{index}",
            candidate_index=index,
            error_message=message,
        )

    def selected(
        self, case_id: str, indices: Sequence[int] = (0,), *, dataset_id: str | None = None
    ) -> RunEvent:
        ids = [f"{case_id}-candidate-{i}" for i in indices]
        return self._next(
            SelectionCompletedEvent, **self._case(case_id, dataset_id), candidate_ids=ids
        )

    def selection_failed(
        self, case_id: str, *, message: str = "no winner", dataset_id: str | None = None
    ) -> RunEvent:
        return self._next(
            SelectionFailedEvent, **self._case(case_id, dataset_id), error_message=message
        )

    def reduced(
        self,
        case_id: str,
        *,
        output: Any = "ok",
        dataset_id: str | None = None,
        blob_ref: str | None = None,
    ) -> RunEvent:
        return self._next(
            ReductionCompletedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=f"{case_id}-reduced",
            result=None if blob_ref else reduction_payload(case_id, output),
            result_blob_ref=blob_ref,
        )

    def reduction_failed(
        self, case_id: str, *, message: str = "no majority", dataset_id: str | None = None
    ) -> RunEvent:
        return self._next(
            ReductionFailedEvent, **self._case(case_id, dataset_id), error_message=message
        )

    def parsed(
        self,
        case_id: str,
        value: Any = "ok",
        *,
        invalid: bool = False,
        dataset_id: str | None = None,
        blob_ref: str | None = None,
    ) -> RunEvent:
        return self._next(
            ParseCompletedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=f"{case_id}-reduced",
            result=None if blob_ref else parse_payload(value, invalid=invalid),
            result_blob_ref=blob_ref,
        )

    def parse_failed(
        self, case_id: str, *, message: str = "not JSON", dataset_id: str | None = None
    ) -> RunEvent:
        return self._next(
            ParseFailedEvent, **self._case(case_id, dataset_id), error_message=message
        )

    def scored(
        self, case_id: str, metric_id: str, value: float = 1.0, *, dataset_id: str | None = None
    ) -> RunEvent:
        return self._next(
            ScoreCompletedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=f"{case_id}-reduced",
            metric_id=metric_id,
            score={"metric_id": metric_id, "value": value, "details": {"why": "test"}},
        )

    def score_failed(
        self,
        case_id: str,
        metric_id: str,
        *,
        reason: str = "metric raised",
        dataset_id: str | None = None,
    ) -> RunEvent:
        return self._next(
            ScoreFailedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=f"{case_id}-reduced",
            metric_id=metric_id,
            error={"metric_id": metric_id, "reason": reason, "details": {"kind": "test"}},
        )

    def evaluated(
        self,
        case_id: str,
        metric_id: str,
        value: float = 1.0,
        *,
        partial: bool = False,
        dataset_id: str | None = None,
        blob_ref: str | None = None,
    ) -> RunEvent:
        return self._next(
            EvaluationCompletedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=f"{case_id}-reduced",
            metric_id=metric_id,
            execution=None if blob_ref else execution_payload(metric_id, value, partial=partial),
            execution_blob_ref=blob_ref,
        )

    def evaluation_failed(
        self,
        case_id: str,
        metric_id: str,
        *,
        message: str = "no subject",
        dataset_id: str | None = None,
    ) -> RunEvent:
        return self._next(
            EvaluationFailedEvent,
            **self._case(case_id, dataset_id),
            candidate_id=f"{case_id}-reduced",
            metric_id=metric_id,
            error_message=message,
        )

    def case_failed(
        self,
        case_id: str,
        stage: str = "parse",
        *,
        message: str = "internal bug",
        dataset_id: str | None = None,
    ) -> RunEvent:
        return self._next(
            CaseFailedEvent, **self._case(case_id, dataset_id), stage=stage, error_message=message
        )

    def step(self, case_id: str, metric_id: str, *, dataset_id: str | None = None) -> RunEvent:
        return self._next(
            StepCompletedEvent,
            **self._case(case_id, dataset_id),
            metric_id=metric_id,
            workflow_id="wf",
            step_id="call-0:model_call",
            step_type="model_call",
        )

    def finished_case(
        self,
        case_id: str,
        *,
        pure: Sequence[tuple[str, float]] = (("test/exact", 1.0),),
        workflow: Sequence[tuple[str, float]] = (("test/judge", 1.0),),
        dataset_id: str | None = None,
    ) -> list[RunEvent]:
        """Every event of a case that went through all stages and was scored."""
        events = [
            self.generated(case_id, trace=True, conversation=True, dataset_id=dataset_id),
            self.reduced(case_id, dataset_id=dataset_id),
            self.parsed(case_id, dataset_id=dataset_id),
        ]
        events += [self.scored(case_id, m, v, dataset_id=dataset_id) for m, v in pure]
        for metric_id, value in workflow:
            events.append(self.step(case_id, metric_id, dataset_id=dataset_id))
            events.append(self.evaluated(case_id, metric_id, value, dataset_id=dataset_id))
            events.append(self.scored(case_id, metric_id, value, dataset_id=dataset_id))
        return events


def generation_payload(
    candidate_id: str, output: Any = "ok", trace: bool = False, conversation: bool = False
) -> dict[str, Any]:
    """A ``GenerationResult`` JSON, optionally with a one-step trace and a conversation."""
    payload: dict[str, Any] = {"candidate_id": candidate_id, "final_output": output}
    if trace:
        payload["trace"] = [{"step_name": "reason", "step_type": "tool"}]
    if conversation:
        payload["conversation"] = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": output},
        ]
    return payload


def reduction_payload(case_id: str, output: Any = "ok") -> dict[str, Any]:
    return {
        "candidate_id": f"{case_id}-reduced",
        "source_candidate_ids": [f"{case_id}-candidate-0"],
        "final_output": output,
    }


def parse_payload(value: Any = "ok", *, invalid: bool = False) -> dict[str, Any]:
    return {"value": value, "metadata": {"invalid": True} if invalid else {}}


def json_blob(payload: dict[str, Any]) -> bytes:
    """The bytes a writer stores for a payload: its canonical JSON (the content address)."""
    return canonical_json(payload).encode("utf-8")


def sample_run(snapshot: RunSnapshot) -> list[RunEvent]:
    """A finished run touching every projection: scores, failures, traces, steps."""
    ev = RunEvents(snapshot)
    events = [ev.run_started()]
    events += ev.finished_case("c1")
    events += [ev.generated("c2"), ev.reduced("c2"), ev.parse_failed("c2")]
    events += [ev.generation_failed("c3")]
    events += [ev.run_completed()]
    return events
