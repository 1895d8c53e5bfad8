"""Fakes for tests: a scripted generator and judge, and recorders for hooks and spans."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from themis.core.base import JSONValue, content_hash
from themis.core.contexts import GenerateContext
from themis.core.errors import RetryableError
from themis.core.models import Case, GenerationResult
from themis.core.workflows import JudgeResponse

__all__ = [
    "FakeGenerator",
    "FakeJudge",
    "RecordedSpan",
    "RecordingSubscriber",
    "RecordingTracer",
]

ErrorFactory = Callable[[str], BaseException]


def _fail_plan(
    fail_on: Collection[str] | Mapping[str, Collection[int] | None],
) -> dict[str, frozenset[int] | None]:
    if isinstance(fail_on, Mapping):
        return {key: None if v is None else frozenset(v) for key, v in fail_on.items()}
    if isinstance(fail_on, str):
        raise TypeError(
            f"fail_on={fail_on!r} is a single string; pass a collection of ids, e.g. [{fail_on!r}]"
        )
    return dict.fromkeys(fail_on)


def _plan_json(plan: Mapping[str, frozenset[int] | None]) -> dict[str, JSONValue]:
    return {key: None if v is None else sorted(v) for key, v in plan.items()}


class FakeGenerator:
    """An async generator that replays scripted outputs and fails where it is told to.

    ``outputs`` is a mapping (candidate id, else case id, to output), a sequence handed out
    in call order, or ``None`` to echo ``expected_output`` (else ``input``). ``fail_on`` names
    the case or candidate ids whose calls raise ``error(message)``: a collection fails every
    attempt, a mapping fails the listed 1-based attempts (``None``: every attempt). Attempts
    are counted per candidate. The default error is the retryable ``RetryableError``.
    """

    def __init__(
        self,
        outputs: Mapping[str, JSONValue] | Sequence[JSONValue] | None = None,
        *,
        fail_on: Collection[str] | Mapping[str, Collection[int] | None] = (),
        error: ErrorFactory = RetryableError,
        component_id: str = "fake/generator",
        version: str = "1.0",
        delay_s: float = 0.0,
    ) -> None:
        if isinstance(outputs, str):
            raise TypeError("outputs must be a mapping or a sequence of outputs, not one string")
        self.outputs = outputs
        self.fail_on = _fail_plan(fail_on)
        self.error = error
        self.component_id = component_id
        self.version = version
        self.delay_s = delay_s
        self.calls: list[tuple[str, int, int]] = []  # (case_id, candidate_index, attempt)
        self.failures: list[tuple[str, int, int]] = []
        self._attempts: dict[tuple[str, int], int] = {}
        self._next = 0

    def fingerprint(self) -> str:
        outputs: JSONValue
        if self.outputs is None:
            outputs = None
        elif isinstance(self.outputs, Mapping):
            outputs = dict(self.outputs)
        else:
            outputs = list(self.outputs)
        return content_hash(
            {
                "component_id": self.component_id,
                "version": self.version,
                "params": {"outputs": outputs, "fail_on": _plan_json(self.fail_on)},
            }
        )

    async def generate(self, case: Case, ctx: GenerateContext) -> GenerationResult:
        """The scripted output for this candidate, or the scripted failure."""
        key = (case.case_id, ctx.candidate_index)
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        self.calls.append((case.case_id, ctx.candidate_index, attempt))
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        if self._fails(case.case_id, ctx.candidate_id, attempt):
            self.failures.append((case.case_id, ctx.candidate_index, attempt))
            raise self.error(
                f"FakeGenerator: scripted failure for case {case.case_id!r}, "
                f"candidate {ctx.candidate_index}, attempt {attempt}"
            )
        candidate_id = ctx.candidate_id or f"{case.case_id}-candidate-{ctx.candidate_index}"
        return GenerationResult(
            candidate_id=candidate_id,
            final_output=self._output_for(case, candidate_id),
            token_usage={"prompt_tokens": 1, "completion_tokens": 1},
        )

    def _fails(self, case_id: str, candidate_id: str, attempt: int) -> bool:
        for key in (candidate_id, case_id):
            if key in self.fail_on:
                attempts = self.fail_on[key]
                return attempts is None or attempt in attempts
        return False

    def _output_for(self, case: Case, candidate_id: str) -> JSONValue:
        if self.outputs is None:
            return case.expected_output if case.expected_output is not None else case.input
        if isinstance(self.outputs, Mapping):
            for key in (candidate_id, case.case_id):
                if key in self.outputs:
                    return self.outputs[key]
            raise LookupError(
                f"FakeGenerator has no scripted output for candidate {candidate_id!r} or "
                f"case {case.case_id!r}; add one of them to `outputs`"
            )
        if self._next >= len(self.outputs):
            raise LookupError(
                f"FakeGenerator ran out of scripted outputs after {len(self.outputs)} calls; "
                "give one output per expected call"
            )
        output = self.outputs[self._next]
        self._next += 1
        return output


class FakeJudge:
    """An async judge model that replies from a script and fails on chosen calls.

    ``replies`` is one reply for every call, a sequence handed out in call order, or a
    function of the prompt. ``fail_on`` lists 1-based call numbers that raise
    ``error(message)`` instead (the default error is the retryable ``RetryableError``).
    """

    def __init__(
        self,
        replies: str | Sequence[str] | Callable[[str], str] = "pass",
        *,
        fail_on: Collection[int] = (),
        error: ErrorFactory = RetryableError,
        component_id: str = "fake/judge",
        version: str = "1.0",
    ) -> None:
        self.replies = replies
        self.fail_on = frozenset(fail_on)
        self.error = error
        self.component_id = component_id
        self.version = version
        self.prompts: list[str] = []
        self.seeds: list[int | None] = []
        self._replied = 0

    def fingerprint(self) -> str:
        replies: JSONValue
        if isinstance(self.replies, str):
            replies = self.replies
        elif callable(self.replies):
            replies = f"{self.replies.__module__}:{self.replies.__qualname__}"
        else:
            replies = list(self.replies)
        return content_hash(
            {
                "component_id": self.component_id,
                "version": self.version,
                "params": {"replies": replies, "fail_on": sorted(self.fail_on)},
            }
        )

    async def judge(self, prompt: str, *, seed: int | None = None) -> JudgeResponse:
        """The next scripted reply, or the scripted failure for this call number."""
        self.prompts.append(prompt)
        self.seeds.append(seed)
        call_number = len(self.prompts)
        if call_number in self.fail_on:
            raise self.error(f"FakeJudge: scripted failure on call {call_number}")
        return JudgeResponse(
            raw_response=self._reply_for(prompt),
            effective_seed=seed,
            token_usage={"prompt_tokens": 1, "completion_tokens": 1},
        )

    def _reply_for(self, prompt: str) -> str:
        if isinstance(self.replies, str):
            return self.replies
        if callable(self.replies):
            return self.replies(prompt)
        if self._replied >= len(self.replies):
            raise LookupError(
                f"FakeJudge ran out of scripted replies after {len(self.replies)}; "
                "give one reply per expected call"
            )
        reply = self.replies[self._replied]
        self._replied += 1
        return reply


class RecordingSubscriber:
    """Implements every lifecycle hook and records each call in order.

    ``calls`` holds the hook names in call order, with each ``on_event`` written as the
    event's class name (``"RunStartedEvent"``); ``hooks`` holds the raw hook names,
    ``events`` the events and ``arguments`` every ``(hook, args)`` pair.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.hooks: list[str] = []
        self.events: list[Any] = []
        self.arguments: list[tuple[str, tuple[Any, ...]]] = []

    @property
    def event_names(self) -> list[str]:
        return [type(event).__name__ for event in self.events]

    def _record(self, hook: str, *args: Any) -> None:
        self.hooks.append(hook)
        self.calls.append(hook)
        self.arguments.append((hook, args))

    def before_run(self, snapshot: Any) -> None:
        self._record("before_run", snapshot)

    def after_run(self, result: Any) -> None:
        self._record("after_run", result)

    def before_generate(self, case: Any, ctx: Any) -> None:
        self._record("before_generate", case, ctx)

    def after_generate(self, result: Any, ctx: Any) -> None:
        self._record("after_generate", result, ctx)

    def before_select(self, candidates: Any, ctx: Any) -> None:
        self._record("before_select", candidates, ctx)

    def after_select(self, selected: Any, ctx: Any) -> None:
        self._record("after_select", selected, ctx)

    def before_reduce(self, candidates: Any, ctx: Any) -> None:
        self._record("before_reduce", candidates, ctx)

    def after_reduce(self, reduced: Any, ctx: Any) -> None:
        self._record("after_reduce", reduced, ctx)

    def before_parse(self, candidate: Any, ctx: Any) -> None:
        self._record("before_parse", candidate, ctx)

    def after_parse(self, parsed: Any, ctx: Any) -> None:
        self._record("after_parse", parsed, ctx)

    def before_score(self, parsed: Any, ctx: Any) -> None:
        self._record("before_score", parsed, ctx)

    def after_score(self, score: Any, ctx: Any) -> None:
        self._record("after_score", score, ctx)

    def before_judge(self, subject: Any, ctx: Any) -> None:
        self._record("before_judge", subject, ctx)

    def after_judge(self, execution: Any, ctx: Any) -> None:
        self._record("after_judge", execution, ctx)

    def on_event(self, event: Any) -> None:
        self.hooks.append("on_event")
        self.calls.append(type(event).__name__)
        self.events.append(event)
        self.arguments.append(("on_event", (event,)))


