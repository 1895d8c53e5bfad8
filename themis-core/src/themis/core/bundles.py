"""Bundles: move one stage's results, or a whole run, between stores as plain JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

from pydantic import Field

from themis.core._run_bundle import (
    BundleImportResult,
    RunBundleHeader,
    export_run_bundle,
    import_run_bundle,
)
from themis.core.base import FrozenModel, canonical_json
from themis.core.case_refs import case_key_for
from themis.core.events import (
    EvaluationCompletedEvent,
    GenerationCompletedEvent,
    ParseCompletedEvent,
    ReductionCompletedEvent,
    RunEvent,
    ScoreCompletedEvent,
    ScoreFailedEvent,
)
from themis.core.inspection import get_execution_state, get_run_snapshot

# The JSON Lines run bundle lives in its own module; its names are public here.
from themis.core.logs import get_logger
from themis.core.models import GenerationResult, ParsedOutput, ReducedCandidate, Score
from themis.core.planner import Planner
from themis.core.protocols import RunStore
from themis.core.results import CaseExecutionState
from themis.core.snapshot import RunSnapshot
from themis.core.workflows import EvaluationExecution

__all__ = [
    "BundleImportResult",
    "EvaluationBundle",
    "EvaluationBundleRecord",
    "GenerationBundle",
    "GenerationBundleRecord",
    "ParseBundle",
    "ParseBundleRecord",
    "ReductionBundle",
    "ReductionBundleRecord",
    "RunBundleHeader",
    "ScoreBundle",
    "ScoreBundleRecord",
    "export_evaluation_bundle",
    "export_generation_bundle",
    "export_parse_bundle",
    "export_reduction_bundle",
    "export_run_bundle",
    "export_score_bundle",
    "import_bundle",
    "import_evaluation_bundle",
    "import_generation_bundle",
    "import_parse_bundle",
    "import_reduction_bundle",
    "import_run_bundle",
    "import_score_bundle",
]

log = get_logger(__name__)

StageKind = Literal["generation", "reduction", "parse", "score", "evaluation"]


# ----------------------------------------------------------------------- records
class _Record(FrozenModel):
    case_id: str
    dataset_id: str | None = None
    case_key: str | None = None


class GenerationBundleRecord(_Record):
    candidate_id: str
    candidate_index: int | None = None
    seed: int | None = None
    result_blob_ref: str | None = None
    result: GenerationResult


class ReductionBundleRecord(_Record):
    candidate_id: str
    result: ReducedCandidate


class ParseBundleRecord(_Record):
    candidate_id: str
    result: ParsedOutput


class ScoreBundleRecord(_Record):
    candidate_id: str | None = None
    metric_id: str
    score: Score


class EvaluationBundleRecord(_Record):
    metric_id: str
    candidate_id: str | None = None
    execution_blob_ref: str | None = None
    execution: EvaluationExecution


# ----------------------------------------------------------------------- bundles
class _Bundle(FrozenModel):
    schema_version: str = "1"
    # None for bundles written without a kind (upstream's); the importer states the kind.
    bundle_kind: str | None = None
    run_id: str
    snapshot: RunSnapshot
    records: list[Any] = Field(default_factory=list)


class GenerationBundle(_Bundle):
    records: list[GenerationBundleRecord] = Field(default_factory=list)


class ReductionBundle(_Bundle):
    records: list[ReductionBundleRecord] = Field(default_factory=list)


class ParseBundle(_Bundle):
    records: list[ParseBundleRecord] = Field(default_factory=list)


class ScoreBundle(_Bundle):
    records: list[ScoreBundleRecord] = Field(default_factory=list)


class EvaluationBundle(_Bundle):
    records: list[EvaluationBundleRecord] = Field(default_factory=list)


_BUNDLE_TYPES: dict[str, type[_Bundle]] = {
    "generation": GenerationBundle,
    "reduction": ReductionBundle,
    "parse": ParseBundle,
    "score": ScoreBundle,
    "evaluation": EvaluationBundle,
}

B = TypeVar("B", bound=_Bundle)


def content_address(payload: Mapping[str, Any]) -> str:
    """The blob ref the runtime gives ``payload``: sha256 of its canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------ export
