"""The event loop of Themis's synchronous calls: a selector whose timeouts are not rounded up
to whole milliseconds, and that still watches its file descriptors."""

from __future__ import annotations

import asyncio
import selectors
import socket
import sys
import time
from typing import Any

import pytest
from themis.core._loop import loop_options
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.stores import InMemoryRunStore

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="the precise selector is for epoll, which is Linux-only"
)


@linux_only
def test_a_timeout_with_a_fraction_of_a_millisecond_is_waited_in_full() -> None:
    from themis.core._loop import PreciseEpollSelector

    with PreciseEpollSelector() as selector:
        for timeout in (0.0004, 0.0021, 0.0107):
            start = time.monotonic()
            assert selector.select(timeout) == []
            assert time.monotonic() - start >= timeout


@linux_only
def test_a_ready_descriptor_ends_the_wait_at_once() -> None:
    from themis.core._loop import PreciseEpollSelector

    left, right = socket.socketpair()
    with left, right, PreciseEpollSelector() as selector:
        selector.register(left, selectors.EVENT_READ, "left")
        right.send(b"x")
        start = time.monotonic()
        ready = selector.select(30.0)
        assert [(key.data, events) for key, events in ready] == [("left", selectors.EVENT_READ)]
        assert time.monotonic() - start < 30.0


def test_the_loop_option_is_given_only_where_it_applies() -> None:
    assert loop_options("trio") == {}
    if sys.platform == "linux":
        loop = loop_options("asyncio")["loop_factory"]()
        try:
            assert type(loop._selector).__name__ == "PreciseEpollSelector"  # type: ignore[attr-defined]
        finally:
            loop.close()


@linux_only
def test_a_run_called_synchronously_runs_on_the_precise_loop() -> None:
    seen: list[str] = []

    class Sleeper:
        component_id = "test/sleeper"
        version = "1"

        def fingerprint(self) -> str:
            return "sleeper"

        async def generate(self, case: Case, ctx: Any) -> GenerationResult:
            loop = asyncio.get_running_loop()
            seen.append(type(loop._selector).__name__)  # type: ignore[attr-defined]
            await asyncio.sleep(0.0015)
            return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)

    experiment = Experiment(
        generation=GenerationConfig(generator=Sleeper()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[
            Dataset(
                dataset_id="d",
                cases=[
                    Case(case_id=f"c{i}", input=str(i), expected_output=str(i)) for i in range(5)
                ],
            )
        ],
    )
    result = experiment.run(store=InMemoryRunStore())
    assert result.progress.completed_cases == 5
    assert seen == ["PreciseEpollSelector"] * 5
