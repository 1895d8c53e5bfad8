"""Contract suites for component authors: subclass one in a test module and pytest runs it.

Give the suite a component in one of three ways (the first one found wins):

- set ``component_class`` (and ``component_params`` for its default arguments);
- override ``make_component(**params)`` to build a fresh instance;
- override the ``component`` fixture (the checks that need two instances are then skipped
  with a reason, since a fixture yields only one).

Set ``fingerprint_variants`` to parameter sets that must each change the fingerprint, and
``expected_component_id`` to pin the id. Override the ``make_*`` example builders to feed
the component inputs it understands.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import anyio
import pytest

from themis.core.base import canonical_json
from themis.core.case_refs import case_key_for
from themis.core.contexts import EvalScoreContext, GenerateContext, ParseContext, ScoreContext
from themis.core.models import (
    Case,
    GenerationResult,
    ParsedOutput,
    ReducedCandidate,
    Score,
    ScoreError,
    TraceStep,
    WorkflowTrace,
)
from themis.core.prompts import PromptSpec
from themis.core.protocols import EvaluationWorkflow, Generator, JudgeModel, Parser, PureMetric
from themis.core.snapshot import ComponentRef
from themis.core.subjects import CandidateSetSubject, TraceSubject
from themis.core.workflows import JudgeCall, JudgeResponse

__all__ = [
    "ComponentContract",
    "GeneratorContract",
    "JudgeModelContract",
    "MetricContract",
    "ParserContract",
    "call_component",
]

CONTRACT_RUN_ID = "contract-run"
CONTRACT_DATASET_ID = "contract"
CONTRACT_CASE_ID = "contract-case-1"
METRIC_FAMILIES = ("pure", "llm", "selection", "trace")


def call_component(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a sync or async component method the way the runtime does and return its result."""
    if inspect.iscoroutinefunction(method):
        return anyio.run(functools.partial(method, *args, **kwargs))
    return method(*args, **kwargs)


def _fingerprint_of(component: Any) -> Any:
    fingerprint = component.fingerprint
    return fingerprint() if callable(fingerprint) else fingerprint


