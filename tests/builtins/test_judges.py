"""``builtin/demo_judge``: pass for any non-empty prompt."""

from __future__ import annotations

import inspect

from themis.core.workflows import JudgeResponse
from themis_builtins import DemoJudge


def test_non_empty_prompt_passes() -> None:
    reply = DemoJudge().judge("Is 4 the answer to 2+2? Reply PASS or FAIL.")
    assert isinstance(reply, JudgeResponse)
    assert reply.raw_response == "pass"


def test_empty_prompt_fails() -> None:
    assert DemoJudge().judge("").raw_response == "fail"


def test_token_usage_is_one_in_one_out() -> None:
    assert DemoJudge().judge("x").token_usage == {"prompt_tokens": 1, "completion_tokens": 1}


def test_seed_is_echoed_as_the_effective_seed() -> None:
    assert DemoJudge().judge("x", seed=1234).effective_seed == 1234
    assert DemoJudge().judge("x").effective_seed is None


def test_judge_is_sync_and_runs_inline() -> None:
    """Cheap and I/O-free, so it opts out of the worker thread sync judges get by default."""
    judge = DemoJudge()
    assert not inspect.iscoroutinefunction(judge.judge)
    assert judge.blocking is False
