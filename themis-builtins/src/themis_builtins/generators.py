"""``builtin/demo_generator``: a deterministic echo generator for demos and tests."""

from __future__ import annotations

from themis.core.contexts import GenerateContext
from themis.core.models import Case, GenerationResult, Message

from themis_builtins._component import BuiltinComponent

__all__ = ["DemoGenerator"]


class DemoGenerator(BuiltinComponent):
    """Echoes the expected output (or, without one, the input) as a one-turn conversation."""

    component_id = "builtin/demo_generator"

    async def generate(self, case: Case, ctx: GenerateContext) -> GenerationResult:
        """The candidate the planner named, answering with ``expected_output`` or ``input``."""
        output = case.expected_output if case.expected_output is not None else case.input
        spec = ctx.prompt_spec
        conversation: list[Message] = []
        if spec is not None and spec.instructions:
            conversation.append(Message(role="system", content=spec.instructions))
        prompt = spec.render_input(case.input) if spec is not None else case.input
        conversation.append(Message(role="user", content=prompt))
        conversation.append(Message(role="assistant", content=output))
        # Called outside a run (no planner id), fall back to the planner's naming rule.
        candidate_id = ctx.candidate_id or f"{case.case_id}-candidate-{ctx.candidate_index}"
        return GenerationResult(
            candidate_id=candidate_id,
            final_output=output,
            conversation=conversation,
            token_usage={"prompt_tokens": 1, "completion_tokens": 1},
            latency_ms=1.0,
        )