Builder = Callable[[RunSnapshot, dict[str, str], CaseExecutionState], Iterable[Any]]

# The event each stage's records come from, and the record field that tells them apart.
_SOURCES: dict[str, tuple[str, str | None]] = {
    "generation": ("generation_completed", "candidate_id"),
    "reduction": ("reduction_completed", None),
    "parse": ("parse_completed", None),
    "score": ("score_completed", "metric_id"),
    "evaluation": ("evaluation_completed", "metric_id"),
}


def _latest(store: RunStore, run_id: str, kind: str) -> dict[tuple[str, str], RunEvent]:
    """The latest source event of each (case_key, candidate or metric) of a stage."""
    event_type, part = _SOURCES[kind]
    latest: dict[tuple[str, str], RunEvent] = {}
    for event in store.query_events(run_id, event_types=(event_type,)):
        data = event.__dict__
        key = str(data.get("case_key") or data.get("case_id"))
        latest[(key, str(data.get(part, "")) if part else "")] = event
    return latest


def _export(store: RunStore, run_id: str, kind: StageKind, build: Builder) -> Any:
    """The current records of every case, in the order their events were logged."""
    snapshot = get_run_snapshot(store, run_id)
    states = get_execution_state(store, run_id).case_states
    records: list[Any] = []
    for dataset in snapshot.datasets:
        for case in dataset.cases:
            key = case_key_for(dataset.dataset_id, case.case_id)
            cs = states.get(key)
            if cs is not None:
                ids = {"case_id": case.case_id, "dataset_id": dataset.dataset_id, "case_key": key}
                records += build(snapshot, ids, cs)
    # Log order, so that an import rebuilds the same projections (they keep log order).
    part = _SOURCES[kind][1]
    seqs = {k: e.seq or 0 for k, e in _latest(store, run_id, kind).items()}
    records.sort(key=lambda r: seqs.get((r.case_key, getattr(r, part) if part else ""), 1 << 62))
    return _BUNDLE_TYPES[kind](bundle_kind=kind, run_id=run_id, snapshot=snapshot, records=records)


def _reduced_id(cs: CaseExecutionState) -> str | None:
    return cs.reduced_candidate.candidate_id if cs.reduced_candidate is not None else None


def export_generation_bundle(store: RunStore, run_id: str) -> GenerationBundle:
    """Every current generated candidate of the run, in case and candidate order."""
    seeds = Planner().seeds(get_run_snapshot(store, run_id))

    def build(
        snapshot: RunSnapshot, fields: dict[str, str], cs: CaseExecutionState
    ) -> Iterator[GenerationBundleRecord]:
        index_of = {r.candidate_id: i for i, r in cs.generated_candidates_by_index.items()}
        for candidate_id, result in cs.generated_candidates.items():
            index = index_of.get(candidate_id)
            yield GenerationBundleRecord(
                **fields,
                candidate_id=candidate_id,
                candidate_index=index,
                seed=seeds[index] if index is not None and index < len(seeds) else None,
                result_blob_ref=cs.generated_candidate_blob_refs.get(candidate_id),
                result=result,
            )

    bundle: GenerationBundle = _export(store, run_id, "generation", build)
    return bundle


def export_reduction_bundle(store: RunStore, run_id: str) -> ReductionBundle:
    """Every case's current reduced candidate."""

    def build(
        snapshot: RunSnapshot, fields: dict[str, str], cs: CaseExecutionState
    ) -> list[ReductionBundleRecord]:
        reduced = cs.reduced_candidate
        if reduced is None:
            return []
        return [ReductionBundleRecord(**fields, candidate_id=reduced.candidate_id, result=reduced)]

    bundle: ReductionBundle = _export(store, run_id, "reduction", build)
    return bundle


def export_parse_bundle(store: RunStore, run_id: str) -> ParseBundle:
    """Every case's current parsed output."""

    def build(
        snapshot: RunSnapshot, fields: dict[str, str], cs: CaseExecutionState
    ) -> list[ParseBundleRecord]:
        if cs.parsed_output is None:
            return []
        candidate_id = _reduced_id(cs) or ""
        return [ParseBundleRecord(**fields, candidate_id=candidate_id, result=cs.parsed_output)]

    bundle: ParseBundle = _export(store, run_id, "parse", build)
    return bundle


