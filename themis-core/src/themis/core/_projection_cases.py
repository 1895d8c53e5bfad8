"""Per-case views of a folded run: case status, ``RunResult`` and the benchmark rows."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from itertools import count, repeat
from operator import itemgetter
from typing import Any, Literal, cast

from themis.core._construct import SET_DICT, SET_EXTRA, SET_FIELDS_SET, SET_PRIVATE
from themis.core._fold_speed import EMPTY, trusted
from themis.core.case_refs import case_key_for
from themis.core.config import GenerationConfig
from themis.core.logs import get_logger
from themis.core.models import GenerationResult, Score, ScoreError
from themis.core.read_models import BenchmarkResult, BenchmarkScoreRow
from themis.core.results import (
    CaseExecutionState,
    CaseResult,
    ExecutionState,
    ProgressSnapshot,
    RunResult,
)
from themis.core.snapshot import RunSnapshot

log = get_logger(__name__)

CaseStatus = Literal["completed", "failed", "pending"]

# ``corpus_score(scores) -> float | None`` of a metric, keyed by metric id.
CorpusScorer = Callable[[list[Score]], float | None]


class RunShape:
    """What the snapshot says about cases and metrics, computed once per folder."""

    def __init__(self, snapshot: RunSnapshot) -> None:
        self.run_id = snapshot.run_id
        self._snapshot = snapshot
        self.dataset_ids = [dataset.dataset_id for dataset in snapshot.datasets]
        kinds = list(snapshot.metric_kinds)
        self.metric_ids: list[str] = []
        self.pure_metric_ids: list[str] = []
        for index, ref in enumerate(snapshot.component_refs.metrics):
            if ref.component_id in self.metric_ids:
                continue
            self.metric_ids.append(ref.component_id)
            # A hand-built snapshot may omit metric_kinds; such metrics count as pure.
            if index >= len(kinds) or kinds[index] == "pure":
                self.pure_metric_ids.append(ref.component_id)
        self.metric_positions = {m: i for i, m in enumerate(self.metric_ids)}
        # ``covered_metrics`` as sets, for the check that a case has all their scores.
        self._covered_sets = {
            "judge": frozenset(self.metric_ids),
            "score": frozenset(self.pure_metric_ids),
        }
        # The candidate-count rule lives on GenerationConfig; only the policy is needed.
        self.candidate_count = GenerationConfig.model_construct(
            generator=None, candidate_policy=dict(snapshot.identity.candidate_policy)
        ).candidate_count()
        _work_out_when_idle(self)

    def work_out(self) -> None:
        """Work out ``cases`` and ``positions`` now."""
        self.positions  # noqa: B018 (a cached property: its value is kept)

    def covered_metrics(self, until_stage: str) -> list[str]:
        """The metrics a run up to ``until_stage`` scores."""
        if until_stage == "judge":
            return self.metric_ids
        if until_stage == "score":
            return self.pure_metric_ids
        return []

    @cached_property
    def cases(self) -> list[tuple[str, str, str]]:
        """``(dataset_id, case_id, case_key)`` of every case, in snapshot order.

        Worked out on first use: a folder is made as a run starts (4 ms at 10,000 cases),
        and the first use comes later, between batches; on Themis's loop, in its first
        idle turn (see ``_work_out_when_idle``).
        """
        rows: list[tuple[str, str, str]] = []
        for dataset in self._snapshot.datasets:
            dataset_id = dataset.dataset_id
            # case_key_for(dataset_id, case_id), its dataset part built once (10,000 cases:
            # 10 -> 2 ms, in the run's first catch-up, while the first model calls are out).
            prefix = case_key_for(dataset_id, "")
            ids = [case.case_id for case in dataset.cases]
            rows += zip(repeat(dataset_id), ids, [prefix + case_id for case_id in ids])
        return rows

    @cached_property
    def positions(self) -> dict[str, int]:
        """Each case key's index in ``cases``."""
        return dict(zip(map(_KEY, self.cases), count()))

    def case_state(
        self, state: ExecutionState, case_id: str, key: str
    ) -> CaseExecutionState | None:
        found = state.case_states.get(key)
        # Legacy events without dataset ids are keyed by the bare case id.
        return found if found is not None else state.case_states.get(case_id)