class ComponentContract:
    """Checks every component shares: the identity triple and an honest fingerprint."""

    #: The class to instantiate; ``make_component`` calls it with ``component_params``.
    component_class: ClassVar[Callable[..., Any] | None] = None
    #: Default keyword arguments for ``component_class``.
    component_params: ClassVar[Mapping[str, Any]] = {}
    #: Parameter sets, each of which must give a fingerprint different from the default's.
    fingerprint_variants: ClassVar[Sequence[Mapping[str, Any]]] = ()
    #: The ``component_id`` the component must report; ``None`` accepts any non-empty id.
    expected_component_id: ClassVar[str | None] = None
    #: The runtime-checkable protocol the component must satisfy.
    protocol: ClassVar[type | None] = None
    #: The protocol method the suite calls (``generate``, ``parse``, ...).
    method_name: ClassVar[str] = ""

    def make_component(self, **params: Any) -> Any:
        """A fresh component; ``params`` override ``component_params``."""
        if self.component_class is None:
            raise NotImplementedError(
                f"{type(self).__name__}: set component_class, or override "
                "make_component(**params) or the `component` fixture"
            )
        return self.component_class(**{**self.component_params, **params})

    @pytest.fixture
    def component(self) -> Any:
        """The component under test (override this fixture or ``make_component``)."""
        return self.make_component()

    def _second_instance(self) -> Any:
        try:
            return self.make_component()
        except NotImplementedError as exc:
            pytest.skip(f"needs a second instance, which a `component` fixture cannot give: {exc}")

    def test_has_identity_triple(self, component: Any) -> None:
        """``component_id`` and ``version`` are non-empty strings; ``fingerprint`` is a str."""
        for name in ("component_id", "version"):
            value = getattr(component, name, None)
            assert isinstance(value, str) and value, (
                f"{type(component).__name__}.{name} must be a non-empty str, got {value!r}"
            )
        assert hasattr(component, "fingerprint"), (
            f"{type(component).__name__} has no fingerprint(); add one that hashes every "
            "behaviour-changing constructor parameter (themis.core.base.content_hash)"
        )
        fingerprint = _fingerprint_of(component)
        assert isinstance(fingerprint, str) and fingerprint, (
            f"{component.component_id}: fingerprint() must return a non-empty str, "
            f"got {fingerprint!r}"
        )

    def test_component_id_is_the_expected_one(self, component: Any) -> None:
        if self.expected_component_id is None:
            pytest.skip("expected_component_id is not set on this contract subclass")
        assert component.component_id == self.expected_component_id

    def test_canonical_form_is_the_identity_triple(self, component: Any) -> None:
        """A component hashes into a run's identity as exactly its id, version and fingerprint."""
        expected = {
            "component_id": component.component_id,
            "fingerprint": _fingerprint_of(component),
            "version": component.version,
        }
        assert json.loads(canonical_json(component)) == expected

    def test_fingerprint_is_stable_across_instances(self, component: Any) -> None:
        other = self._second_instance()
        assert _fingerprint_of(other) == _fingerprint_of(component), (
            f"{component.component_id}: two instances built the same way have different "
            "fingerprints; hash only the parameters, never ids, times or random values"
        )

    def test_fingerprint_changes_with_each_parameter_variant(self) -> None:
        if not self.fingerprint_variants:
            pytest.skip("fingerprint_variants is empty: no parameter variant to check")
        baseline = _fingerprint_of(self.make_component())
        unchanged = [
            dict(params)
            for params in self.fingerprint_variants
            if _fingerprint_of(self.make_component(**params)) == baseline
        ]
        assert not unchanged, (
            f"these parameters do not change the fingerprint: {unchanged}; "
            "fingerprint() must cover every parameter that changes behaviour"
        )

    def test_satisfies_its_protocol(self, component: Any) -> None:
        if self.protocol is None:
            pytest.skip("no protocol declared on this contract subclass")
        assert isinstance(component, self.protocol), (
            f"{type(component).__name__} does not satisfy {self.protocol.__name__}: "
            f"it needs component_id, version, fingerprint() and {self.method_name}()"
        )

    def test_method_is_sync_or_a_coroutine_function(self, component: Any) -> None:
        """The runtime awaits only coroutine functions; a sync method must not return one."""
        if not self.method_name or not hasattr(component, self.method_name):
            pytest.skip(f"the component has no {self.method_name or 'protocol'} method")
        method = getattr(component, self.method_name)
        if inspect.iscoroutinefunction(method):
            return
        result = self._invoke_example(component)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # avoid a "never awaited" warning for the coroutine we refuse
            pytest.fail(
                f"{component.component_id}.{self.method_name} returns an awaitable from a "
                "plain def; declare it `async def` so the runtime awaits it"
            )

    def test_optional_flags_are_booleans(self, component: Any) -> None:
        for flag in ("blocking", "requires_judges"):
            if hasattr(component, flag):
                value = getattr(component, flag)
                assert isinstance(value, bool), (
                    f"{component.component_id}.{flag} must be a bool, got {value!r}"
                )

    def _invoke_example(self, component: Any) -> Any:
        """Call the protocol method once, synchronously, without awaiting (for the check above)."""
        raise NotImplementedError