def export_score_bundle(store: RunStore, run_id: str) -> ScoreBundle:
    """Every case's current pure-metric scores (workflow scores come with the evaluation
    bundle, whose import re-derives them from the executions)."""

    def build(
        snapshot: RunSnapshot, fields: dict[str, str], cs: CaseExecutionState
    ) -> list[ScoreBundleRecord]:
        refs = zip(snapshot.component_refs.metrics, snapshot.metric_kinds, strict=False)
        pure = {ref.component_id for ref, kind in refs if kind == "pure"}
        return [
            ScoreBundleRecord(
                **fields, candidate_id=_reduced_id(cs), metric_id=metric_id, score=score
            )
            for metric_id, score in cs.successful_scores.items()
            if metric_id in pure
        ]

    bundle: ScoreBundle = _export(store, run_id, "score", build)
    return bundle


def export_evaluation_bundle(store: RunStore, run_id: str) -> EvaluationBundle:
    """Every case's current workflow executions, with the candidate each one judged."""
    judged = {
        k: e.__dict__.get("candidate_id") for k, e in _latest(store, run_id, "evaluation").items()
    }

    def build(
        snapshot: RunSnapshot, fields: dict[str, str], cs: CaseExecutionState
    ) -> list[EvaluationBundleRecord]:
        return [
            EvaluationBundleRecord(
                **fields,
                metric_id=metric_id,
                candidate_id=judged.get((fields["case_key"], metric_id)),
                execution_blob_ref=cs.evaluation_execution_blob_refs.get(metric_id),
                execution=execution,
            )
            for metric_id, execution in cs.evaluation_executions.items()
        ]

    bundle: EvaluationBundle = _export(store, run_id, "evaluation", build)
    return bundle


# ------------------------------------------------------------------------ import
def _coerce(bundle: Any, kind: StageKind, bundle_type: type[B]) -> B:
    """The bundle as ``bundle_type``, checking that its stated kind is ``kind``."""
    if isinstance(bundle, _Bundle):
        stated = bundle.bundle_kind
    elif isinstance(bundle, Mapping):
        stated = bundle.get("bundle_kind")
    else:
        raise TypeError(
            f"a {kind} bundle must be a {bundle_type.__name__} or a JSON object, "
            f"got {type(bundle).__name__}"
        )
    if stated is not None and stated != kind:
        raise ValueError(
            f"this is a {stated!r} bundle, not a {kind!r} one; import it with "
            f"import_{stated}_bundle (or `themis import` without --kind)"
        )
    if isinstance(bundle, bundle_type):
        parsed = bundle
    elif isinstance(bundle, _Bundle):
        raise ValueError(
            f"a {type(bundle).__name__} cannot be imported as a {kind} bundle; "
            f"use the importer of its own kind"
        )
    else:
        parsed = bundle_type.model_validate({**bundle, "bundle_kind": kind})
    if parsed.snapshot.run_id != parsed.run_id:
        raise ValueError(
            f"the {kind} bundle says run {parsed.run_id}, but its snapshot's identity hashes "
            f"to {parsed.snapshot.run_id}; the bundle was edited or belongs to another run"
        )
    return parsed


