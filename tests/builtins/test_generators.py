"""``builtin/demo_generator``: a deterministic echo with a one-turn conversation."""

from __future__ import annotations

import inspect

import pytest
from themis.core.contexts import GenerateContext
from themis.core.models import Case, Message
from themis.core.prompts import PromptSpec
from themis_builtins import DemoGenerator

pytestmark = pytest.mark.anyio


def _ctx(**overrides: object) -> GenerateContext:
    fields: dict[str, object] = {
        "run_id": "run-1",
        "case_id": "case-1",
        "candidate_index": 2,
        "candidate_id": "case-1-candidate-2",
    }
    fields.update(overrides)
    return GenerateContext.model_validate(fields)


def test_generate_is_a_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(DemoGenerator().generate)


async def test_output_is_the_expected_output_when_present() -> None:
    case = Case(case_id="case-1", input="2+2", expected_output="4")
    result = await DemoGenerator().generate(case, _ctx())
    assert result.final_output == "4"


async def test_output_is_the_input_when_no_expected_output() -> None:
    case = Case(case_id="case-1", input={"question": "2+2"})
    result = await DemoGenerator().generate(case, _ctx())
    assert result.final_output == {"question": "2+2"}


async def test_falsy_expected_output_is_still_echoed() -> None:
    case = Case(case_id="case-1", input="q", expected_output=0)
    result = await DemoGenerator().generate(case, _ctx())
    assert result.final_output == 0


async def test_candidate_id_is_the_one_the_planner_assigned() -> None:
    case = Case(case_id="case-1", input="q")
    result = await DemoGenerator().generate(case, _ctx(candidate_id="planner-id-7"))
    assert result.candidate_id == "planner-id-7"


async def test_conversation_without_prompt_spec_is_user_then_assistant() -> None:
    case = Case(case_id="case-1", input="2+2", expected_output="4")
    result = await DemoGenerator().generate(case, _ctx())
    assert result.conversation == [
        Message(role="user", content="2+2"),
        Message(role="assistant", content="4"),
    ]


async def test_conversation_with_instructions_starts_with_a_system_message() -> None:
    spec = PromptSpec(instructions="Answer with a number.", suffix="Answer:")
    case = Case(case_id="case-1", input="2+2", expected_output="4")
    result = await DemoGenerator().generate(case, _ctx(prompt_spec=spec))
    assert result.conversation is not None
    assert [m.role for m in result.conversation] == ["system", "user", "assistant"]
    assert result.conversation[0].content == "Answer with a number."
    assert result.conversation[1].content == spec.render_input("2+2")
    assert result.conversation[2].content == "4"


async def test_prompt_spec_without_instructions_adds_no_system_message() -> None:
    spec = PromptSpec(prefix="Solve:")
    case = Case(case_id="case-1", input="2+2")
    result = await DemoGenerator().generate(case, _ctx(prompt_spec=spec))
    assert result.conversation is not None
    assert [m.role for m in result.conversation] == ["user", "assistant"]
    assert result.conversation[0].content == "Solve:\n\nInput:\n2+2"


async def test_token_usage_is_one_in_one_out_and_latency_one_ms() -> None:
    result = await DemoGenerator().generate(Case(case_id="case-1", input="q"), _ctx())
    assert result.token_usage == {"prompt_tokens": 1, "completion_tokens": 1}
    assert result.latency_ms == 1.0


async def test_generation_is_deterministic() -> None:
    case = Case(case_id="case-1", input="q", expected_output=["a", 1])
    first = await DemoGenerator().generate(case, _ctx(seed=1))
    second = await DemoGenerator().generate(case, _ctx(seed=99))
    assert first.compute_hash() == second.compute_hash()
