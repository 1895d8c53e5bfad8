"""The fakes of ``themis.testing``: scripted generator and judge, hook and span recorders."""

from __future__ import annotations

import inspect

import anyio
import pytest
import themis.core.protocols as protocols
from themis.core.contexts import GenerateContext
from themis.core.errors import NonRetryableError, RetryableError
from themis.core.events import RunCompletedEvent, RunStartedEvent
from themis.core.models import Case
from themis.testing import FakeGenerator, FakeJudge, RecordingSubscriber, RecordingTracer

pytestmark = pytest.mark.anyio


def _ctx(case_id: str = "case-1", index: int = 0) -> GenerateContext:
    return GenerateContext(
        run_id="r",
        case_id=case_id,
        candidate_index=index,
        candidate_id=f"{case_id}-candidate-{index}",
    )


# FakeGenerator


async def test_fake_generator_echoes_expected_output_without_a_script() -> None:
    result = await FakeGenerator().generate(
        Case(case_id="case-1", input="q", expected_output="a"), _ctx()
    )
    assert result.final_output == "a"
    assert result.candidate_id == "case-1-candidate-0"


async def test_fake_generator_replies_per_case_id_and_per_candidate_id() -> None:
    gen = FakeGenerator({"case-1": "one", "case-2-candidate-1": "two/1", "case-2": "two"})
    assert (
        await gen.generate(Case(case_id="case-1", input=""), _ctx("case-1"))
    ).final_output == "one"
    assert (
        await gen.generate(Case(case_id="case-2", input=""), _ctx("case-2", 1))
    ).final_output == "two/1"
    assert (
        await gen.generate(Case(case_id="case-2", input=""), _ctx("case-2", 0))
    ).final_output == "two"


async def test_fake_generator_hands_out_a_sequence_in_call_order() -> None:
    gen = FakeGenerator(["first", {"second": 2}])
    case = Case(case_id="case-1", input="")
    assert (await gen.generate(case, _ctx())).final_output == "first"
    assert (await gen.generate(case, _ctx(index=1))).final_output == {"second": 2}
    with pytest.raises(LookupError, match="ran out"):
        await gen.generate(case, _ctx(index=2))


async def test_fake_generator_without_a_scripted_case_says_which() -> None:
    with pytest.raises(LookupError, match="case-9"):
        await FakeGenerator({"case-1": "x"}).generate(
            Case(case_id="case-9", input=""), _ctx("case-9")
        )


async def test_fake_generator_fails_chosen_attempts_then_succeeds() -> None:
    gen = FakeGenerator(fail_on={"case-1": [1, 2]})
    case = Case(case_id="case-1", input="q")
    for _ in range(2):
        with pytest.raises(RetryableError, match="attempt"):
            await gen.generate(case, _ctx())
    assert (await gen.generate(case, _ctx())).final_output == "q"
    assert gen.calls == [("case-1", 0, 1), ("case-1", 0, 2), ("case-1", 0, 3)]
    assert gen.failures == [("case-1", 0, 1), ("case-1", 0, 2)]


async def test_fake_generator_counts_attempts_per_candidate() -> None:
    gen = FakeGenerator(fail_on={"case-1": [1]})
    case = Case(case_id="case-1", input="q")
    with pytest.raises(RetryableError):
        await gen.generate(case, _ctx(index=0))
    with pytest.raises(RetryableError):
        await gen.generate(case, _ctx(index=1))


async def test_fake_generator_fails_every_attempt_of_listed_ids() -> None:
    gen = FakeGenerator(fail_on=["case-1-candidate-1"])
    case = Case(case_id="case-1", input="q")
    assert (await gen.generate(case, _ctx(index=0))).final_output == "q"
    for _ in range(3):
        with pytest.raises(RetryableError):
            await gen.generate(case, _ctx(index=1))


async def test_fake_generator_raises_the_configured_error() -> None:
    gen = FakeGenerator(fail_on={"case-1": None}, error=NonRetryableError)
    with pytest.raises(NonRetryableError):
        await gen.generate(Case(case_id="case-1", input=""), _ctx())
    slow = FakeGenerator(fail_on=["case-1"], error=lambda m: RetryableError(m, retry_after_s=2.5))
    with pytest.raises(RetryableError) as info:
        await slow.generate(Case(case_id="case-1", input=""), _ctx())
    assert info.value.retry_after_s == 2.5


def test_fake_generator_rejects_a_bare_string_for_fail_on() -> None:
    with pytest.raises(TypeError, match=r"\['case-1'\]"):
        FakeGenerator(fail_on="case-1")


def test_fake_generator_fingerprint_follows_its_script() -> None:
    assert FakeGenerator(["a"]).fingerprint() == FakeGenerator(["a"]).fingerprint()
    assert FakeGenerator(["a"]).fingerprint() != FakeGenerator(["b"]).fingerprint()
    assert FakeGenerator().fingerprint() != FakeGenerator(fail_on=["x"]).fingerprint()


# FakeJudge


async def test_fake_judge_repeats_a_single_reply_and_records_prompts_and_seeds() -> None:
    judge = FakeJudge("PASS")
    replies = [await judge.judge("p1", seed=1), await judge.judge("p2")]
    assert [r.raw_response for r in replies] == ["PASS", "PASS"]
    assert judge.prompts == ["p1", "p2"]
    assert judge.seeds == [1, None]
    assert replies[0].effective_seed == 1