class _Cases:
    """Resolves a record's case against the snapshot; unknown cases raise ``ValueError``."""

    def __init__(self, snapshot: RunSnapshot) -> None:
        self.run_id = snapshot.run_id
        self.by_key: dict[str, tuple[str, str]] = {}
        self.by_id: dict[str, list[tuple[str, str]]] = {}
        for dataset in snapshot.datasets:
            for case in dataset.cases:
                key = case_key_for(dataset.dataset_id, case.case_id)
                self.by_key[key] = (dataset.dataset_id, case.case_id)
                self.by_id.setdefault(case.case_id, []).append((dataset.dataset_id, key))
        refs = snapshot.component_refs.metrics
        self.metric_ids = {r.component_id for r in refs}

    def fields(self, record: _Record) -> dict[str, Any]:
        """The case fields an event for ``record`` carries."""
        if record.case_key is not None or record.dataset_id is not None:
            key = record.case_key or case_key_for(record.dataset_id or "", record.case_id)
            found = self.by_key.get(key)
            if found is None or found[1] != record.case_id:
                raise ValueError(
                    f"bundle record names case {record.case_id!r} (case_key {key!r}), which "
                    f"is not in run {self.run_id}'s snapshot; export the bundle from the "
                    "run that holds that case"
                )
            dataset_id = found[0]
        else:
            # A legacy record names only its case id: it must be unique across datasets.
            matches = self.by_id.get(record.case_id, [])
            if len(matches) != 1:
                where = "no dataset" if not matches else f"{len(matches)} datasets"
                raise ValueError(
                    f"bundle record names case {record.case_id!r} without a dataset, and "
                    f"{where} of run {self.run_id} hold(s) that case id; add dataset_id "
                    "to the record"
                )
            dataset_id, key = matches[0]
        return {
            "run_id": self.run_id,
            "case_id": record.case_id,
            "dataset_id": dataset_id,
            "case_key": key,
        }

    def metric(self, metric_id: str, record: _Record) -> str:
        if metric_id not in self.metric_ids:
            raise ValueError(
                f"bundle record for case {record.case_id!r} names metric {metric_id!r}, "
                f"which run {self.run_id} does not have (its metrics: "
                f"{sorted(self.metric_ids)})"
            )
        return metric_id


def _checked_ref(ref: str | None, payload: dict[str, Any], what: str) -> str | None:
    if ref is not None and ref != (actual := content_address(payload)):
        raise ValueError(
            f"{what} carries blob ref {ref}, but its payload's content address is {actual}; "
            "the bundle was edited after export, so its payload cannot be trusted"
        )
    return ref


def _append(
    store: RunStore, snapshot: RunSnapshot, events: list[RunEvent], blobs: Sequence[bytes]
) -> int:
    """Persist the snapshot if missing, store blobs, and append ``events`` in one call."""
    store.initialize()
    run_id = snapshot.run_id
    if store.load_snapshot(run_id) is None:
        store.persist_snapshot(snapshot)
    for blob in blobs:
        store.store_blob(blob, "application/json")
    stored = store.query_events(run_id)  # in seq order: the last one holds the maximum
    seq = (stored[-1].seq or 0) if stored else 0
    numbered = []
    for event in events:
        seq += 1
        numbered.append(event.model_copy(update={"seq": seq}))
    if numbered:
        store.append_events(run_id, numbered)
    return len(numbered)


def _payload_event(
    ref: str | None, payload: dict[str, Any], blobs: list[bytes]
) -> tuple[dict[str, Any] | None, str | None]:
    """(inline payload, blob ref): a record exported as a blob is imported as one."""
    if ref is None:
        return payload, None
    blobs.append(canonical_json(payload).encode("utf-8"))
    return None, ref


def _import(
    store: RunStore,
    bundle: Any,
    kind: StageKind,
    to_events: Callable[[_Cases, Any, list[bytes]], list[RunEvent]],
) -> BundleImportResult:
    parsed = _coerce(bundle, kind, _BUNDLE_TYPES[kind])
    cases = _Cases(parsed.snapshot)
    blobs: list[bytes] = []
    events = [e for record in parsed.records for e in to_events(cases, record, blobs)]
    count = _append(store, parsed.snapshot, events, blobs)
    log.info("bundle.imported", run_id=parsed.run_id, kind=kind, events=count)
    return BundleImportResult(
        run_id=parsed.run_id,
        bundle_kind=kind,
        records=len(parsed.records),
        events=count,
    )


def import_generation_bundle(store: RunStore, bundle: Any) -> BundleImportResult:
    """Append the bundle's generations as ``generation_completed`` events."""

    def to_events(cases: _Cases, r: GenerationBundleRecord, blobs: list[bytes]) -> list[RunEvent]:
        payload = r.result.model_dump(mode="json")
        ref = _checked_ref(r.result_blob_ref, payload, f"generation {r.candidate_id!r}")
        inline, ref = _payload_event(ref, payload, blobs)
        return [
            GenerationCompletedEvent(
                **cases.fields(r),
                candidate_id=r.candidate_id,
                candidate_index=r.candidate_index,
                seed=r.seed,
                result=inline,
                result_blob_ref=ref,
            )
        ]

    return _import(store, bundle, "generation", to_events)


