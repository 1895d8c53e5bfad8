"""The builtins inside a real run: resolved by id, wired through the runtime, events recorded."""

from __future__ import annotations

from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.stores import InMemoryRunStore

DATASET = Dataset(
    dataset_id="sample",
    cases=[
        Case(case_id="case-1", input="2+2", expected_output="the cat sat on the mat"),
        Case(case_id="case-2", input="3+3", expected_output="a b c d"),
    ],
)


def test_builtins_run_end_to_end_by_id() -> None:
    experiment = Experiment(
        generation=GenerationConfig(
            generator="builtin/demo_generator",
            candidate_policy={"num_samples": 3},
            reducer="builtin/majority_vote",
        ),
        evaluation=EvaluationConfig(
            parsers=["builtin/text"],
            metrics=["builtin/exact_match", {"id": "builtin/bleu", "params": {"max_order": 2}}],
        ),
        datasets=[DATASET],
        seeds=[1, 2, 3],
    )
    store = InMemoryRunStore()
    result = experiment.run(store=store)
    assert result.status.value == "completed"
    scores = {(c.case_id, s.metric_id): s.value for c in result.cases for s in c.scores}
    assert scores == {
        ("case-1", "builtin/exact_match"): 1.0,
        ("case-1", "builtin/bleu"): 1.0,
        ("case-2", "builtin/exact_match"): 1.0,
        ("case-2", "builtin/bleu"): 1.0,
    }
    reduced = [c.reduced_candidate for c in result.cases]
    assert [r.candidate_id for r in reduced if r is not None] == [
        "case-1-reduced",
        "case-2-reduced",
    ]


def test_best_of_n_votes_reach_the_selection_completed_event() -> None:
    experiment = Experiment(
        generation=GenerationConfig(
            generator="builtin/demo_generator",
            candidate_policy={"num_samples": 2},
            selector="builtin/best_of_n",
        ),
        evaluation=EvaluationConfig(judge_models=["builtin/demo_judge"]),
        datasets=[DATASET],
    )
    store = InMemoryRunStore()
    result = experiment.run(store=store)
    assert result.status.value == "completed"
    events = store.query_events(result.run_id, event_types=["selection_completed"])
    assert len(events) == 2
    metadata = events[0].metadata  # type: ignore[attr-defined]
    assert metadata["selector_id"] == "builtin/best_of_n"
    # demo_judge answers "pass", which is neither letter, so the incumbent always stays
    assert metadata["votes"] == [
        {
            "incumbent": "case-1-candidate-0",
            "challenger": "case-1-candidate-1",
            "votes": [""],
            "b_votes": 0,
            "winner": "case-1-candidate-0",
        }
    ]
