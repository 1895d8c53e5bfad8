"""Projections: read models folded incrementally from a run's events (API §2.10)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from themis.core._case_list import CaseList
from themis.core._event_log import event_of
from themis.core._finished import FinishedCases
from themis.core._fold import CANNOT_ADD_A_FAILURE, CASE_HANDLERS, RECORD_HANDLERS, PayloadLoader
from themis.core._fold_speed import ExactFields, paused_gc
from themis.core._projection_cases import (
    BuiltCase,
    CorpusScorer,
    RunShape,
)
from themis.core._projection_cases import (
    build_benchmark_result as _benchmark_from_state,
)
from themis.core._projection_cases import (
    build_case_results as _build_case_results,
)
from themis.core._projection_cases import (
    build_run_result as _run_result_from_state,
)
from themis.core.case_refs import resolve_case_key
from themis.core.events import RunEvent
from themis.core.read_models import (
    BenchmarkResult,
    ConversationTraceRecord,
    EvaluationTraceRecord,
    GenerationTraceRecord,
    TimelineView,
    TraceView,
)
from themis.core.results import (
    CaseResult,
    ExecutionState,
    ProgressSnapshot,
    RunResult,
    _new_case_state,
)
from themis.core.snapshot import RunSnapshot

__all__ = [
    "PROJECTION_NAMES",
    "ProjectionFolder",
    "build_benchmark_result",
    "build_projection",
    "build_run_result",
    "build_timeline_view",
    "build_trace_view",
]

PROJECTION_NAMES: tuple[str, ...] = (
    "snapshot",
    "run_result",
    "benchmark_result",
    "timeline_view",
    "trace_view",
    "execution_state",
)


def check_projection_name(name: str) -> None:
    """Raise ``ValueError`` listing the valid names when ``name`` is not one of them."""
    if name not in PROJECTION_NAMES:
        raise ValueError(f"unknown projection {name!r}; use one of: {', '.join(PROJECTION_NAMES)}")


# A timeline entry is kept as a tuple while folding and becomes a model only when read:
# building one pydantic model per event would dominate the fold's cost.
_TIMELINE_FIELDS = (
    "index",
    "event_type",
    "occurred_at",
    "case_id",
    "dataset_id",
    "case_key",
    "candidate_id",
    "metric_id",
)
_TimelineRow = tuple[int, str, Any, Any, Any, Any, Any, Any]
# The events that can add a trace record (see ``_TraceFold``).
_TRACED = frozenset({"generation_completed", "evaluation_completed"})
# Run events that change no case and leave the stage the cases were finished at: the
# cases a folder let go of (``compress_finished``) stay where they are.
_LEAVE_FINISHED = frozenset({"run_completed", "run_failed"})


def _timeline_row(index: int, event: RunEvent, case_key: str | None = None) -> _TimelineRow:
    """The event's timeline entry; ``case_key`` when the caller has already resolved it."""
    # Declared fields live in ``__dict__``; reading it skips pydantic's slow
    # ``__getattr__`` for fields an event type does not have.
    fields = event.__dict__
    case_id = fields.get("case_id")
    if case_key is None:
        case_key = fields.get("case_key")
        if case_id is not None and not case_key:
            case_key = resolve_case_key(case_id=case_id, dataset_id=fields.get("dataset_id"))
    return (
        index,
        fields["event_type"],
        fields["occurred_at"],
        case_id,
        fields.get("dataset_id"),
        case_key,
        fields.get("candidate_id"),
        fields.get("metric_id"),
    )


def _timeline_view(run_id: str, rows: list[_TimelineRow]) -> TimelineView:
    entries = [dict(zip(_TIMELINE_FIELDS, row, strict=True)) for row in rows]
    return TimelineView.model_validate({"run_id": run_id, "entries": entries})