@dataclass(eq=False)
class RecordedSpan:
    """One span a ``RecordingTracer`` started: its name, attributes, parent and outcome."""

    name: str
    attributes: dict[str, object]
    parent: RecordedSpan | None = None
    status: str | None = None
    exceptions: list[BaseException] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.status is not None


class RecordingTracer:
    """A ``TracingProvider`` that records every span; nesting follows a context variable.

    ``span_names`` lists the started spans in order, ``ended_spans`` the ``(name, status)``
    pairs in the order they ended, and ``problems`` any misuse (a span ended twice, or an
    object ended that this tracer never started).
    """

    def __init__(self) -> None:
        self.started: list[RecordedSpan] = []
        self.ended: list[RecordedSpan] = []
        self.problems: list[str] = []
        self._current: contextvars.ContextVar[RecordedSpan | None] = contextvars.ContextVar(
            f"recording_tracer_{id(self)}", default=None
        )

    @property
    def span_names(self) -> list[str]:
        return [span.name for span in self.started]

    @property
    def ended_spans(self) -> list[tuple[str, str]]:
        return [(span.name, span.status or "") for span in self.ended]

    def children_of(self, span: RecordedSpan) -> list[RecordedSpan]:
        return [s for s in self.started if s.parent is span]

    def start_span(self, name: str, attributes: dict[str, object]) -> RecordedSpan:
        span = RecordedSpan(name=name, attributes=dict(attributes), parent=self._current.get())
        self.started.append(span)
        self._current.set(span)
        return span

    def end_span(self, span: object, status: str) -> None:
        if not isinstance(span, RecordedSpan) or span not in self.started:
            self.problems.append(f"end_span({span!r}) for a span this tracer never started")
            return
        if span.ended:
            self.problems.append(f"span {span.name!r} ended twice ({span.status}, then {status})")
            return
        span.status = status
        self.ended.append(span)
        if self._current.get() is span:
            self._current.set(span.parent)

    def record_exception(self, span: object, exc: BaseException) -> None:
        if isinstance(span, RecordedSpan):
            span.exceptions.append(exc)
        else:
            self.problems.append(f"record_exception({span!r}) for an unknown span")