class GeneratorContract(ComponentContract):
    """The ``Generator`` protocol: ``generate(case, ctx)`` returns a ``GenerationResult``."""

    protocol = Generator
    method_name = "generate"

    def make_case(self) -> Case:
        """The case every check generates for."""
        return Case(case_id=CONTRACT_CASE_ID, input="What is 2 + 2?", expected_output="4")

    def make_contexts(self, case: Case) -> list[GenerateContext]:
        """A minimal context and a full one (dataset, seed, prompt spec, index, metadata)."""
        minimal = GenerateContext(
            run_id=CONTRACT_RUN_ID,
            case_id=case.case_id,
            candidate_id=f"{case.case_id}-candidate-0",
        )
        full = GenerateContext(
            run_id=CONTRACT_RUN_ID,
            dataset_id=CONTRACT_DATASET_ID,
            case_key=case_key_for(CONTRACT_DATASET_ID, case.case_id),
            case_id=case.case_id,
            seed=7,
            prompt_spec=PromptSpec(instructions="Answer briefly.", suffix="Answer:"),
            candidate_index=1,
            candidate_id=f"{case.case_id}-candidate-1",
            metadata={"purpose": "contract"},
        )
        return [minimal, full]

    def _invoke_example(self, component: Any) -> Any:
        case = self.make_case()
        return component.generate(case, self.make_contexts(case)[0])

    def test_generate_returns_a_generation_result(self, component: Any) -> None:
        case = self.make_case()
        result = call_component(component.generate, case, self.make_contexts(case)[0])
        assert isinstance(result, GenerationResult), (
            f"{component.component_id}.generate returned {type(result).__name__}, "
            "expected themis.core.models.GenerationResult"
        )
        assert isinstance(result.candidate_id, str) and result.candidate_id

    def test_generate_accepts_every_example_context(self, component: Any) -> None:
        case = self.make_case()
        for ctx in self.make_contexts(case):
            result = call_component(component.generate, case, ctx)
            assert isinstance(result, GenerationResult), f"context {ctx!r} gave {result!r}"

    def test_generation_result_is_json_hashable(self, component: Any) -> None:
        """Results are stored as events and hashed, so they must be canonical JSON."""
        case = self.make_case()
        result = call_component(component.generate, case, self.make_contexts(case)[-1])
        assert isinstance(result.compute_hash(), str)


class ParserContract(ComponentContract):
    """The ``Parser`` protocol: ``parse(candidate, ctx)`` returns a ``ParsedOutput``."""

    protocol = Parser
    method_name = "parse"
    #: Reduced outputs the parser must accept (override with your own).
    example_outputs: ClassVar[Sequence[Any]] = (
        "The answer is 4.",
        {"answer": "4"},
        "",
    )

    def make_candidate(self, output: Any) -> ReducedCandidate:
        return ReducedCandidate(
            candidate_id=f"{CONTRACT_CASE_ID}-reduced",
            source_candidate_ids=[f"{CONTRACT_CASE_ID}-candidate-0"],
            final_output=output,
        )

    def make_contexts(self) -> list[ParseContext]:
        minimal = ParseContext(
            run_id=CONTRACT_RUN_ID,
            case_id=CONTRACT_CASE_ID,
            candidate_id=f"{CONTRACT_CASE_ID}-reduced",
        )
        full = minimal.model_copy(
            update={
                "dataset_id": CONTRACT_DATASET_ID,
                "case_key": case_key_for(CONTRACT_DATASET_ID, CONTRACT_CASE_ID),
                "metadata": {"purpose": "contract"},
            }
        )
        return [minimal, full]

    def _invoke_example(self, component: Any) -> Any:
        return component.parse(
            self.make_candidate(self.example_outputs[0]), self.make_contexts()[0]
        )

    def test_parse_returns_a_parsed_output_for_every_example(self, component: Any) -> None:
        ctx = self.make_contexts()[0]
        for output in self.example_outputs:
            parsed = call_component(component.parse, self.make_candidate(output), ctx)
            assert isinstance(parsed, ParsedOutput), (
                f"{component.component_id}.parse({output!r}) returned {type(parsed).__name__}, "
                "expected themis.core.models.ParsedOutput"
            )

    def test_parse_accepts_every_example_context(self, component: Any) -> None:
        candidate = self.make_candidate(self.example_outputs[0])
        for ctx in self.make_contexts():
            assert isinstance(call_component(component.parse, candidate, ctx), ParsedOutput)

    def test_parsed_output_is_json_hashable(self, component: Any) -> None:
        ctx = self.make_contexts()[0]
        for output in self.example_outputs:
            parsed = call_component(component.parse, self.make_candidate(output), ctx)
            assert isinstance(parsed.compute_hash(), str)


