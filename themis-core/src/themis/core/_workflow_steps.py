"""The step events and trace steps a judge workflow records for each call (API §2.9, §3.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from themis.core._construct import maker
from themis.core.events import RunEvent, StepCompletedEvent, StepFailedEvent, StepStartedEvent
from themis.core.logs import get_logger
from themis.core.models import TraceStep
from themis.core.workflows import WorkflowFailure

__all__ = ["EventSink", "Steps", "error_text"]

log = get_logger(__name__)

EventSink = Callable[[RunEvent], None]

# Every judge call writes several step events and trace steps (API §2.9, §3.4): built by
# makers specialised to their fields, as the pipeline builds its events.
_STEP_FIELDS = (
    "run_id",
    "workflow_id",
    "step_id",
    "step_type",
    "case_id",
    "dataset_id",
    "case_key",
    "metric_id",
)
_new_step_started = maker(StepStartedEvent, *_STEP_FIELDS)
_new_step_completed = maker(StepCompletedEvent, *_STEP_FIELDS, "details")
_new_trace_step = maker(
    TraceStep, "step_name", "step_type", "input", "output", "metadata", "timestamp"
)


class Steps:
    """The step events and trace steps of one judge call, or of the execution itself."""

    __slots__ = (
        "_case_id",
        "_case_key",
        "_dataset_id",
        "_fields",
        "_metric_id",
        "_run_id",
        "_sink",
        "_workflow_id",
        "call_id",
        "failures",
        "steps",
    )

    def __init__(self, sink: EventSink | None, fields: dict[str, Any], call_id: str | None) -> None:
        self._sink = sink
        self._fields = fields
        self._run_id = fields["run_id"]
        self._case_id = fields["case_id"]
        self._dataset_id = fields["dataset_id"]
        self._case_key = fields["case_key"]
        self._metric_id = fields["metric_id"]
        self._workflow_id = fields["workflow_id"]
        self.call_id = call_id
        self.steps: list[TraceStep] = []
        self.failures: list[WorkflowFailure] = []

    def _step_id(self, step_type: str) -> str:
        return step_type if self.call_id is None else f"{self.call_id}:{step_type}"

    def start(self, step_type: str) -> None:
        if self._sink is not None:
            self._sink(
                _new_step_started(
                    run_id=self._run_id,
                    workflow_id=self._workflow_id,
                    step_id=self._step_id(step_type),
                    step_type=step_type,
                    case_id=self._case_id,
                    dataset_id=self._dataset_id,
                    case_key=self._case_key,
                    metric_id=self._metric_id,
                )
            )

    def done(self, step_type: str, details: dict[str, Any]) -> None:
        step_id = self._step_id(step_type)
        if self._sink is not None:
            self._sink(
                _new_step_completed(
                    run_id=self._run_id,
                    workflow_id=self._workflow_id,
                    step_id=step_id,
                    step_type=step_type,
                    case_id=self._case_id,
                    dataset_id=self._dataset_id,
                    case_key=self._case_key,
                    metric_id=self._metric_id,
                    details=details,
                )
            )
        self.steps.append(self._trace_step(step_id, step_type, "completed", details))

    def fail(
        self, step_type: str, exc: BaseException, history: list[dict[str, Any]] | None = None
    ) -> None:
        step_id = self._step_id(step_type)
        message = error_text(exc)
        history = history or []
        log.info(
            "judge.step_failed",
            workflow_id=self._workflow_id,
            metric_id=self._metric_id,
            case_key=self._case_key,
            step_id=step_id,
            attempts=len(history) or 1,
            error=message,
        )
        if self._sink is not None:
            self._sink(
                StepFailedEvent.model_construct(
                    **self._fields,
                    step_id=step_id,
                    step_type=step_type,
                    error_message=message,
                    retry_history=history,
                )
            )
        self.steps.append(
            self._trace_step(step_id, step_type, "failed", {"error_message": message})
        )
        self.failures.append(
            WorkflowFailure(
                call_id=self.call_id,
                step_id=step_id,
                step_type=step_type,
                error_message=message,
                retry_history=history,
            )
        )

    def _trace_step(
        self, step_id: str, step_type: str, status: str, output: dict[str, Any]
    ) -> TraceStep:
        return _new_trace_step(
            step_name=step_id,
            step_type=step_type,
            input={} if self.call_id is None else {"call_id": self.call_id},
            output=output,
            metadata={"status": status},
            timestamp=None,
        )


def error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