async def test_fake_judge_hands_out_a_sequence_then_says_it_ran_out() -> None:
    judge = FakeJudge(["A", "B"])
    assert [(await judge.judge("p")).raw_response for _ in range(2)] == ["A", "B"]
    with pytest.raises(LookupError, match="ran out"):
        await judge.judge("p")


async def test_fake_judge_replies_with_a_function_of_the_prompt() -> None:
    judge = FakeJudge(lambda prompt: "PASS" if "4" in prompt else "FAIL")
    assert (await judge.judge("2+2=4")).raw_response == "PASS"
    assert (await judge.judge("2+2=5")).raw_response == "FAIL"


async def test_fake_judge_fails_the_chosen_calls() -> None:
    judge = FakeJudge("ok", fail_on=[2])
    assert (await judge.judge("a")).raw_response == "ok"
    with pytest.raises(RetryableError, match="call 2"):
        await judge.judge("b")
    assert (await judge.judge("c")).raw_response == "ok"


# RecordingSubscriber

HOOKS = [
    name
    for name, member in inspect.getmembers(protocols.LifecycleSubscriber)
    if callable(member) and not name.startswith("_")
]


def test_recording_subscriber_implements_every_lifecycle_hook() -> None:
    assert len(HOOKS) == 15
    subscriber = RecordingSubscriber()
    assert all(callable(getattr(subscriber, hook, None)) for hook in HOOKS)
    for hook_protocol in (protocols.BeforeRun, protocols.AfterJudge, protocols.OnEvent):
        assert isinstance(subscriber, hook_protocol)


def test_recording_subscriber_records_hooks_and_event_class_names_in_order() -> None:
    subscriber = RecordingSubscriber()
    case = Case(case_id="case-1", input="")
    subscriber.on_event(RunStartedEvent(run_id="r"))
    subscriber.before_generate(case, _ctx())
    subscriber.after_score("score", "ctx")
    subscriber.on_event(RunCompletedEvent(run_id="r"))
    assert subscriber.calls == [
        "RunStartedEvent",
        "before_generate",
        "after_score",
        "RunCompletedEvent",
    ]
    assert subscriber.hooks == ["on_event", "before_generate", "after_score", "on_event"]
    assert subscriber.event_names == ["RunStartedEvent", "RunCompletedEvent"]
    assert subscriber.arguments[1] == ("before_generate", (case, _ctx()))


def test_recording_subscriber_records_every_hook_by_name() -> None:
    subscriber = RecordingSubscriber()
    for hook in HOOKS:
        if hook != "on_event":
            arity = len(inspect.signature(getattr(subscriber, hook)).parameters)
            getattr(subscriber, hook)(*range(arity))
    assert subscriber.calls == [h for h in HOOKS if h != "on_event"]


# RecordingTracer


def test_recording_tracer_records_names_attributes_and_statuses() -> None:
    tracer = RecordingTracer()
    run = tracer.start_span("run", {"run_id": "r"})
    gen = tracer.start_span("generation", {"case_id": "case-1"})
    tracer.end_span(gen, "ok")
    tracer.end_span(run, "error")
    assert tracer.span_names == ["run", "generation"]
    assert tracer.ended_spans == [("generation", "ok"), ("run", "error")]
    assert tracer.started[1].attributes == {"case_id": "case-1"}
    assert tracer.problems == []


def test_recording_tracer_nests_spans_through_the_current_span() -> None:
    tracer = RecordingTracer()
    run = tracer.start_span("run", {})
    first = tracer.start_span("generation", {})
    tracer.end_span(first, "ok")
    second = tracer.start_span("parse", {})
    tracer.end_span(second, "ok")
    tracer.end_span(run, "ok")
    assert first.parent is run and second.parent is run and run.parent is None
    assert tracer.children_of(run) == [first, second]


async def test_recording_tracer_keeps_sibling_tasks_apart() -> None:
    """Spans started in concurrent tasks are children of the run span, never of each other."""
    tracer = RecordingTracer()
    run = tracer.start_span("run", {})

    async def stage(name: str) -> None:
        span = tracer.start_span(name, {})
        await anyio.sleep(0.01)
        tracer.end_span(span, "ok")

    async with anyio.create_task_group() as tg:
        for name in ("generation", "reduction", "parse"):
            tg.start_soon(stage, name)
    tracer.end_span(run, "ok")
    assert {s.name for s in tracer.children_of(run)} == {"generation", "reduction", "parse"}


def test_recording_tracer_records_exceptions_on_their_span() -> None:
    tracer = RecordingTracer()
    span = tracer.start_span("score", {})
    error = ValueError("boom")
    tracer.record_exception(span, error)
    tracer.end_span(span, "error")
    assert span.exceptions == [error]


def test_recording_tracer_reports_misuse_instead_of_raising() -> None:
    tracer = RecordingTracer()
    span = tracer.start_span("run", {})
    tracer.end_span(span, "ok")
    tracer.end_span(span, "ok")
    tracer.end_span("noop", "ok")
    assert len(tracer.problems) == 2
    assert "twice" in tracer.problems[0]


def test_recording_tracer_is_a_tracing_provider() -> None:
    assert isinstance(RecordingTracer(), protocols.TracingProvider)


def test_the_test_kit_imports_no_plugin() -> None:
    """The core never imports a plugin, and themis.testing is part of the core."""
    import subprocess
    import sys

    script = (
        "import sys, themis.testing._components, themis.testing._fakes\n"
        "print(sorted(m for m in sys.modules if m.startswith(('themis_', 'sacrebleu', "
        "'math_verify'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
