"""The contract suites of ``themis.testing`` catch broken components and pass sound ones."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from themis.core.base import content_hash
from themis.core.contexts import GenerateContext
from themis.core.models import Case, GenerationResult, ParsedOutput, Score
from themis.testing import GeneratorContract, JudgeModelContract, MetricContract, ParserContract
from themis.testing._components import call_component


class EchoGenerator:
    """A sound async generator with one parameter."""

    component_id = "test/echo"
    version = "1.0"

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def fingerprint(self) -> str:
        return content_hash({"prefix": self.prefix})

    async def generate(self, case: Case, ctx: GenerateContext) -> GenerationResult:
        return GenerationResult(
            candidate_id=ctx.candidate_id, final_output=f"{self.prefix}{case.input}"
        )


class ForgetfulGenerator(EchoGenerator):
    """Its fingerprint ignores ``prefix``."""

    def fingerprint(self) -> str:
        return "constant"


class UnstableGenerator(EchoGenerator):
    """Its fingerprint depends on the instance, not the parameters."""

    def fingerprint(self) -> str:
        return str(id(self))


class DictGenerator(EchoGenerator):
    async def generate(self, case: Case, ctx: GenerateContext) -> Any:  # type: ignore[override]
        return {"candidate_id": ctx.candidate_id, "final_output": case.input}


class HiddenAsyncGenerator(EchoGenerator):
    """A plain def that returns a coroutine: the runtime would never await it."""

    def generate(self, case: Case, ctx: GenerateContext) -> Any:  # type: ignore[override]
        return EchoGenerator.generate(self, case, ctx)


class NamelessGenerator(EchoGenerator):
    component_id = ""


class StrictContextGenerator(EchoGenerator):
    """Breaks on the full context (a prompt spec), which real runs pass."""

    async def generate(self, case: Case, ctx: GenerateContext) -> GenerationResult:
        if ctx.prompt_spec is not None:
            raise KeyError("prompt_spec")
        return await super().generate(case, ctx)


def _suite(cls: type) -> GeneratorContract:
    class Suite(GeneratorContract):
        component_class = cls
        expected_component_id = "test/echo"
        fingerprint_variants: ClassVar[list[dict[str, Any]]] = [{"prefix": ">"}]

    return Suite()


def test_sound_generator_passes_every_generator_check() -> None:
    suite = _suite(EchoGenerator)
    component = suite.make_component()
    for name in dir(suite):
        if name.startswith("test_"):
            method = getattr(suite, name)
            if "component" in method.__code__.co_varnames[: method.__code__.co_argcount]:
                method(component)
            else:
                method()


def test_fingerprint_that_ignores_a_parameter_fails() -> None:
    suite = _suite(ForgetfulGenerator)
    with pytest.raises(AssertionError, match="prefix"):
        suite.test_fingerprint_changes_with_each_parameter_variant()


def test_fingerprint_that_differs_between_instances_fails() -> None:
    suite = _suite(UnstableGenerator)
    with pytest.raises(AssertionError, match="different fingerprints"):
        suite.test_fingerprint_is_stable_across_instances(suite.make_component())


def test_wrong_return_type_fails() -> None:
    suite = _suite(DictGenerator)
    with pytest.raises(AssertionError, match="GenerationResult"):
        suite.test_generate_returns_a_generation_result(suite.make_component())


def test_sync_method_returning_a_coroutine_fails() -> None:
    suite = _suite(HiddenAsyncGenerator)
    with pytest.raises(pytest.fail.Exception, match="async def"):
        suite.test_method_is_sync_or_a_coroutine_function(suite.make_component())


def test_empty_component_id_fails() -> None:
    suite = _suite(NamelessGenerator)
    with pytest.raises(AssertionError, match="component_id"):
        suite.test_has_identity_triple(suite.make_component())


def test_component_that_rejects_a_full_context_fails() -> None:
    suite = _suite(StrictContextGenerator)
    suite.test_generate_returns_a_generation_result(suite.make_component())
    with pytest.raises(KeyError):
        suite.test_generate_accepts_every_example_context(suite.make_component())


def test_unexpected_component_id_fails() -> None:
    class Suite(GeneratorContract):
        component_class = EchoGenerator
        expected_component_id = "test/other"

    with pytest.raises(AssertionError):
        Suite().test_component_id_is_the_expected_one(EchoGenerator())


def test_fixture_only_suite_skips_the_two_instance_check_with_a_reason() -> None:
    class Suite(GeneratorContract):
        pass

    with pytest.raises(pytest.skip.Exception, match="second instance"):
        Suite().test_fingerprint_is_stable_across_instances(EchoGenerator())


def test_make_component_passes_variant_params_over_the_defaults() -> None:
    class Suite(GeneratorContract):
        component_class = EchoGenerator
        component_params: ClassVar[dict[str, Any]] = {"prefix": "a"}

    assert Suite().make_component().prefix == "a"
    assert Suite().make_component(prefix="b").prefix == "b"


def test_call_component_awaits_coroutine_functions() -> None:
    case = Case(case_id="c", input="x")
    ctx = GenerateContext(run_id="r", case_id="c", candidate_id="c-candidate-0")
    result = call_component(EchoGenerator(">").generate, case, ctx)
    assert isinstance(result, GenerationResult) and result.final_output == ">x"


class WrongIdMetric:
    component_id = "test/metric"
    version = "1.0"
    metric_family = "pure"

    def fingerprint(self) -> str:
        return "fp"

    def score(self, parsed: ParsedOutput, case: Case, ctx: Any) -> Score:
        return Score(metric_id="test/other", value=1.0)


class BadFamilyMetric(WrongIdMetric):
    metric_family = "fuzzy"


def test_score_under_another_metric_id_fails() -> None:
    class Suite(MetricContract):
        component_class = WrongIdMetric

    with pytest.raises(AssertionError):
        Suite().test_score_metric_id_is_the_component_id(WrongIdMetric())


def test_unknown_metric_family_fails() -> None:
    class Suite(MetricContract):
        component_class = BadFamilyMetric

    with pytest.raises(AssertionError, match="fuzzy"):
        Suite().test_metric_family_is_valid_when_declared(BadFamilyMetric())


class NumberJudge:
    component_id = "test/judge"
    version = "1.0"

    def fingerprint(self) -> str:
        return "fp"

    def judge(self, prompt: str, *, seed: int | None = None) -> Any:
        return 1


def test_judge_returning_a_number_fails() -> None:
    class Suite(JudgeModelContract):
        component_class = NumberJudge

    with pytest.raises(AssertionError, match="JudgeResponse or str"):
        Suite().test_judge_returns_a_response_or_a_string(NumberJudge())


class StringParser:
    component_id = "test/parser"
    version = "1.0"

    def fingerprint(self) -> str:
        return "fp"

    def parse(self, candidate: Any, ctx: Any) -> Any:
        return str(candidate.final_output)


def test_parser_returning_a_string_fails() -> None:
    class Suite(ParserContract):
        component_class = StringParser

    with pytest.raises(AssertionError, match="ParsedOutput"):
        Suite().test_parse_returns_a_parsed_output_for_every_example(StringParser())


def test_object_without_the_protocol_method_fails_the_protocol_check() -> None:
    class Suite(ParserContract):
        component_class = NumberJudge

    with pytest.raises(AssertionError, match="parse"):
        Suite().test_satisfies_its_protocol(NumberJudge())