def _work_out_when_idle(shape: RunShape) -> None:
    """Have the running loop work out ``shape``'s cases in its next idle turn, when it can
    (Themis's loop, ``call_when_idle``).

    A folder's shape is made as a run starts, and its cases are first used by the first
    catch-up, when the first wave of model calls has come back and the loop is at its
    busiest; in between, while those calls are out, the loop has nothing to do.
    """
    asyncio: Any = sys.modules.get("asyncio")  # not imported: no loop runs
    if asyncio is None:
        return
    try:
        loop: Any = asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread (a store's own thread, a read offline)
        return
    when_idle = getattr(loop, "call_when_idle", None)
    if when_idle is not None:
        when_idle(shape.work_out)


def case_status(
    shape: RunShape,
    cs: CaseExecutionState | None,
    until_stage: str,
    failed: bool | None = None,
) -> CaseStatus:
    """Completed, failed or pending, as API §2.8 defines them for ``until_stage``.

    ``failed`` is ``cs.has_failure`` when the caller knows it already (the fold keeps the
    keys of failed cases).
    """
    if cs is None:
        return "pending"
    if cs.has_failure if failed is None else failed:
        return "failed"
    fields = cs.__dict__
    if until_stage == "generate":
        done = len(fields["generated_candidates"]) >= shape.candidate_count
    elif until_stage == "reduce":
        done = fields["reduced_candidate"] is not None
    else:
        # Every covered metric has a score: a set comparison with the scores' keys.
        covered = shape._covered_sets.get(until_stage, frozenset())
        done = fields["parsed_output"] is not None and fields["successful_scores"].keys() >= covered
    return "completed" if done else "pending"


def _stopped_early(cs: CaseExecutionState) -> bool:
    return bool(
        (cs.generation_failures and not cs.generated_candidates)
        or cs.selection_error is not None
        or cs.reduction_error is not None
        or cs.parse_error is not None
        or cs.case_error is not None
    )


def _has_metric_record(cs: CaseExecutionState, metric_id: str) -> bool:
    return (
        metric_id in cs.successful_scores
        or metric_id in cs.score_failures
        or metric_id in cs.evaluation_failures
    )


def is_finished(
    shape: RunShape, cs: CaseExecutionState | None, status: CaseStatus, until_stage: str
) -> bool:
    """A case has finished when completed, or failed and nothing more will run for it."""
    if status == "completed":
        return True
    if status == "pending" or cs is None:
        return False
    return _stopped_early(cs) or all(
        _has_metric_record(cs, m) for m in shape.covered_metrics(until_stage)
    )


def _row_error(cs: CaseExecutionState, metric_id: str) -> tuple[str, str] | None:
    """The first error category (API §2.10) that applies to this (case, metric), if any."""
    if cs.generation_failures and not cs.generated_candidates:
        return "generation_failure", "; ".join(cs.generation_failures.values())
    if cs.selection_error is not None:
        return "selection_failure", cs.selection_error
    if cs.reduction_error is not None:
        return "reduction_failure", cs.reduction_error
    if cs.parse_error is not None:
        return "parse_failure", cs.parse_error
    if cs.case_error is not None:
        return "case_failure", cs.case_error
    parsed = cs.parsed_output
    if parsed is not None:
        if parsed.value is None:
            return "parse_null", "the parser returned a null value"
        if parsed.metadata.get("invalid") is True:
            reason = parsed.metadata.get("error")
            message = str(reason) if reason else "the parser marked the output invalid"
            return "parse_invalid", message
    if metric_id in cs.evaluation_failures:
        return "evaluation_failure", cs.evaluation_failures[metric_id]
    execution = cs.evaluation_executions.get(metric_id)
    if execution is not None and (execution.status != "completed" or execution.failures):
        messages = "; ".join(f.error_message for f in execution.failures)
        return "evaluation_partial_failure", messages or "the evaluation finished partially"
    if metric_id in cs.score_failures:
        return "score_failure", cs.score_failures[metric_id].reason
    return None


# A case's result as built, with the stage and the status it was built for.
BuiltCase = tuple[CaseResult, str, CaseStatus]
_RESULT, _STATUS = itemgetter(0), itemgetter(2)
# A row of ``RunShape.cases``'s case key.
_KEY = itemgetter(2)


def build_run_result(
    shape: RunShape,
    state: ExecutionState,
    built: dict[str, BuiltCase] | None = None,
    start: int = 0,
) -> RunResult:
    """Every case in snapshot order, with the progress counts for the current stage.

    ``built`` keeps case results (and their status) between calls: one found there for the
    current stage is reused, one built is put there. Whoever passes it drops a case's entry
    when an event changes the case. With ``start``, the result has the cases from that
    position on, and counts only them (the folder keeps the ones before it elsewhere).
    """
    until_stage = state.until_stage
    rows = shape.cases[start:] if start else shape.cases
    # At the end of a run nearly every case is built already: the entries are looked up,
    # and their parts taken, by C-level passes, and only the cases left are built one by
    # one (the read at the end of P3 at 512, 10,000 cases: 8.1-8.4 -> 4.3-6.5 ms).
    entries: list[BuiltCase | None] = (
        list(map(built.get, map(_KEY, rows))) if built is not None else [None] * len(rows)
    )
    left = [
        index for index, entry in enumerate(entries) if entry is None or entry[1] != until_stage
    ]
    if left:
        case_states = state.case_states
        failed_keys = state._fold.failed_keys
        for index in left:
            dataset_id, case_id, key = rows[index]
            cs = case_states.get(key)
            if cs is not None:
                status = case_status(shape, cs, until_stage, key in failed_keys)
            else:  # a legacy log's case, keyed by its bare id
                cs = case_states.get(case_id)
                status = case_status(shape, cs, until_stage)
            if cs is None:
                result = CaseResult(case_id=case_id, dataset_id=dataset_id, case_key=key)
                entries[index] = (result, until_stage, status)
            else:
                result = _case_result(shape, cs, case_id, dataset_id, key)
                entry = entries[index] = (result, until_stage, status)
                if built is not None:
                    built[key] = entry
    done = cast(list[BuiltCase], entries)
    statuses = list(map(_STATUS, done))
    # Every part is a valid model already: validating the list would only check types.
    return RunResult.model_construct(
        run_id=shape.run_id,
        status=state.status,
        completed_through_stage=state.completed_through_stage,
        progress=ProgressSnapshot.model_construct(
            total_cases=len(shape.cases),
            completed_cases=statuses.count("completed"),
            failed_cases=statuses.count("failed"),
        ),
        cases=list(map(_RESULT, done)),
    )


def build_case_results(
    shape: RunShape, state: ExecutionState, keys: Iterable[str], built: dict[str, BuiltCase]
) -> None:
    """Put in ``built`` the result of each case of ``keys`` that has finished.

    Run between batches while model calls are out, so that the read of the result at
    the end of a run only assembles the list. A case still under way is left for later:
    building it now would only mean building it again.
    """
    until_stage = state.until_stage
    positions = shape.positions
    case_states = state.case_states
    failed_keys = state._fold.failed_keys  # kept by the fold: has_failure, per key
    # The metrics a case must have scores of (what ``case_status`` compares), or None when
    # ``until_stage`` stops before parsing.
    covered = (
        None
        if until_stage == "generate" or until_stage == "reduce"
        else shape._covered_sets.get(until_stage, frozenset())
    )
    for key in keys:
        position = positions.get(key)
        cs = case_states.get(key)
        if position is None or cs is None or key in built:
            continue
        if covered is not None and key not in failed_keys:
            # ``case_status`` and ``is_finished`` of a case with no failure, written out:
            # completed (and so finished) or pending (not finished).
            fields = cs.__dict__
            if (
                fields["parsed_output"] is not None
                and fields["successful_scores"].keys() >= covered
            ):
                dataset_id, case_id, _ = shape.cases[position]
                built[key] = (
                    _case_result(shape, cs, case_id, dataset_id, key),
                    until_stage,
                    "completed",
                )
            continue
        status = case_status(shape, cs, until_stage, key in failed_keys)
        if is_finished(shape, cs, status, until_stage):
            dataset_id, case_id, _ = shape.cases[position]
            built[key] = (_case_result(shape, cs, case_id, dataset_id, key), until_stage, status)


def _declared_order(shape: RunShape, metric_ids: list[str]) -> list[str]:
    if len(metric_ids) < 2:
        return metric_ids
    last = len(shape.metric_positions)
    return sorted(metric_ids, key=lambda m: shape.metric_positions.get(m, last))


def _candidates(cs: CaseExecutionState) -> list[GenerationResult]:
    """Generated candidates by index, then any logged without an index."""
    by_index = cs.generated_candidates_by_index
    if len(by_index) == 1:
        candidates = list(by_index.values())
    else:
        candidates = [by_index[i] for i in sorted(by_index)]
    if len(candidates) != len(cs.generated_candidates):
        indexed = {id(c) for c in candidates}
        candidates += [c for c in cs.generated_candidates.values() if id(c) not in indexed]
    return candidates


# A case result is built as ``trusted`` would build it, inlined: one per case per run.
_new_result = object.__new__
_CASE_RESULT_FIELDS: set[str] = set(CaseResult.model_fields)
# Every field of a case result in declared order; the four dicts the shared empty one.
_CASE_RESULT_TEMPLATE: dict[str, Any] = dict.fromkeys(CaseResult.model_fields)
for _name in (
    "generated_candidate_blob_refs",
    "generation_failures",
    "evaluation_execution_blob_refs",
    "evaluation_failures",
):
    _CASE_RESULT_TEMPLATE[_name] = EMPTY


def _case_result(
    shape: RunShape, cs: CaseExecutionState, case_id: str, dataset_id: str, key: str
) -> CaseResult:
    # The state's fields read from its dict: a model's attribute costs a type lookup first.
    fields = cs.__dict__
    executions = fields["evaluation_executions"]
    successes = fields["successful_scores"]
    if fields["score_failures"] or len(successes) > 1:
        outcomes = cs.scores
        scores = [outcomes[m] for m in _declared_order(shape, list(outcomes))]
    else:  # one score or none: no order to find
        scores = list(successes.values())
    by_index = fields["generated_candidates_by_index"]
    # One candidate, logged with its index: the usual case needs no ordering.
    candidates = (
        list(by_index.values())
        if len(by_index) == 1 and len(fields["generated_candidates"]) == 1
        else _candidates(cs)
    )
    # Each dict the result's own copy, or the shared read-only one when empty (four per
    # case, see ``Shared``).
    refs = fields["generated_candidate_blob_refs"]
    failures = fields["generation_failures"]
    execution_refs = fields["evaluation_execution_blob_refs"]
    evaluation_failures = fields["evaluation_failures"]
    # A copy of the template, its usual values set: a copy costs less than a display.
    data = _CASE_RESULT_TEMPLATE.copy()
    data["case_id"] = case_id
    data["dataset_id"] = dataset_id
    data["case_key"] = key
    data["generated_candidates"] = candidates
    if refs:
        data["generated_candidate_blob_refs"] = dict(refs)
    if failures:
        data["generation_failures"] = dict(failures)
    data["reduced_candidate"] = fields["reduced_candidate"]
    data["reduction_error"] = fields["reduction_error"]
    data["parsed_output"] = fields["parsed_output"]
    data["parse_error"] = fields["parse_error"]
    data["evaluation_executions"] = (
        [executions[m] for m in _declared_order(shape, list(executions))] if executions else []
    )
    if execution_refs:
        data["evaluation_execution_blob_refs"] = dict(execution_refs)
    if evaluation_failures:
        data["evaluation_failures"] = dict(evaluation_failures)
    data["scores"] = scores
    data["case_error"] = fields["case_error"]
    result = _new_result(CaseResult)
    SET_DICT(result, data)
    SET_FIELDS_SET(result, _CASE_RESULT_FIELDS)
    SET_EXTRA(result, None)
    SET_PRIVATE(result, None)
    return result


def build_benchmark_result(
    shape: RunShape,
    state: ExecutionState,
    corpus_scorers: Mapping[str, CorpusScorer],
) -> BenchmarkResult:
    """One row per (finished case, covered metric), and the per-metric summaries."""
    until_stage = state.until_stage
    covered = shape.covered_metrics(until_stage)
    rows: list[BenchmarkScoreRow] = []
    scored: dict[str, list[Score]] = {m: [] for m in shape.metric_ids}
    outcome_counts = {m: {"correct": 0, "incorrect": 0, "error": 0} for m in shape.metric_ids}
    error_counts: dict[str, dict[str, int]] = {m: {} for m in shape.metric_ids}
    completed = failed = 0
    for dataset_id, case_id, key in shape.cases:
        cs = shape.case_state(state, case_id, key)
        status = case_status(shape, cs, until_stage)
        completed += status == "completed"
        failed += status == "failed"
        if cs is None or not is_finished(shape, cs, status, until_stage):
            continue
        candidate_id = cs.reduced_candidate.candidate_id if cs.reduced_candidate else None
        for metric_id in covered:
            row = _row(cs, metric_id, case_id, dataset_id, key, candidate_id)
            if row is None:
                continue
            rows.append(row)
            outcome_counts[metric_id][row.outcome] += 1
            if row.error_category is not None:
                errors = error_counts[metric_id]
                errors[row.error_category] = errors.get(row.error_category, 0) + 1
            else:
                scored[metric_id].append(cs.successful_scores[metric_id])
    return BenchmarkResult(
        run_id=shape.run_id,
        dataset_ids=list(shape.dataset_ids),
        metric_ids=list(shape.metric_ids),
        total_cases=len(shape.cases),
        completed_cases=completed,
        failed_cases=failed,
        score_rows=rows,
        metric_means={
            m: math.fsum(s.value for s in scores) / len(scores)
            for m, scores in scored.items()
            if scores
        },
        outcome_counts=outcome_counts,
        error_counts=error_counts,
        metric_aggregates=_aggregates(shape, scored, corpus_scorers),
    )


def _row(
    cs: CaseExecutionState,
    metric_id: str,
    case_id: str,
    dataset_id: str,
    key: str,
    candidate_id: str | None,
) -> BenchmarkScoreRow | None:
    error = _row_error(cs, metric_id)
    if error is not None:
        category, message = error
        failure: ScoreError | None = cs.score_failures.get(metric_id)
        return trusted(
            BenchmarkScoreRow,
            {
                "case_id": case_id,
                "dataset_id": dataset_id,
                "case_key": key,
                "metric_id": metric_id,
                "value": None,
                "candidate_id": candidate_id,
                "outcome": "error",
                "error_category": category,
                "error_message": message,
                "details": dict(failure.details) if failure is not None else {},
            },
        )
    score = cs.successful_scores.get(metric_id)
    if score is None:
        # A finished case always has a record for each covered metric; keep the table
        # honest rather than inventing a row if the log is incomplete.
        return None
    return trusted(
        BenchmarkScoreRow,
        {
            "case_id": case_id,
            "dataset_id": dataset_id,
            "case_key": key,
            "metric_id": metric_id,
            "value": score.value,
            "candidate_id": candidate_id,
            "outcome": "correct" if score.value >= 1.0 else "incorrect",
            "error_category": None,
            "error_message": None,
            "details": dict(score.details),
        },
    )


def _aggregates(
    shape: RunShape,
    scored: dict[str, list[Score]],
    corpus_scorers: Mapping[str, CorpusScorer],
) -> dict[str, float]:
    aggregates: dict[str, float] = {}
    for metric_id, scorer in corpus_scorers.items():
        scores = scored.get(metric_id)
        if not scores:
            continue
        try:
            value = scorer(list(scores))
        except Exception as exc:  # a corpus score must never break reading a run
            log.warning(
                "projection.corpus_score_failed",
                run_id=shape.run_id,
                metric_id=metric_id,
                error=str(exc),
            )
            continue
        if value is not None:
            aggregates[metric_id] = float(value)
    return aggregates
