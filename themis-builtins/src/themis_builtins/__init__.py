"""The builtin Themis components (namespace ``builtin/``), registered by ``plugin``.

Component classes resolve lazily, so loading the plugin (which imports this package)
imports no component module until a component is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from themis_builtins import plugin
    from themis_builtins.bleu import Bleu
    from themis_builtins.generators import DemoGenerator
    from themis_builtins.judge_metrics import (
        LLMRubric,
        MajorityVoteJudge,
        PairwiseJudge,
        PanelOfJudges,
    )
    from themis_builtins.judges import DemoJudge
    from themis_builtins.math_equivalence import MathEquivalence
    from themis_builtins.metrics import ChoiceAccuracy, ExactMatch, TokenF1
    from themis_builtins.parsers import (
        ChoiceLetter,
        CodeText,
        JsonIdentity,
        MathAnswer,
        TextParser,
    )
    from themis_builtins.reducers import MajorityVote
    from themis_builtins.selectors import BestOfN

__all__ = [
    "BestOfN",
    "Bleu",
    "ChoiceAccuracy",
    "ChoiceLetter",
    "CodeText",
    "DemoGenerator",
    "DemoJudge",
    "ExactMatch",
    "JsonIdentity",
    "LLMRubric",
    "MajorityVote",
    "MajorityVoteJudge",
    "MathAnswer",
    "MathEquivalence",
    "PairwiseJudge",
    "PanelOfJudges",
    "TextParser",
    "TokenF1",
    "plugin",
]

_HOMES = {
    "BestOfN": "selectors",
    "Bleu": "bleu",
    "ChoiceAccuracy": "metrics",
    "ChoiceLetter": "parsers",
    "CodeText": "parsers",
    "DemoGenerator": "generators",
    "DemoJudge": "judges",
    "ExactMatch": "metrics",
    "JsonIdentity": "parsers",
    "LLMRubric": "judge_metrics",
    "MajorityVote": "reducers",
    "MajorityVoteJudge": "judge_metrics",
    "MathAnswer": "parsers",
    "MathEquivalence": "math_equivalence",
    "PairwiseJudge": "judge_metrics",
    "PanelOfJudges": "judge_metrics",
    "TextParser": "parsers",
    "TokenF1": "metrics",
}


def __getattr__(name: str) -> Any:
    if name == "plugin":
        value: Any = importlib.import_module("themis_builtins.plugin")
    elif name in _HOMES:
        value = getattr(importlib.import_module(f"themis_builtins.{_HOMES[name]}"), name)
    else:
        raise AttributeError(f"module 'themis_builtins' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
