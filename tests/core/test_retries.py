"""Retries of generator and judge calls under injected faults (API §5.7, §4.5)."""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import threading
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from themis.core._retry import RetryPolicy, classify, retry_after_of
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.errors import NonRetryableError, RetryableError
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult, Score
from themis.core.results import RunResult
from themis.core.stores import InMemoryRunStore
from themis_builtins import LLMRubric

# Small delays keep the retries fast; no jitter keeps the recorded delays exact.
FAST = dict(generation_retry_delay=0.001, judge_retry_delay=0.001, retry_jitter=0.0)


class HTTPError(Exception):
    """An error shaped like an HTTP client's: a response with a status and headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.response = SimpleNamespace(status_code=status, headers=headers or {})


class ScriptedGenerator:
    """An async generator that runs a per-case fault script, recording every attempt.

    ``script(case_id, attempt)`` returns None to answer, or an exception to raise, or the
    string ``"hang"`` to sleep far past any timeout.
    """

    component_id = "test/scripted"
    version = "1.0"

    def __init__(self, script: Any, *, provider_key: str | None = None) -> None:
        self.script = script
        if provider_key is not None:
            self.provider_key = provider_key
        self.attempts: dict[str, list[float]] = {}

    def fingerprint(self) -> str:
        return "scripted"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        times = self.attempts.setdefault(case.case_id, [])
        times.append(anyio.current_time())
        outcome = self.script(case.case_id, len(times))
        if outcome == "hang":
            await anyio.sleep(3600)
        if isinstance(outcome, BaseException):
            raise outcome
        return GenerationResult(candidate_id="ignored", final_output=case.expected_output)


class Exact:
    component_id = "test/exact"
    version = "1.0"
    metric_family = "pure"

    def fingerprint(self) -> str:
        return "exact"

    def score(self, parsed: Any, case: Case, ctx: Any) -> Score:
        return Score(metric_id=self.component_id, value=float(parsed.value == case.expected_output))


def _dataset(ids: list[str]) -> Dataset:
    return Dataset(
        dataset_id="faults", cases=[Case(case_id=i, input=i, expected_output=f"a-{i}") for i in ids]
    )


def _run(generator: Any, ids: list[str], **runtime: Any) -> tuple[RunResult, InMemoryRunStore]:
    store = InMemoryRunStore()
    experiment = Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=[Exact()]),
        datasets=[_dataset(ids)],
        runtime=RuntimeConfig(**{**FAST, **runtime}),
    )
    return experiment.run(store=store), store


def _by_id(result: RunResult) -> dict[str, Any]:
    return {case.case_id: case for case in result.cases}


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RetryableError("busy"), (True, "explicit")),
        (NonRetryableError("bad request"), (False, "explicit")),
        (TimeoutError(), (True, "timeout")),
        (ConnectionResetError(), (True, "connection")),
        (HTTPError(429), (True, "rate_limit")),
        (HTTPError(408), (True, "rate_limit")),
        (HTTPError(503), (True, "server_error")),
        (HTTPError(404), (False, None)),
        (FileNotFoundError(), (False, None)),
        (ValueError("nope"), (False, None)),
    ],
)
def test_classification_follows_the_table_of_section_5_7(
    error: Exception, expected: tuple[bool, str | None]
) -> None:
    assert classify(error) == expected


def test_an_explicit_retryable_flag_wins_over_the_status_code() -> None:
    error = HTTPError(503)
    error.retryable = False  # type: ignore[attr-defined]
    assert classify(error) == (False, "explicit")


def test_retry_after_is_read_from_the_attribute_then_the_headers() -> None:
    assert retry_after_of(RetryableError("x", retry_after_s=2.5)) == 2.5
    assert retry_after_of(HTTPError(429, {"Retry-After": "7"})) == 7.0
    on_exception = RuntimeError("x")
    on_exception.headers = {"retry-after": "3"}  # type: ignore[attr-defined]
    assert retry_after_of(on_exception) == 3.0
    assert retry_after_of(HTTPError(429)) is None


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    header = email.utils.format_datetime(when, usegmt=True)
    seconds = retry_after_of(HTTPError(429, {"Retry-After": header}))
    assert seconds is not None
    # The header has whole seconds; allow for that and a slow machine.
    assert 25.0 <= seconds <= 30.0
    past = email.utils.format_datetime(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), usegmt=True)
    assert retry_after_of(HTTPError(429, {"Retry-After": past})) == 0.0


def test_the_delay_grows_by_backoff_is_capped_then_jittered() -> None:
    policy = RetryPolicy(delay=1.0, backoff=3.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay_before(k) for k in (1, 2, 3, 4)] == [1.0, 3.0, 5.0, 5.0]
    jittered = RetryPolicy(delay=1.0, backoff=3.0, max_delay=5.0, jitter=0.2)
    draws = [jittered.delay_before(4) for _ in range(500)]
    assert all(4.0 <= d <= 6.0 for d in draws), "the jitter is applied after the cap"
    assert max(draws) - min(draws) > 1.0, "the jitter spreads the delays"


def test_retry_settings_are_clamped_as_documented() -> None:
    runtime = RuntimeConfig(
        generation_retry_attempts=0, generation_retry_delay=-1.0, generation_retry_backoff=0.5
    )
    assert runtime.generation_retry_attempts == 1
    assert runtime.generation_retry_delay == 0.0
    assert runtime.generation_retry_backoff == 1.0


# ------------------------------------------------------------------ runs with faults


def _flaky(seed: int, rate: float) -> Any:
    """A fault script failing ``rate`` of attempts, decided per (case, attempt) by ``seed``.

    The decision does not depend on the order the calls happen in, so the outcome of a
    concurrent run can be predicted exactly.
    """

    def fails(case_id: str, attempt: int) -> bool:
        return random.Random(f"{seed}:{case_id}:{attempt}").random() < rate

    def script(case_id: str, attempt: int) -> Exception | None:
        return RetryableError(f"flaky #{attempt}") if fails(case_id, attempt) else None

    return script, fails


def test_thirty_percent_retryable_failures_give_exact_outcomes_and_histories() -> None:
    ids = [f"c{i}" for i in range(300)]
    script, fails = _flaky(seed=20240611, rate=0.3)
    generator = ScriptedGenerator(script)
    result, store = _run(generator, ids, generation_retry_attempts=3, generation_retry_backoff=2.0)
    cases = _by_id(result)
    expected_failures = 0
    for case_id in ids:
        failed_attempts = 0
        while failed_attempts < 3 and fails(case_id, failed_attempts + 1):
            failed_attempts += 1
        case = cases[case_id]
        if failed_attempts == 3:
            expected_failures += 1
            event = next(
                e
                for e in store.query_events(result.run_id, event_types=["generation_failed"])
                if e.case_id == case_id
            )
            assert event.retryable is True
            assert [h["attempt"] for h in event.retry_history] == [1, 2, 3]
            assert [h["delay_s"] for h in event.retry_history] == [0.001, 0.002, 0.0]
            assert not case.generated_candidates
            continue
        (candidate,) = case.generated_candidates
        assert candidate.final_output == f"a-{case_id}", "a success was lost"
        history = (candidate.artifacts or {}).get("retry_history", [])
        assert len(history) == failed_attempts, case_id
        for k, entry in enumerate(history, start=1):
            assert entry == {
                "attempt": k,
                "error_type": "RetryableError",
                "error_message": f"flaky #{k}",
                "reason": "explicit",
                "delay_s": 0.001 * 2 ** (k - 1),
            }
        assert [s.value for s in case.scores] == [1.0]
        assert len(generator.attempts[case_id]) == failed_attempts + 1
    assert expected_failures > 0, "the seed should exercise exhausted retries too"
    assert result.progress.failed_cases == expected_failures
    assert result.progress.completed_cases == len(ids) - expected_failures


def test_a_429_with_retry_after_waits_at_least_the_advertised_time() -> None:
    ids = ["a", "b", "c"]

    def script(case_id: str, attempt: int) -> Exception | None:
        return HTTPError(429, {"Retry-After": "1"}) if attempt == 1 else None

    generator = ScriptedGenerator(script)
    result, _ = _run(generator, ids, generation_retry_delay=0.01)
    for case in result.cases:
        first, second = generator.attempts[case.case_id]
        assert second - first >= 1.0 - 1e-3, f"retried after {second - first:.3f}s"
        (entry,) = case.generated_candidates[0].artifacts["retry_history"]
        assert entry["reason"] == "rate_limit"
        assert entry["retry_after_s"] == 1.0
        assert entry["delay_s"] == 1.0
    assert result.status.value == "completed"


def test_a_retry_after_over_retry_after_max_is_not_retried() -> None:
    def script(case_id: str, attempt: int) -> Exception:
        return HTTPError(503, {"Retry-After": "600"})

    generator = ScriptedGenerator(script)
    result, store = _run(generator, ["slow"], retry_after_max=300.0)
    (event,) = store.query_events(result.run_id, event_types=["generation_failed"])
    assert event.retryable is False
    assert event.retry_history == [
        {
            "attempt": 1,
            "error_type": "HTTPError",
            "error_message": "HTTP 503",
            "reason": "server_error",
            "delay_s": 0.0,
            "retry_after_s": 600.0,
        }
    ]
    assert len(generator.attempts["slow"]) == 1


def test_a_call_hanging_past_generation_timeout_is_retried_as_a_timeout() -> None:
    def script(case_id: str, attempt: int) -> str | None:
        if case_id == "stuck":
            return "hang"
        return "hang" if attempt == 1 else None

    generator = ScriptedGenerator(script)
    started = time.monotonic()
    result, store = _run(
        generator, ["once", "stuck"], generation_timeout=0.2, generation_retry_attempts=2
    )
    # A hang guard only: without the timeout this would take an hour.
    assert time.monotonic() - started < 60
    cases = _by_id(result)
    (entry,) = cases["once"].generated_candidates[0].artifacts["retry_history"]
    assert (entry["error_type"], entry["reason"]) == ("TimeoutError", "timeout")
    (failed,) = store.query_events(result.run_id, event_types=["generation_failed"])
    assert failed.case_id == "stuck" and failed.retryable is True
    assert [h["reason"] for h in failed.retry_history] == ["timeout", "timeout"]


class HangingSyncGenerator:
    """A blocking sync generator whose first call per case hangs on an event."""

    component_id = "test/hanging_sync"
    version = "1.0"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def fingerprint(self) -> str:
        return "hanging-sync"

    def generate(self, case: Case, ctx: Any) -> GenerationResult:
        with self.lock:
            self.calls[case.case_id] += 1
            attempt = self.calls[case.case_id]
        if attempt == 1:
            self.release.wait(timeout=60)
        return GenerationResult(candidate_id="x", final_output=case.expected_output)


def test_a_blocking_generator_hanging_in_its_thread_still_times_out() -> None:
    generator = HangingSyncGenerator()
    try:
        result, _ = _run(generator, ["t1", "t2"], generation_timeout=0.2)
    finally:
        generator.release.set()  # let the abandoned threads finish
    for case in result.cases:
        (entry,) = case.generated_candidates[0].artifacts["retry_history"]
        assert entry["reason"] == "timeout"
    assert result.status.value == "completed"


def test_waiting_for_rate_limit_slots_does_not_count_against_the_timeout() -> None:
    # 120 rpm lets one call through every 0.5 s: the fourth call waits 1.5 s for its slot,
    # far longer than the 0.3 s timeout, yet none of them may time out.
    generator = ScriptedGenerator(lambda case_id, attempt: None, provider_key="slow-api")
    result, _ = _run(
        generator,
        ["r1", "r2", "r3", "r4"],
        generation_timeout=0.3,
        provider_rate_limits={"slow-api": 120},
    )
    assert result.status.value == "completed"
    for case in result.cases:
        assert "retry_history" not in (case.generated_candidates[0].artifacts or {})


def test_a_non_retryable_error_fails_the_candidate_at_the_first_attempt() -> None:
    def script(case_id: str, attempt: int) -> Exception | None:
        if case_id == "explicit":
            return NonRetryableError("the prompt is too long")
        if case_id == "plain":
            return ValueError("malformed request")
        return None

    generator = ScriptedGenerator(script)
    result, store = _run(generator, ["explicit", "plain", "fine"], generation_retry_attempts=5)
    failures = {
        e.case_id: e for e in store.query_events(result.run_id, event_types=["generation_failed"])
    }
    assert set(failures) == {"explicit", "plain"}
    assert failures["explicit"].retry_history[0]["reason"] == "explicit"
    assert failures["plain"].retry_history[0]["reason"] is None
    for case_id in ("explicit", "plain"):
        assert failures[case_id].retryable is False
        assert len(failures[case_id].retry_history) == 1
        assert len(generator.attempts[case_id]) == 1
    assert _by_id(result)["fine"].scores[0].value == 1.0
    assert result.status.value == "partial_failure"


def test_one_run_with_every_kind_of_fault_keeps_each_outcome_apart() -> None:
    """Flaky, throttled, hanging and broken providers in one run; the healthy cases are whole."""

    def script(case_id: str, attempt: int) -> Any:
        kind = case_id.split("-")[0]
        if kind == "flaky" and attempt <= 2:
            return ConnectionResetError("reset by peer")
        if kind == "throttled" and attempt == 1:
            return RetryableError("slow down", retry_after_s=0.3)
        if kind == "hang" and attempt == 1:
            return "hang"
        if kind == "broken":
            return NonRetryableError("invalid api key")
        return None

    kinds = ("ok", "flaky", "throttled", "hang", "broken")
    ids = [f"{kind}-{i}" for kind in kinds for i in range(8)]
    generator = ScriptedGenerator(script)
    result, store = _run(
        generator, ids, generation_timeout=0.5, generation_retry_attempts=3, max_concurrent_tasks=8
    )
    cases = _by_id(result)
    reasons = {
        "ok": [],
        "flaky": ["connection", "connection"],
        "throttled": ["explicit"],
        "hang": ["timeout"],
    }
    for case_id in ids:
        kind = case_id.split("-")[0]
        if kind == "broken":
            assert not cases[case_id].generated_candidates
            continue
        (candidate,) = cases[case_id].generated_candidates
        history = (candidate.artifacts or {}).get("retry_history", [])
        assert [h["reason"] for h in history] == reasons[kind], case_id
        assert cases[case_id].scores[0].value == 1.0
    for case_id in (i for i in ids if i.startswith("throttled")):
        first, second = generator.attempts[case_id][:2]
        assert second - first >= 0.3 - 1e-3
    broken = store.query_events(result.run_id, event_types=["generation_failed"])
    assert sorted(e.case_id for e in broken) == sorted(i for i in ids if i.startswith("broken"))
    completed = Counter(
        e.case_id for e in store.query_events(result.run_id, event_types=["generation_completed"])
    )
    assert set(completed.values()) == {1} and len(completed) == 32


# ------------------------------------------------------------------ judge calls


class FlakyJudge:
    """A judge failing its first ``failures`` calls with a retryable error, then passing."""

    version = "1.0"
    blocking = False

    def __init__(self, failures: int) -> None:
        self.component_id = "test/flaky_judge"
        self.failures = failures
        self.calls = 0

    def fingerprint(self) -> str:
        return f"flaky-judge-{self.failures}"

    async def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise HTTPError(503)
        return "PASS"


def _judged(judge: FlakyJudge, **runtime: Any) -> tuple[RunResult, InMemoryRunStore]:
    store = InMemoryRunStore()
    experiment = Experiment(
        generation=GenerationConfig(generator=ScriptedGenerator(lambda c, a: None)),
        evaluation=EvaluationConfig(metrics=[LLMRubric()], judge_models=[judge]),
        datasets=[_dataset(["j"])],
        runtime=RuntimeConfig(**{**FAST, **runtime}),
    )
    return experiment.run(store=store), store


def test_judge_calls_are_retried_and_their_history_kept_on_the_response() -> None:
    result, _ = _judged(FlakyJudge(failures=2), judge_retry_attempts=3)
    (execution,) = result.cases[0].evaluation_executions
    assert execution.status == "completed"
    (response,) = execution.judge_responses
    assert [h["reason"] for h in response.retry_history] == ["server_error", "server_error"]
    assert [h["delay_s"] for h in response.retry_history] == [0.001, 0.002]
    assert result.cases[0].scores[0].value == 1.0


def test_a_judge_call_out_of_attempts_records_its_history_on_step_failed() -> None:
    judge = FlakyJudge(failures=10)
    result, store = _judged(judge, judge_retry_attempts=2)
    assert judge.calls == 2
    (step,) = store.query_events(result.run_id, event_types=["step_failed"])
    assert [h["attempt"] for h in step.retry_history] == [1, 2]
    (execution,) = result.cases[0].evaluation_executions
    assert execution.status == "partial_failure"
    assert [len(f.retry_history) for f in execution.failures] == [2]


class HangingJudge:
    """A judge whose first call hangs far past any timeout; later calls pass."""

    component_id = "test/hanging_judge"
    version = "1.0"

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> str:
        return "hanging-judge"

    async def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.calls += 1
        if self.calls == 1:
            await anyio.sleep(3600)
        return "PASS"


def test_a_judge_call_hanging_past_judge_timeout_is_retried_as_a_timeout() -> None:
    store = InMemoryRunStore()
    judge = HangingJudge()
    experiment = Experiment(
        generation=GenerationConfig(generator=ScriptedGenerator(lambda c, a: None)),
        evaluation=EvaluationConfig(metrics=[LLMRubric()], judge_models=[judge]),
        datasets=[_dataset(["j"])],
        runtime=RuntimeConfig(**FAST, judge_timeout=0.2),
    )
    started = time.monotonic()
    result = experiment.run(store=store)
    assert time.monotonic() - started < 60  # a hang guard: the hang lasts an hour
    (execution,) = result.cases[0].evaluation_executions
    assert execution.status == "completed"
    (entry,) = execution.judge_responses[0].retry_history
    assert (entry["error_type"], entry["reason"]) == ("TimeoutError", "timeout")
    assert judge.calls == 2


class BlockingHangingJudge(HangingJudge):
    """A sync (so threaded) judge whose first call blocks its thread for seconds."""

    component_id = "test/blocking_hanging_judge"
    release = threading.Event()

    def judge(self, prompt: str, *, seed: int | None = None) -> str:  # type: ignore[override]
        self.calls += 1
        if self.calls == 1:
            self.release.wait(30)  # blocks its worker thread; released when the test ends
        return "PASS"


def test_a_blocking_judge_hanging_past_judge_timeout_is_abandoned_and_retried() -> None:
    judge = BlockingHangingJudge()
    experiment = Experiment(
        generation=GenerationConfig(generator=ScriptedGenerator(lambda c, a: None)),
        evaluation=EvaluationConfig(metrics=[LLMRubric()], judge_models=[judge]),
        datasets=[_dataset(["j"])],
        runtime=RuntimeConfig(**FAST, judge_timeout=0.2),
    )
    try:
        started = time.monotonic()
        result = experiment.run(store=InMemoryRunStore())
        waited = time.monotonic() - started
    finally:
        BlockingHangingJudge.release.set()
    assert waited < 20  # the hung thread (30 s) was not waited for
    (execution,) = result.cases[0].evaluation_executions
    assert execution.status == "completed"
    (entry,) = execution.judge_responses[0].retry_history
    assert entry["reason"] == "timeout"
