"""The ``builtin`` plugin: registers every builtin component by import path (nothing is
imported until a component is used)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from themis.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from themis.core.registry import ComponentRegistrar

__all__ = ["register_components"]

_PACKAGE = "themis_builtins"


@hookimpl
def register_components(registry: ComponentRegistrar) -> None:
    """Register the builtin generator, judge, selector, reducer, parsers and metrics."""
    registry.generator(
        "builtin/demo_generator",
        f"{_PACKAGE}.generators:DemoGenerator",
        summary="deterministic echo of the expected output (or the input)",
    )
    registry.judge_model(
        "builtin/demo_judge",
        f"{_PACKAGE}.judges:DemoJudge",
        summary='"pass" for a non-empty prompt, "fail" otherwise',
    )
    registry.selector(
        "builtin/best_of_n",
        f"{_PACKAGE}.selectors:BestOfN",
        summary="judged knockout tournament that keeps one candidate",
    )
    registry.reducer(
        "builtin/majority_vote",
        f"{_PACKAGE}.reducers:MajorityVote",
        summary="most common output across candidates; ties go to the first seen",
    )
    registry.parser(
        "builtin/json_identity",
        f"{_PACKAGE}.parsers:JsonIdentity",
        summary="the output unchanged",
    )
    registry.parser(
        "builtin/text",
        f"{_PACKAGE}.parsers:TextParser",
        summary="the output as text",
    )
    registry.parser(
        "builtin/choice_letter",
        f"{_PACKAGE}.parsers:ChoiceLetter",
        summary="the last standalone choice letter A-J",
    )
    registry.parser(
        "builtin/math_answer",
        f"{_PACKAGE}.parsers:MathAnswer",
        summary="the content of the last \\boxed{...}, nested braces included",
    )
    registry.parser(
        "builtin/code_text",
        f"{_PACKAGE}.parsers:CodeText",
        summary="the last python/c++ or untagged fenced code block",
    )
    registry.metric(
        "builtin/exact_match",
        f"{_PACKAGE}.metrics:ExactMatch",
        summary="1.0 when the parsed value equals the expected output",
    )
    registry.metric(
        "builtin/f1",
        f"{_PACKAGE}.metrics:TokenF1",
        summary="token-level F1 against the expected output",
    )
    registry.metric(
        "builtin/bleu",
        f"{_PACKAGE}.bleu:Bleu",
        summary="sentence and corpus BLEU, sacrebleu-conformant",
    )
    registry.metric(
        "builtin/choice_accuracy",
        f"{_PACKAGE}.metrics:ChoiceAccuracy",
        summary="multiple-choice accuracy, case-insensitive",
    )
    registry.metric(
        "builtin/math_equivalence",
        f"{_PACKAGE}.math_equivalence:MathEquivalence",
        summary="mathematical equivalence (math_verify when installed)",
    )
    registry.metric(
        "builtin/llm_rubric",
        f"{_PACKAGE}.judge_metrics:LLMRubric",
        summary="rubric verdict (PASS/FAIL) from the first judge model",
    )
    registry.metric(
        "builtin/panel_of_judges",
        f"{_PACKAGE}.judge_metrics:PanelOfJudges",
        summary="mean rubric verdict of every judge model, with agreement",
    )
    registry.metric(
        "builtin/majority_vote_judge",
        f"{_PACKAGE}.judge_metrics:MajorityVoteJudge",
        summary="the most common rubric verdict among the judge models",
    )
    registry.metric(
        "builtin/pairwise_judge",
        f"{_PACKAGE}.judge_metrics:PairwiseJudge",
        summary="judges prefer candidate A, B or TIE (1.0 / 0.0 / 0.5)",
    )
