"""The ``themis.testing`` contract suites, run against every builtin component."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
from themis.core.contexts import ReduceContext, SelectContext
from themis.core.models import GenerationResult
from themis.core.protocols import CandidateReducer, CandidateSelector
from themis.testing import (
    FakeJudge,
    GeneratorContract,
    JudgeModelContract,
    MetricContract,
    ParserContract,
)
from themis.testing._components import ComponentContract, call_component
from themis_builtins import (
    BestOfN,
    Bleu,
    ChoiceAccuracy,
    ChoiceLetter,
    CodeText,
    DemoGenerator,
    DemoJudge,
    ExactMatch,
    JsonIdentity,
    LLMRubric,
    MajorityVote,
    MajorityVoteJudge,
    MathAnswer,
    MathEquivalence,
    PairwiseJudge,
    PanelOfJudges,
    TextParser,
    TokenF1,
)
from themis_builtins._component import BuiltinComponent

# generator and judge model


class TestDemoGeneratorContract(GeneratorContract):
    component_class = DemoGenerator
    expected_component_id = "builtin/demo_generator"


class TestDemoJudgeContract(JudgeModelContract):
    component_class = DemoJudge
    expected_component_id = "builtin/demo_judge"


# parsers


class TestJsonIdentityContract(ParserContract):
    component_class = JsonIdentity
    expected_component_id = "builtin/json_identity"


class TestTextParserContract(ParserContract):
    component_class = TextParser
    expected_component_id = "builtin/text"


class TestChoiceLetterContract(ParserContract):
    component_class = ChoiceLetter
    expected_component_id = "builtin/choice_letter"
    example_outputs = ("The answer is (B).", {"answer": "C"}, "no letter here: K", "")


class TestMathAnswerContract(ParserContract):
    component_class = MathAnswer
    expected_component_id = "builtin/math_answer"
    example_outputs = (r"so \boxed{\frac{1}{2}}", {"answer": "4"}, "")


class TestCodeTextContract(ParserContract):
    component_class = CodeText
    expected_component_id = "builtin/code_text"
    example_outputs = ("```python\nprint(1)\n```", {"solution": "x = 1"}, "")


# metrics


class TestExactMatchContract(MetricContract):
    component_class = ExactMatch
    expected_component_id = "builtin/exact_match"


class TestTokenF1Contract(MetricContract):
    component_class = TokenF1
    expected_component_id = "builtin/f1"
    example_pairs = (("the cat", "the cat sat"), ("", "x"), ("x", None))


class TestBleuContract(MetricContract):
    component_class = Bleu
    expected_component_id = "builtin/bleu"
    fingerprint_variants: ClassVar[Sequence[Mapping[str, Any]]] = (
        {"max_order": 2},
        {"tokenize": "none"},
        {"tokenize": "char"},
        {"lowercase": True},
        {"smooth": "floor"},
        {"smooth": "add-k"},
        {"smooth": "none"},
        {"smooth_value": 0.5},
    )
    example_pairs = (
        ("the cat sat on the mat", ["the cat sat on the mat", "a cat on a mat"]),
        ("", "x"),
        ("x", None),
    )


class TestChoiceAccuracyContract(MetricContract):
    component_class = ChoiceAccuracy
    expected_component_id = "builtin/choice_accuracy"
    example_pairs = (("B", "b"), ("A", {"choice": "B"}), ("A", {"answer": "A"}))


class TestMathEquivalenceContract(MetricContract):
    component_class = MathEquivalence
    expected_component_id = "builtin/math_equivalence"
    fingerprint_variants: ClassVar[Sequence[Mapping[str, Any]]] = ({"use_math_verify": False},)
    example_pairs = ((r"\frac{1}{2}", "0.5"), ("3", {"answer": "4"}), ("", "1"))


class TestMathEquivalenceFallbackContract(MetricContract):
    component_class = MathEquivalence
    component_params: ClassVar[Mapping[str, Any]] = {"use_math_verify": False}
    expected_component_id = "builtin/math_equivalence"
    fingerprint_variants: ClassVar[Sequence[Mapping[str, Any]]] = ({"use_math_verify": True},)


# the judge-workflow metrics: the workflow side of MetricContract


class TestLLMRubricContract(MetricContract):
    component_class = LLMRubric
    expected_component_id = "builtin/llm_rubric"


class TestPanelOfJudgesContract(MetricContract):
    component_class = PanelOfJudges
    expected_component_id = "builtin/panel_of_judges"


class TestMajorityVoteJudgeContract(MetricContract):
    component_class = MajorityVoteJudge
    expected_component_id = "builtin/majority_vote_judge"


class TestPairwiseJudgeContract(MetricContract):
    component_class = PairwiseJudge
    expected_component_id = "builtin/pairwise_judge"


# selector and reducer: no suite of their own in the kit, so the shared identity checks run
# here, together with a return-type check of their protocol method.


class TestBestOfNContract(ComponentContract):
    component_class = BestOfN
    expected_component_id = "builtin/best_of_n"
    protocol = CandidateSelector
    method_name = "select"

    def _candidates(self) -> list[GenerationResult]:
        return [
            GenerationResult(candidate_id=f"c-candidate-{i}", final_output=str(i)) for i in range(3)
        ]

    def _ctx(self) -> SelectContext:
        return SelectContext(
            run_id="contract-run",
            case_id="c",
            candidate_ids=[c.candidate_id for c in self._candidates()],
            judge_models=[FakeJudge("B"), DemoJudge()],
        )

    def _invoke_example(self, component: Any) -> Any:
        return component.select(self._candidates(), self._ctx())

    def test_select_returns_a_non_empty_list_of_candidates(self, component: Any) -> None:
        selected = call_component(component.select, self._candidates(), self._ctx())
        assert isinstance(selected, list) and selected
        assert all(isinstance(c, GenerationResult) for c in selected)


class TestMajorityVoteContract(ComponentContract):
    component_class = MajorityVote
    expected_component_id = "builtin/majority_vote"
    protocol = CandidateReducer
    method_name = "reduce"

    def _invoke_example(self, component: Any) -> Any:
        candidates = [GenerationResult(candidate_id="c-candidate-0", final_output="x")]
        ctx = ReduceContext(run_id="contract-run", case_id="c", candidate_ids=["c-candidate-0"])
        return component.reduce(candidates, ctx)

    def test_reduce_returns_a_reduced_candidate(self, component: Any) -> None:
        from themis.core.models import ReducedCandidate

        assert isinstance(self._invoke_example(component), ReducedCandidate)


BUILTINS = [
    DemoGenerator,
    DemoJudge,
    BestOfN,
    MajorityVote,
    JsonIdentity,
    TextParser,
    ChoiceLetter,
    MathAnswer,
    CodeText,
    ExactMatch,
    TokenF1,
    Bleu,
    ChoiceAccuracy,
    MathEquivalence,
]


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda cls: cls.__name__)
def test_every_builtin_is_version_one_zero_in_the_builtin_namespace(cls: type) -> None:
    component = cls()
    assert component.version == "1.0"
    assert component.component_id.startswith("builtin/")


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda cls: cls.__name__)
def test_fingerprint_is_the_hash_of_id_version_and_params(cls: type[BuiltinComponent]) -> None:
    from themis.core.base import content_hash

    component = cls()
    expected = content_hash(
        {"component_id": component.component_id, "version": "1.0", "params": component.params()}
    )
    assert component.fingerprint() == expected


def test_builtin_ids_are_unique() -> None:
    ids = [cls().component_id for cls in BUILTINS]
    assert len(ids) == len(set(ids)) == 14