def import_reduction_bundle(store: RunStore, bundle: Any) -> BundleImportResult:
    """Append the bundle's reductions as ``reduction_completed`` events."""

    def to_events(cases: _Cases, r: ReductionBundleRecord, blobs: list[bytes]) -> list[RunEvent]:
        return [
            ReductionCompletedEvent(
                **cases.fields(r),
                candidate_id=r.candidate_id,
                source_candidate_ids=list(r.result.source_candidate_ids),
                result=r.result.model_dump(mode="json"),
            )
        ]

    return _import(store, bundle, "reduction", to_events)


def import_parse_bundle(store: RunStore, bundle: Any) -> BundleImportResult:
    """Append the bundle's parsed outputs as ``parse_completed`` events."""

    def to_events(cases: _Cases, r: ParseBundleRecord, blobs: list[bytes]) -> list[RunEvent]:
        return [
            ParseCompletedEvent(
                **cases.fields(r),
                candidate_id=r.candidate_id,
                result=r.result.model_dump(mode="json"),
            )
        ]

    return _import(store, bundle, "parse", to_events)


def import_score_bundle(store: RunStore, bundle: Any) -> BundleImportResult:
    """Append the bundle's scores as ``score_completed`` events."""

    def to_events(cases: _Cases, r: ScoreBundleRecord, blobs: list[bytes]) -> list[RunEvent]:
        return [
            ScoreCompletedEvent(
                **cases.fields(r),
                candidate_id=r.candidate_id,
                metric_id=cases.metric(r.metric_id, r),
                score=r.score.model_dump(mode="json"),
            )
        ]

    return _import(store, bundle, "score", to_events)


def import_evaluation_bundle(store: RunStore, bundle: Any) -> BundleImportResult:
    """Append each execution as ``evaluation_completed`` plus its final score event."""
    from themis.core._judging import final_score

    def to_events(cases: _Cases, r: EvaluationBundleRecord, blobs: list[bytes]) -> list[RunEvent]:
        fields = cases.fields(r)
        metric_id = cases.metric(r.metric_id, r)
        payload = r.execution.model_dump(mode="json")
        ref = _checked_ref(r.execution_blob_ref, payload, f"execution of {metric_id!r}")
        inline, ref = _payload_event(ref, payload, blobs)
        score = final_score(r.execution, metric_id)
        score_event: RunEvent
        if isinstance(score, Score):
            score_event = ScoreCompletedEvent(
                **fields,
                candidate_id=r.candidate_id,
                metric_id=metric_id,
                score=score.model_dump(mode="json"),
            )
        else:
            score_event = ScoreFailedEvent(
                **fields,
                candidate_id=r.candidate_id,
                metric_id=metric_id,
                error=score.model_dump(mode="json"),
            )
        return [
            EvaluationCompletedEvent(
                **fields,
                candidate_id=r.candidate_id,
                metric_id=metric_id,
                execution=inline,
                execution_blob_ref=ref,
            ),
            score_event,
        ]

    return _import(store, bundle, "evaluation", to_events)


_IMPORTERS: dict[str, Callable[[RunStore, Any], BundleImportResult]] = {
    "generation": import_generation_bundle,
    "reduction": import_reduction_bundle,
    "parse": import_parse_bundle,
    "score": import_score_bundle,
    "evaluation": import_evaluation_bundle,
}


def import_bundle(
    store: RunStore, bundle: Mapping[str, Any], *, kind: str | None = None
) -> BundleImportResult:
    """Import a stage bundle by its ``bundle_kind``, or by ``kind`` when it has none."""
    stated = bundle.get("bundle_kind")
    chosen = stated or kind
    if chosen is None:
        raise ValueError(
            "this bundle has no bundle_kind (it predates them); state its kind, one of "
            f"{sorted(_IMPORTERS)} (the CLI's --kind)"
        )
    if chosen == "run":
        raise ValueError("a run bundle is JSON Lines; import it with import_run_bundle(path)")
    importer = _IMPORTERS.get(chosen)
    if importer is None:
        raise ValueError(f"unknown bundle kind {chosen!r}; expected one of {sorted(_IMPORTERS)}")
    return importer(store, bundle if stated else {**bundle, "bundle_kind": chosen})