class _TraceFold:
    """The trace view's records in log order; a later record for a key replaces in place."""

    def __init__(self) -> None:
        self.generation: list[GenerationTraceRecord] = []
        self.conversation: list[ConversationTraceRecord] = []
        self.evaluation: list[EvaluationTraceRecord] = []
        self._generation_at: dict[tuple[str, str], int] = {}
        self._conversation_at: dict[tuple[str, str], int] = {}
        self._evaluation_at: dict[tuple[str, str], int] = {}

    def apply(self, state: ExecutionState, event: Any, key: str) -> None:
        """Add the records ``event`` of case ``key`` contributes, reading payloads the state
        already parsed."""
        event_type = event.event_type
        if event_type == "generation_completed":
            if event.result is None and event.result_blob_ref is None:
                return
            cs = state.case_states.get(key)
            result = cs.generated_candidates.get(event.candidate_id) if cs else None
            if result is None:
                return
            candidate_id: str = event.candidate_id
            if result.trace:
                _put(
                    self.generation,
                    self._generation_at,
                    (key, candidate_id),
                    GenerationTraceRecord(
                        case_id=event.case_id,
                        dataset_id=event.dataset_id,
                        case_key=key,
                        candidate_id=candidate_id,
                        trace_id=f"{candidate_id}:generation",
                        steps=[step.model_dump(mode="json") for step in result.trace],
                    ),
                )
            if result.conversation:
                _put(
                    self.conversation,
                    self._conversation_at,
                    (key, candidate_id),
                    ConversationTraceRecord(
                        case_id=event.case_id,
                        dataset_id=event.dataset_id,
                        case_key=key,
                        candidate_id=candidate_id,
                        trace_id=f"{candidate_id}:conversation",
                        messages=[m.model_dump(mode="json") for m in result.conversation],
                    ),
                )
        elif event_type == "evaluation_completed":
            if event.execution is None and event.execution_blob_ref is None:
                return
            cs = state.case_states.get(key)
            execution = cs.evaluation_executions.get(event.metric_id) if cs else None
            if execution is None:
                return
            _put(
                self.evaluation,
                self._evaluation_at,
                (key, event.metric_id),
                EvaluationTraceRecord(
                    case_id=event.case_id,
                    dataset_id=event.dataset_id,
                    case_key=key,
                    metric_id=event.metric_id,
                    candidate_id=event.candidate_id,
                    execution=execution,
                ),
            )

    def view(self, run_id: str) -> TraceView:
        return TraceView.model_construct(
            run_id=run_id,
            generation_traces=list(self.generation),
            conversation_traces=list(self.conversation),
            evaluation_traces=list(self.evaluation),
        )


def _put(records: list[Any], positions: dict[tuple[str, str], int], key: Any, record: Any) -> None:
    at = positions.get(key)
    if at is None:
        positions[key] = len(records)
        records.append(record)
    else:
        records[at] = record


