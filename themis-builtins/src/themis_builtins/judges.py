"""``builtin/demo_judge``: a deterministic judge model for demos and tests."""

from __future__ import annotations

from themis.core.workflows import JudgeResponse

from themis_builtins._component import BuiltinComponent

__all__ = ["DemoJudge"]


class DemoJudge(BuiltinComponent):
    """Replies ``"pass"`` to any non-empty prompt and ``"fail"`` to an empty one."""

    component_id = "builtin/demo_judge"
    # It does no I/O, so its sync method runs inline instead of in a worker thread.
    blocking = False

    def judge(self, prompt: str, *, seed: int | None = None) -> JudgeResponse:
        """``pass`` for a non-empty prompt, ``fail`` for an empty one."""
        verdict = "pass" if prompt else "fail"
        # Built from values that are valid by construction: no validation per call.
        return JudgeResponse.model_construct(
            raw_response=verdict,
            effective_seed=seed,
            token_usage={"prompt_tokens": 1, "completion_tokens": 1},
        )