class MetricContract(ComponentContract):
    """Metrics: a pure metric's ``score`` returns ``Score | ScoreError`` under its own id;
    a workflow metric's ``build_workflow`` returns an ``EvaluationWorkflow``."""

    method_name = "score"
    #: ``(parsed value, expected output)`` pairs a pure metric must score.
    example_pairs: ClassVar[Sequence[tuple[Any, Any]]] = (("4", "4"), ("5", "4"))

    def make_case(self, expected_output: Any) -> Case:
        return Case(
            case_id=CONTRACT_CASE_ID, input="What is 2 + 2?", expected_output=expected_output
        )

    def make_score_contexts(self, parsed: ParsedOutput, case: Case) -> list[ScoreContext]:
        minimal = ScoreContext(run_id=CONTRACT_RUN_ID, case=case, parsed_output=parsed)
        full = ScoreContext(
            run_id=CONTRACT_RUN_ID,
            dataset_id=CONTRACT_DATASET_ID,
            case_key=case_key_for(CONTRACT_DATASET_ID, case.case_id),
            case=case,
            parsed_output=parsed,
            seed=7,
            dataset_metadata={"split": "test"},
            metadata={"purpose": "contract"},
        )
        return [minimal, full]

    def make_subject(self, metric_family: str) -> Any:
        """The subject a workflow metric of ``metric_family`` builds a workflow for."""
        if metric_family == "trace":
            step = TraceStep(step_name="answer", step_type="model", output={"text": "4"})
            return TraceSubject(trace=WorkflowTrace(trace_id="contract:trace", steps=[step]))
        count = 2 if metric_family == "selection" else 1
        return CandidateSetSubject(
            candidates=[
                GenerationResult(candidate_id=f"{CONTRACT_CASE_ID}-candidate-{i}", final_output="4")
                for i in range(count)
            ]
        )

    def make_eval_context(self) -> EvalScoreContext:
        """An evaluation context with one judge model configured."""
        case = self.make_case("4")
        return EvalScoreContext(
            run_id=CONTRACT_RUN_ID,
            dataset_id=CONTRACT_DATASET_ID,
            case_key=case_key_for(CONTRACT_DATASET_ID, case.case_id),
            case=case,
            parsed_output=ParsedOutput(value="4"),
            judge_model_refs=[
                ComponentRef(component_id="contract/judge", version="1.0", fingerprint="contract")
            ],
            judge_seed=7,
        )

    def _is_pure(self, component: Any) -> bool:
        family = getattr(component, "metric_family", None)
        return family == "pure" if family is not None else hasattr(component, "score")

    def _scores(self, component: Any, ctx_index: int = 0) -> list[Any]:
        results = []
        for value, expected in self.example_pairs:
            parsed = ParsedOutput(value=value)
            case = self.make_case(expected)
            ctx = self.make_score_contexts(parsed, case)[ctx_index]
            results.append(call_component(component.score, parsed, case, ctx))
        return results

    def _invoke_example(self, component: Any) -> Any:
        value, expected = self.example_pairs[0]
        parsed = ParsedOutput(value=value)
        case = self.make_case(expected)
        return component.score(parsed, case, self.make_score_contexts(parsed, case)[0])

    def _require_pure(self, component: Any) -> None:
        if not self._is_pure(component):
            pytest.skip("workflow metric: it has no score() to check")

    def test_metric_family_is_valid_when_declared(self, component: Any) -> None:
        family = getattr(component, "metric_family", None)
        if family is None:
            pytest.skip("metric_family is not declared (recommended: declare it)")
        assert family in METRIC_FAMILIES, (
            f"{component.component_id}.metric_family is {family!r}; use one of {METRIC_FAMILIES}"
        )

    def test_satisfies_its_protocol(self, component: Any) -> None:
        if self._is_pure(component):
            assert isinstance(component, PureMetric), (
                f"{type(component).__name__} needs score(parsed, case, ctx) to be a pure metric"
            )
        else:
            assert callable(getattr(component, "build_workflow", None)), (
                f"{type(component).__name__} needs build_workflow(subject, ctx)"
            )

    def test_method_is_sync_or_a_coroutine_function(self, component: Any) -> None:
        self._require_pure(component)
        super().test_method_is_sync_or_a_coroutine_function(component)

    def test_score_returns_score_or_score_error(self, component: Any) -> None:
        self._require_pure(component)
        for result in self._scores(component):
            assert isinstance(result, (Score, ScoreError)), (
                f"{component.component_id}.score returned {type(result).__name__}, "
                "expected Score or ScoreError"
            )

    def test_score_metric_id_is_the_component_id(self, component: Any) -> None:
        """Scores are keyed by the metric's component_id, so ``metric_id`` must equal it."""
        self._require_pure(component)
        for result in self._scores(component):
            assert result.metric_id == component.component_id

    def test_score_value_is_a_finite_float(self, component: Any) -> None:
        self._require_pure(component)
        for result in self._scores(component):
            if isinstance(result, Score):
                assert isinstance(result.value, float) and math.isfinite(result.value)

    def test_score_accepts_a_full_context(self, component: Any) -> None:
        self._require_pure(component)
        for result in self._scores(component, ctx_index=1):
            assert isinstance(result, (Score, ScoreError))

    def test_score_is_json_hashable(self, component: Any) -> None:
        self._require_pure(component)
        for result in self._scores(component):
            assert isinstance(result.compute_hash(), str)

    def test_corpus_score_returns_a_float_or_none_when_defined(self, component: Any) -> None:
        self._require_pure(component)
        corpus_score = getattr(component, "corpus_score", None)
        if corpus_score is None:
            pytest.skip("the metric defines no corpus_score (optional)")
        scores = [s for s in self._scores(component) if isinstance(s, Score)]
        for subset in (scores, []):
            value = corpus_score(subset)
            assert value is None or (isinstance(value, float) and math.isfinite(value)), (
                f"{component.component_id}.corpus_score returned {value!r}"
            )

    def test_build_workflow_returns_an_evaluation_workflow(self, component: Any) -> None:
        if self._is_pure(component):
            pytest.skip("pure metric: it builds no workflow to check")
        family = str(getattr(component, "metric_family", "llm"))
        workflow = component.build_workflow(self.make_subject(family), self.make_eval_context())
        assert isinstance(workflow, EvaluationWorkflow), (
            f"{component.component_id}.build_workflow returned {type(workflow).__name__}, "
            "which lacks the identity triple or a workflow method"
        )
        calls = workflow.judge_calls()
        assert isinstance(calls, list) and all(isinstance(c, JudgeCall) for c in calls)