class ProjectionFolder:
    """Folds one run's events, one at a time, into every projection at once.

    ``apply`` costs O(1) amortised per event (the payload of the event aside); a read
    costs O(size of the answer), and its model is reused until the next event.
    ``load_payload`` resolves ``*_blob_ref`` payloads (a store passes its blob loader);
    ``corpus_scorers`` fill ``BenchmarkResult.metric_aggregates``.

    ``keep_timeline=False`` folds no timeline rows (a row per event, about 0.7 KB per case
    with what it holds on to): for a store, which can build ``timeline_view`` from its log
    when it is read (``keeps_timeline`` tells it to).
    """

    def __init__(
        self,
        snapshot: RunSnapshot,
        *,
        load_payload: PayloadLoader | None = None,
        corpus_scorers: Mapping[str, CorpusScorer] | None = None,
        keep_timeline: bool = True,
    ) -> None:
        self.snapshot = snapshot
        self._shape = RunShape(snapshot)
        self._state = ExecutionState.from_events(
            snapshot.run_id, (), snapshot=snapshot, load_payload=load_payload
        )
        self._timeline: list[_TimelineRow] | None = [] if keep_timeline else None
        self._traces = _TraceFold()
        self._corpus_scorers: dict[str, CorpusScorer] = dict(corpus_scorers or {})
        self._last_seq = 0
        # The last event folded, or the record of it (see ``apply_items``).
        self._last_item: RunEvent | tuple[Any, ...] | None = None
        # Each case's result, built once it is asked for (or once the case has finished,
        # see ``prepare_run_result``) and dropped when an event changes the case.
        self._case_results: dict[str, BuiltCase] = {}
        # The keys of the cases an event changed since the last ``prepare_run_result``,
        # once each (a dict as an ordered set).
        self._touched: dict[str, None] = {}
        self._preparing = False
        # Derived models are built on read and reused until the next event.
        self._run_result: RunResult | None = None
        self._benchmark: BenchmarkResult | None = None
        # The finished cases let go of, compressed (``compress_finished``); None while the
        # folder keeps every case as models.
        self._finished: FinishedCases | None = None
        self._every_case = False

    @property
    def run_id(self) -> str:
        return self._shape.run_id

    @property
    def keeps_timeline(self) -> bool:
        """Whether ``timeline_view`` can be read from this folder (see ``keep_timeline``)."""
        return self._timeline is not None

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last event folded (its position when events carry none)."""
        return self._last_seq

    @property
    def last_event(self) -> RunEvent | None:
        item = self._last_item
        if type(item) is tuple:
            return event_of(item, self._last_seq)
        return item  # type: ignore[return-value]

    @property
    def last_item(self) -> RunEvent | tuple[Any, ...] | None:
        """The last event folded as it was given: an event, or a record (``apply_items``)."""
        return self._last_item

    def set_corpus_scorers(self, corpus_scorers: Mapping[str, CorpusScorer]) -> None:
        """Use these ``corpus_score`` callables for ``metric_aggregates`` from now on."""
        self._corpus_scorers = dict(corpus_scorers)
        self._benchmark = None

    def compress_finished(self, chunk: int = 1024) -> None:
        """From now on, let go of finished cases ``chunk`` at a time, in snapshot order.

        Their states and results are kept as compressed JSON (``themis.core._finished``),
        about 70 bytes a case instead of 4 KB of models. ``run_result`` reads them when its
        cases are used (``CaseList``); ``execution_state`` and ``benchmark_result`` read
        them back for their answer; an event for one of them, or a run event that may change
        every case (``replay_started``, a new ``run_started``), takes them all back into the
        state first. ``keep_every_case`` ends it. For a store's folder that follows a run
        it writes, whose result is kept at rest (the SQLite store): a case's models are
        seldom read once it has finished.
        """
        if self._finished is None and not self._every_case:
            self._finished = FinishedCases(chunk)
            self._preparing = True
            # The cases folded so far are looked at with the next batch's.
            self._touched.update(dict.fromkeys(self._state.case_states))

    def keep_every_case(self) -> None:
        """Take back the cases let go of and keep every case as models from now on
        (``compress_finished`` is then ignored)."""
        self._every_case = True
        if self._finished is not None:
            self._take_back()
            self._finished = None

    def apply(self, event: RunEvent) -> None:
        """Fold one event; an event whose ``seq`` was already folded is skipped."""
        self._fold((event,), (event.seq,))

    def apply_all(self, events: Iterable[RunEvent]) -> None:
        """Fold many events (the collector paused meanwhile, see ``paused_gc``)."""
        events = events if isinstance(events, Sequence) else list(events)
        with paused_gc():
            self._fold(events, [event.seq for event in events])

    def apply_items(self, items: Sequence[Any], seqs: Sequence[int]) -> None:
        """``apply_all`` of a log's items as it keeps them (``EventLog.items_after``):
        events, and records (``record_maker``) with their seqs beside them.

        The records of the pipeline's exact outputs (``exact_makers``) are folded by
        position, with no event built; any other record is rebuilt into its event first.
        """
        with paused_gc():
            self._fold(items, seqs)

    def _fold(self, items: Iterable[Any], seqs: Iterable[int | None]) -> None:
        # One loop for a batch, with what every event touches held in locals: the fold of
        # a run's events is a fifth of its CPU, and attribute traffic a good part of that.
        state = self._state
        apply_case_event = state.apply_case_event
        case_states = state.case_states
        fold = state._fold
        case_results = self._case_results
        timeline = self._timeline
        touched = self._touched if self._preparing else None
        last_seq = self._last_seq
        last_event = self._last_item
        records = RECORD_HANDLERS
        finished = self._finished
        # The key and state of the last record folded on the fast path: a case's records
        # come one after another (its stages run without a suspension between them), and
        # until an item leaves the fast path nothing can change what was checked and done
        # for that key (no failure added, its cached result gone, its key touched).
        fast_key: str | None = None
        fast_state: Any = None
        try:
            for event, seq in zip(items, seqs, strict=True):
                if type(event) is tuple:
                    if seq is None or seq <= last_seq:
                        continue
                    spec = records.get(event[0])
                    if spec is not None and type(event[1]) is ExactFields and timeline is None:
                        # A success the pipeline made as a record, with its exact output
                        # inline: as the fast path below, read by position.
                        put, key_at = spec
                        record_key: str | None = event[key_at]
                        if record_key is not None and record_key == fast_key:
                            put(fold, fast_state, event)
                            last_seq = seq
                            last_event = event
                            continue
                        if record_key and record_key not in fold.failed_keys:
                            case_state = case_states.get(record_key)
                            if case_state is None:
                                if finished is not None and self._let_go_of(record_key):
                                    self._take_back()
                                    case_state = case_states.get(record_key)
                                if case_state is None:
                                    case_state = case_states[record_key] = _new_case_state()
                            put(fold, case_state, event)
                            case_results.pop(record_key, None)
                            if touched is not None:
                                touched[record_key] = None
                            last_seq = seq
                            last_event = event
                            fast_key = record_key
                            fast_state = case_state
                            continue
                    event = event_of(event, seq)
                elif seq is not None and seq <= last_seq:
                    continue
                # Declared fields live in ``__dict__``; reading it skips pydantic's slow
                # ``__getattr__`` for fields an event type does not have.
                fast_key = None  # anything below may change what the fast path checked
                fields = event.__dict__
                event_type: str = fields["event_type"]
                case_id = fields.get("case_id")
                index = seq if seq is not None else last_seq + 1
                if case_id is None:
                    if finished is not None and event_type not in _LEAVE_FINISHED:
                        self._take_back()
                    state.apply_event(event)
                    if finished is not None and finished.stage not in (None, state.until_stage):
                        self._take_back()  # their results were built for another stage
                    if event_type == "replay_started":
                        case_results.clear()
                    if timeline is not None:
                        timeline.append(_timeline_row(index, event))
                else:
                    # The case key is worked out once for the state, the cache, the timeline
                    # and the traces.
                    dataset_id = fields.get("dataset_id")
                    key: str = fields.get("case_key") or resolve_case_key(
                        case_id=case_id, dataset_id=dataset_id
                    )
                    handler = CASE_HANDLERS.get(event_type)
                    if handler is not None:
                        case_state = case_states.get(key)
                        if (
                            case_state is not None
                            and event_type in CANNOT_ADD_A_FAILURE
                            and key not in fold.failed_keys
                        ):
                            # A success for a case with no failure (most events): there
                            # is no failure to add or to clear, only the handler to run.
                            handler(fold, case_state, event)
                        else:
                            if case_state is None and finished is not None and self._let_go_of(key):
                                self._take_back()
                            apply_case_event(event, event_type, key)
                    else:
                        state.apply_event(event)
                    if dataset_id is not None:
                        case_results.pop(key, None)
                        if touched is not None:
                            touched[key] = None
                    else:  # an event of an older log: its case may be keyed another way
                        case_results.clear()
                    if timeline is not None:
                        timeline.append(_timeline_row(index, event, key))
                    # An exact generation event's output has no trace and no conversation
                    # (see ``ExactFields``): it adds no trace record.
                    if (
                        event_type in _TRACED
                        and type(event.__pydantic_fields_set__) is not ExactFields
                    ):
                        self._traces.apply(state, event, key)
                last_seq = index
                last_event = event
        finally:
            # Even when an event fails to fold: the ones before it are in the state.
            if last_event is not self._last_item:
                self._last_seq = last_seq
                self._last_item = last_event
                self._run_result = None
                self._benchmark = None
        if finished is not None and self._finished is finished:
            self._let_go()

    def _let_go_of(self, key: str) -> bool:
        """Whether case ``key`` is one of the finished cases let go of."""
        finished = self._finished
        if finished is None or not finished.count:
            return False
        position = self._shape.positions.get(key)
        return position is not None and position < finished.count

    def _let_go(self) -> None:
        """Let go of the finished cases, whole chunks of them in snapshot order, that
        follow the ones let go of already (see ``compress_finished``)."""
        finished = self._finished
        assert finished is not None
        built = self._case_results
        if self._touched:
            touched, self._touched = self._touched, {}
            with paused_gc():
                _build_case_results(self._shape, self._state, touched, built)
        cases = self._shape.cases
        total = len(cases)
        end = max(finished.through, finished.count)
        while end < total and cases[end][2] in built:
            end += 1
        finished.through = end
        chunk = finished.chunk
        stage = self._state.until_stage
        case_states = self._state.case_states
        while finished.through - finished.count >= chunk:
            start = finished.count
            keys = [key for _, _, key in cases[start : start + chunk]]
            entries = [built.get(key) for key in keys]
            for offset, entry in enumerate(entries):
                # A case changed since it was built: the chunk waits for it to finish again.
                if entry is None or entry[1] != stage or keys[offset] not in case_states:
                    finished.through = start + offset
                    return
            if finished.stage is None:
                finished.stage = stage
            completed = failed = 0
            results: list[CaseResult] = []
            for entry in entries:
                assert entry is not None
                results.append(entry[0])
                completed += entry[2] == "completed"
                failed += entry[2] == "failed"
            states = {key: case_states.pop(key) for key in keys}
            for key in keys:
                del built[key]
            finished.add(states, results, completed, failed)

    def _take_back(self) -> None:
        """Make the cases let go of models in the state again; they are let go of anew as
        they are found finished (with the next batch)."""
        finished = self._finished
        if finished is None or not finished.count:
            return
        states = finished.states()
        self._state.case_states.update(states)
        self._touched.update(dict.fromkeys(states))
        finished.clear()

    def _whole_state(self) -> ExecutionState:
        """The state with the cases let go of in it, for a read: the folder's own when it
        has let go of none, else a copy sharing its models."""
        finished = self._finished
        if finished is None or not finished.count:
            return self._state
        whole = self._state.model_copy()
        whole.__dict__["case_states"] = {**finished.states(), **self._state.case_states}
        return whole

    def execution_state(self) -> ExecutionState:
        """A copy of the folded state, safe to keep or change."""
        return self._whole_state().model_copy(deep=True)

    def run_result(self) -> RunResult:
        if self._run_result is None:
            finished = self._finished
            with paused_gc():
                if finished is None or not finished.count:
                    self._run_result = _run_result_from_state(
                        self._shape, self._state, self._case_results
                    )
                else:
                    self._run_result = self._result_of_finished(finished)
            if finished is None:
                self._touched.clear()
        return self._run_result

    def _result_of_finished(self, finished: FinishedCases) -> RunResult:
        """``run_result`` of a folder that let go of cases: theirs read when used."""
        rest = _run_result_from_state(
            self._shape, self._state, self._case_results, start=finished.count
        )
        progress = rest.progress
        return RunResult.model_construct(
            run_id=rest.run_id,
            status=rest.status,
            completed_through_stage=rest.completed_through_stage,
            progress=ProgressSnapshot.model_construct(
                total_cases=progress.total_cases,
                completed_cases=progress.completed_cases + finished.completed,
                failed_cases=progress.failed_cases + finished.failed,
            ),
            cases=CaseList(finished.result_segments, finished.count, rest.cases),
        )

    def prepare_run_result(self) -> None:
        """Build the results of the cases that finished since the last call.

        The writer calls this between batches, while model calls are out, so that the
        read of the result at the end of a run has only the list left to assemble.
        """
        self._preparing = True
        if self._touched:
            touched, self._touched = self._touched, {}
            with paused_gc():
                _build_case_results(self._shape, self._state, touched, self._case_results)

    def benchmark_result(self) -> BenchmarkResult:
        if self._benchmark is None:
            with paused_gc():
                self._benchmark = _benchmark_from_state(
                    self._shape, self._whole_state(), self._corpus_scorers
                )
        return self._benchmark

    def timeline_view(self) -> TimelineView:
        if self._timeline is None:
            raise ValueError(
                f"the folder of run {self.run_id} was made with keep_timeline=False; build "
                "the timeline from the log with build_timeline_view(snapshot, events)"
            )
        with paused_gc():
            return _timeline_view(self.run_id, self._timeline)

    def trace_view(self) -> TraceView:
        return self._traces.view(self.run_id)

    def payload(self, name: str) -> dict[str, Any]:
        """The ``model_dump(mode="json")`` of projection ``name``."""
        check_projection_name(name)
        with paused_gc():
            return self._model(name).model_dump(mode="json")

    def _model(self, name: str) -> BaseModel:
        if name == "snapshot":
            return self.snapshot
        if name == "execution_state":
            return self._whole_state()
        if name == "run_result":
            return self.run_result()
        if name == "benchmark_result":
            return self.benchmark_result()
        if name == "timeline_view":
            return self.timeline_view()
        return self.trace_view()


def _folded(
    snapshot: RunSnapshot,
    events: Iterable[RunEvent],
    load_payload: PayloadLoader | None,
    corpus_scorers: Mapping[str, CorpusScorer] | None = None,
) -> ProjectionFolder:
    folder = ProjectionFolder(snapshot, load_payload=load_payload, corpus_scorers=corpus_scorers)
    folder.apply_all(events)
    return folder


def build_projection(
    name: str,
    snapshot: RunSnapshot,
    events: Iterable[RunEvent],
    *,
    load_payload: PayloadLoader | None = None,
    corpus_scorers: Mapping[str, CorpusScorer] | None = None,
) -> dict[str, Any]:
    """Projection ``name`` of a run as a JSON dict, folded from ``events`` in one pass."""
    check_projection_name(name)
    if name == "snapshot":
        return snapshot.model_dump(mode="json")
    if name == "timeline_view":
        with paused_gc():
            return build_timeline_view(snapshot, events).model_dump(mode="json")
    return _folded(snapshot, events, load_payload, corpus_scorers).payload(name)


def build_run_result(
    snapshot: RunSnapshot,
    events: Iterable[RunEvent],
    *,
    load_payload: PayloadLoader | None = None,
) -> RunResult:
    """The ``RunResult`` of a run: cases in snapshot order, progress for its stage."""
    return _folded(snapshot, events, load_payload).run_result()


def build_benchmark_result(
    snapshot: RunSnapshot,
    events: Iterable[RunEvent],
    *,
    load_payload: PayloadLoader | None = None,
    corpus_scorers: Mapping[str, CorpusScorer] | None = None,
) -> BenchmarkResult:
    """One row per finished (case, metric), with means, counts and corpus aggregates."""
    return _folded(snapshot, events, load_payload, corpus_scorers).benchmark_result()


def build_timeline_view(snapshot: RunSnapshot, events: Iterable[RunEvent]) -> TimelineView:
    """Every event in log order; needs no payloads, so no blob loader."""
    rows: list[_TimelineRow] = []
    last_seq = 0
    with paused_gc():
        for event in events:
            seq = event.seq
            if seq is not None and seq <= last_seq:
                continue
            last_seq = seq if seq is not None else last_seq + 1
            rows.append(_timeline_row(last_seq, event))
        return _timeline_view(snapshot.run_id, rows)


def build_trace_view(
    snapshot: RunSnapshot,
    events: Iterable[RunEvent],
    *,
    load_payload: PayloadLoader | None = None,
) -> TraceView:
    """The latest generation, conversation and evaluation traces, in log order."""
    return _folded(snapshot, events, load_payload).trace_view()
