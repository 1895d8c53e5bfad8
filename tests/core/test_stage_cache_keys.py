"""Stage-cache keys: whatever shortcut builds them, each is the content hash of API §5.12's
fields, so runs of other versions (and other processes) hit the same entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from themis.core.base import HashTemplate, content_hash
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.prompts import PromptSpec
from themis.testing import FakeGenerator
from themis_builtins import ExactMatch, MajorityVote, TextParser, TokenF1
from themis_store_sqlite import SqliteRunStore

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    fields=st.dictionaries(st.text(), _json, max_size=6),
    variable=st.sets(st.text(), max_size=6),
)
def test_a_template_hash_equals_the_content_hash_of_the_whole_dict(
    fields: dict[str, Any], variable: set[str]
) -> None:
    """Keys sort as ``canonical_json`` sorts them (non-ASCII and empty keys included)."""
    names = tuple(sorted(variable & set(fields)))
    fixed = {k: v for k, v in fields.items() if k not in names}
    template = HashTemplate(fixed, names)
    assert template.hash(**{k: fields[k] for k in names}) == content_hash(fields)


def test_a_key_both_fixed_and_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="both fixed and variable: \\['seed'\\]"):
        HashTemplate({"seed": 1}, ("seed", "case"))


def test_every_stage_caches_under_the_content_hash_of_its_fields(tmp_path: Path) -> None:
    outputs = {"c0": "4", "c1": "caf\u00e9", "c2": "7"}
    experiment = Experiment(
        generation=GenerationConfig(
            generator=FakeGenerator(outputs),
            candidate_policy={"num_samples": 2},
            prompt_spec=PromptSpec(instructions="Answer briefly."),
            reducer=MajorityVote(),
        ),
        evaluation=EvaluationConfig(
            metrics=[ExactMatch()],
            parsers=[TextParser()],
            prompt_spec=PromptSpec(instructions="Grade it."),
        ),
        datasets=[
            Dataset(
                dataset_id="keys",
                cases=[
                    Case(case_id=case_id, input=case_id, expected_output="4") for case_id in outputs
                ],
            )
        ],
    )
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    result = experiment.run(store=store)
    identity = experiment.compile().identity
    assert identity.reducer_ref is not None
    cases = {case.case_id: case for case in experiment.datasets[0].cases}
    seeds = {
        (event.case_id, event.candidate_index): event.seed
        for event in store.query_events(result.run_id)
        if event.event_type == "generation_completed"
    }
    assert len(seeds) == 6
    checked = 0
    for case_result in result.cases:
        case_hash = cases[case_result.case_id].compute_hash()
        keys = {
            f"generate {index}": (
                "generate",
                {
                    "case": case_hash,
                    "generator_ref": identity.generator_ref,
                    "candidate_policy": identity.candidate_policy,
                    "prompt_spec": identity.generation_prompt_spec,
                    "seed": seeds[case_result.case_id, index],
                    "candidate_index": index,
                },
            )
            for index in range(2)
        }
        reduced, parsed = case_result.reduced_candidate, case_result.parsed_output
        assert reduced is not None and parsed is not None
        keys["reduce"] = (
            "reduce",
            {
                "selector_ref": identity.selector_ref,
                "reducer_ref": identity.reducer_ref,
                "candidates": [c.compute_hash() for c in case_result.generated_candidates],
            },
        )
        keys["parse"] = (
            "parse",
            {"reduced": reduced.compute_hash(), "parser_ref": identity.parser_refs[0]},
        )
        keys["score"] = (
            "score",
            {
                "case": case_hash,
                "parsed": parsed.compute_hash(),
                "metric_ref": identity.metric_refs[0],
                "prompt_spec": identity.evaluation_prompt_spec,
            },
        )
        for what, (stage, fields) in keys.items():
            cached = store.load_stage_cache(stage, content_hash(fields))
            assert cached is not None, (case_result.case_id, what)
            assert cached["source_run_id"] == result.run_id
            checked += 1
    assert checked == 15
    store.close()


def test_payloads_read_from_the_cache_are_bounded_like_fresh_ones(tmp_path: Path) -> None:
    """A cache hit's payload goes to a blob when it is over the inline limit, as it did
    when it was computed (API §2.9), whichever stage it is for."""
    big = "x" * 3000
    datasets = [Dataset(dataset_id="big", cases=[Case(case_id="c0", input="c0")])]

    def experiment(metric: Any) -> Experiment:
        return Experiment(
            generation=GenerationConfig(generator=FakeGenerator({"c0": big})),
            evaluation=EvaluationConfig(metrics=[metric], parsers=[TextParser()]),
            datasets=datasets,
            runtime={"inline_payload_limit": 1000},
        )

    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    experiment(ExactMatch()).run(store=store)
    # Another metric, so another run: generation and parsing are read from the cache (with
    # no reducer, the reduction passes the output through and is not cached).
    second = experiment(TokenF1()).run(store=store)
    events = store.query_events(second.run_id)
    for event_type in ("generation_completed", "reduction_completed", "parse_completed"):
        emitted = [e for e in events if e.event_type == event_type]
        assert emitted and all(e.result is None and e.result_blob_ref for e in emitted)
        assert all(e.cache_hit for e in emitted) == (event_type != "reduction_completed")
    assert second.cases[0].parsed_output is not None
    assert second.cases[0].parsed_output.value == big
    store.close()


def _hash_counting_experiment(n: int) -> Experiment:
    return Experiment(
        generation=GenerationConfig(generator=FakeGenerator({f"c{i}": str(i) for i in range(n)})),
        evaluation=EvaluationConfig(metrics=[ExactMatch()]),
        datasets=[
            Dataset(
                dataset_id="hashed",
                cases=[
                    Case(case_id=f"c{i}", input={"q": i}, expected_output=str(i)) for i in range(n)
                ],
            )
        ],
    )


@pytest.mark.parametrize("digests_fit", [True, False])
def test_a_run_takes_the_case_hashes_its_compile_worked_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digests_fit: bool
) -> None:
    experiment = _hash_counting_experiment(5)
    snapshot = experiment.compile()
    components = experiment._compile()[1]
    ref = snapshot.identity.dataset_refs[0]
    digests = components.case_digests[(ref.dataset_id, ref.fingerprint)]
    assert digests == b"".join(
        bytes.fromhex(case.compute_hash()) for case in experiment.datasets[0].cases
    )
    if not digests_fit:  # not these cases' digests: each case is hashed again
        components.case_digests[(ref.dataset_id, ref.fingerprint)] = digests[:-32]
    hashed: list[str] = []
    compute_hash = Case.compute_hash

    def counting(self: Case) -> str:
        hashed.append(self.case_id)
        return compute_hash(self)

    monkeypatch.setattr(Case, "compute_hash", counting)
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    result = experiment.run(store=store)
    assert result.status == "completed" and len(result.cases) == 5
    assert sorted(hashed) == ([] if digests_fit else [f"c{i}" for i in range(5)])
    monkeypatch.undo()
    for case in experiment.datasets[0].cases:
        key = content_hash(
            {
                "case": case.compute_hash(),
                "generator_ref": snapshot.identity.generator_ref,
                "candidate_policy": snapshot.identity.candidate_policy,
                "prompt_spec": snapshot.identity.generation_prompt_spec,
                "seed": next(
                    event.seed
                    for event in store.query_events(result.run_id)
                    if event.event_type == "generation_completed" and event.case_id == case.case_id
                ),
                "candidate_index": 0,
            }
        )
        assert store.load_stage_cache("generate", key) is not None, case.case_id
    store.close()