class JudgeModelContract(ComponentContract):
    """The ``JudgeModel`` protocol: ``judge(prompt, *, seed=None)`` gives a response or str."""

    protocol = JudgeModel
    method_name = "judge"
    #: Prompts the judge must answer.
    example_prompts: ClassVar[Sequence[str]] = (
        "Does the answer '4' correctly answer 'What is 2 + 2?'? Reply PASS or FAIL.",
    )

    def _invoke_example(self, component: Any) -> Any:
        return component.judge(self.example_prompts[0])

    def test_judge_returns_a_response_or_a_string(self, component: Any) -> None:
        for prompt in self.example_prompts:
            reply = call_component(component.judge, prompt)
            assert isinstance(reply, (JudgeResponse, str)), (
                f"{component.component_id}.judge returned {type(reply).__name__}, "
                "expected JudgeResponse or str"
            )

    def test_judge_accepts_a_seed_keyword(self, component: Any) -> None:
        for seed in (None, 7):
            reply = call_component(component.judge, self.example_prompts[0], seed=seed)
            assert isinstance(reply, (JudgeResponse, str))

    def test_judge_response_is_json_hashable(self, component: Any) -> None:
        reply = call_component(component.judge, self.example_prompts[0], seed=7)
        if isinstance(reply, str):
            reply = JudgeResponse(raw_response=reply)
        assert isinstance(reply.compute_hash(), str)
