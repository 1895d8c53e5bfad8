"""Entering and finishing a run: policies, the writer task, case workers, cancellation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from themis.core._compile import CompiledComponents, component_ref
from themis.core._fold_speed import paused_gc
from themis.core._gc_tuning import fewer_collections
from themis.core._limits import RunLimits
from themis.core._observers import Observers
from themis.core._pipeline import STAGE_ORDER, CaseInput, CasePipeline, RunContext
from themis.core._writer import EventWriter, call_store
from themis.core.case_refs import case_key_for
from themis.core.config import RuntimeConfig
from themis.core.errors import (
    FingerprintMismatchError,
    RunExistsError,
    RunNotFoundError,
    StoreError,
)
from themis.core.events import (
    ReplayStartedEvent,
    RunCompletedEvent,
    RunEvent,
    RunFailedEvent,
    RunStartedEvent,
)
from themis.core.logs import get_logger
from themis.core.planner import Planner
from themis.core.results import ExecutionState, RunResult, RunStatus

if TYPE_CHECKING:
    from themis.core.progress import RunProgress
    from themis.core.protocols import RunStore
    from themis.core.snapshot import RunSnapshot

__all__ = ["Replay", "execute"]

log = get_logger(__name__)

_SKIP_STAGES = {"generate", "reduce", "parse", "score", "judge"}


@dataclass(frozen=True)
class Replay:
    stage: str
    metric_ids: list[str] | None = None


def _check_fingerprints(snapshot: RunSnapshot, components: CompiledComponents) -> None:
    refs = snapshot.component_refs
    expected: list[tuple[str, Any]] = [("generator", refs.generator)]
    if refs.selector is not None:
        expected.append(("selector", refs.selector))
    if refs.reducer is not None:
        expected.append(("reducer", refs.reducer))
    expected += [(f"parsers[{i}]", r) for i, r in enumerate(refs.parsers)]
    expected += [(f"metrics[{i}]", r) for i, r in enumerate(refs.metrics)]
    expected += [(f"judge_models[{i}]", r) for i, r in enumerate(refs.judge_models)]
    actual = dict(components.slots())
    for slot, ref in expected:
        component = actual.get(slot)
        current = component_ref(component) if component is not None else None
        if current != ref:
            raise FingerprintMismatchError(
                f"{slot}: the component changed since compile (expected {ref!r}, got "
                f"{current!r}); recompile the experiment (build a new Experiment) to run it"
            )


def _done(state: Any, until: int, pure_ids: Sequence[str], workflow_ids: Sequence[str]) -> bool:
    """True when a stored case has nothing left to do up to the requested stage."""
    if state is None:
        return False
    if (
        state.case_error
        or state.generation_failures
        or state.selection_error
        or state.reduction_error
        or state.parse_error
        or state.score_failures
        or state.evaluation_failures
    ):
        return False
    if not state.generated_candidates_by_index:
        return False
    if until >= STAGE_ORDER["reduce"] and state.reduced_candidate is None:
        return False
    if until >= STAGE_ORDER["parse"] and state.parsed_output is None:
        return False
    if until >= STAGE_ORDER["score"] and any(m not in state.successful_scores for m in pure_ids):
        return False
    if until >= STAGE_ORDER["judge"]:
        for metric_id in workflow_ids:
            execution = state.evaluation_executions.get(metric_id)
            if metric_id not in state.successful_scores or execution is None:
                return False
            if execution.status != "completed" or execution.failures:
                return False
    return True


async def execute(
    snapshot: RunSnapshot,
    components: CompiledComponents,
    *,
    store: RunStore,
    runtime: RuntimeConfig,
    subscribers: Sequence[Any] = (),
    tracing_provider: Any = None,
    workflow_runner: Any = None,
    until_stage: str = "judge",
    policy: str | None = None,
    require_stored: bool = False,
    replay: Replay | None = None,
    progress: RunProgress | None = None,
) -> RunResult:
    """Run (or resume, or replay) ``snapshot`` against ``store`` and return the folded result."""
    if until_stage not in _SKIP_STAGES:
        raise ValueError(
            f"until_stage must be one of generate, reduce, parse, score, judge; got {until_stage!r}"
        )
    run_id = snapshot.run_id
    _check_fingerprints(snapshot, components)
    await call_store(store, store.initialize)
    acquire = getattr(store, "acquire_run", None)
    if acquire is not None:
        await call_store(store, acquire, run_id)
    try:
        with fewer_collections():
            return await _execute_locked(
                snapshot,
                components,
                store=store,
                runtime=runtime,
                subscribers=subscribers,
                tracing_provider=tracing_provider,
                workflow_runner=workflow_runner,
                until_stage=until_stage,
                policy=policy or runtime.existing_run_policy,
                require_stored=require_stored,
                replay=replay,
                progress=progress,
            )
    finally:
        release = getattr(store, "release_run", None)
        if release is not None:
            with anyio.CancelScope(shield=True):
                await call_store(store, release, run_id)


async def _execute_locked(
    snapshot: RunSnapshot,
    components: CompiledComponents,
    *,
    store: RunStore,
    runtime: RuntimeConfig,
    subscribers: Sequence[Any],
    tracing_provider: Any,
    workflow_runner: Any,
    until_stage: str,
    policy: str,
    require_stored: bool,
    replay: Replay | None,
    progress: RunProgress | None,
) -> RunResult:
    run_id = snapshot.run_id
    # Existence first, cheaply: decoding the whole log (or the stored snapshot, which holds
    # every case) is only worth it for real work.
    known = await call_store(store, _has_snapshot_of(store), run_id)
    if not known and (require_stored or replay is not None):
        raise RunNotFoundError(
            f"Unknown run_id: {run_id}; nothing is stored for it in "
            f"{type(store).__name__}, run the experiment first"
        )
    mode = "fresh"
    resuming = False
    if known and replay is None:
        if policy == "error":
            raise RunExistsError(
                f"run {run_id} is already stored and existing_run_policy='error'; "
                "use 'auto', 'resume' or 'rerun'"
            )
        if policy == "rerun":
            await call_store(store, store.clear_run, run_id)
            known = False
        else:
            if policy == "auto":
                # A store that keeps its projections folded (SQLite persists them) answers
                # this without reading the log, so re-running a finished run costs a read.
                done = await _fold_result(store, snapshot, executed=False)
                if (
                    done.status == RunStatus.COMPLETED
                    and done.completed_through_stage is not None
                    and STAGE_ORDER.get(done.completed_through_stage, -1)
                    >= STAGE_ORDER[until_stage]
                ):
                    if progress is not None:
                        total = sum(len(d.cases) for d in snapshot.datasets)
                        progress.start(run_id, total)
                        progress.skipped_cases = total
                        progress.finish()
                    return done
            resuming = True
            mode = "resume"
    elif known:
        resuming = True
    state: ExecutionState | None = None
    next_seq = 0
    shared = False
    if resuming:
        state, next_seq, shared = await _stored_state(store, snapshot)
    if not known:
        await call_store(store, store.persist_snapshot, snapshot)

    observers = Observers(subscribers, tracing_provider)
    writer = EventWriter(
        store,
        run_id,
        next_seq=next_seq,
        batch_size=runtime.event_batch_size,
        flush_interval=runtime.event_flush_interval,
        retry_attempts=runtime.store_retry_attempts,
        retry_delay=runtime.store_retry_delay,
        observers=observers,
        track_failures=progress is not None,
    )
    if replay is not None:
        start_event: RunEvent = ReplayStartedEvent(
            run_id=run_id, stage=replay.stage, metric_ids=replay.metric_ids
        )
        until_stage = "judge"
    else:
        start_event = RunStartedEvent(
            run_id=run_id,
            mode=mode,
            until_stage=until_stage,
            provenance=snapshot.provenance.model_dump(mode="json"),
        )
    if state is not None and not shared:
        state.apply_event(start_event)
    cache_supported = _supports_cache(store)
    planner = Planner()
    ctx = RunContext(
        snapshot=snapshot,
        components=components,
        store=store,
        runtime=runtime,
        limits=RunLimits(runtime),
        writer=writer,
        observers=observers,
        until_stage=until_stage,
        workflow_runner=workflow_runner,
        cache_enabled=cache_supported and runtime.stage_cache,
        read_cache=replay is None,
        allow_generate=replay is None,
        only_metrics=_replayed_metrics(snapshot, replay),
        seeds=planner.seeds(snapshot),
    )
    pipeline = CasePipeline(ctx)
    run_span = observers.start_span(
        "run", {"run_id": run_id, "mode": "replay" if replay else mode, "until_stage": until_stage}
    )
    status = "error"
    if progress is not None:
        progress.start(run_id, sum(len(d.cases) for d in snapshot.datasets))
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        log.info("run.started", mode=mode, until_stage=until_stage, replay=bool(replay))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.run)
                writer.emit(start_event)
                await writer.flush()
                if shared:
                    # The store's folder plans the run: it has the start event folded now.
                    state, _, _ = await _stored_state(store, snapshot)
                await observers.call("before_run", snapshot)
                await _run_cases(ctx, pipeline, state, progress)
                await writer.flush()
                writer.emit(RunCompletedEvent(run_id=run_id, completed_through_stage=until_stage))
                await writer.flush()
                tg.cancel_scope.cancel()
            result = await _fold_result(store, snapshot, executed=True)
            status = "ok" if result.status == RunStatus.COMPLETED else "error"
            if progress is not None:
                progress.finish()
            await observers.call("after_run", result)
            log.info("run.finished", status=result.status.value, cases=len(result.cases))
            return result
        except BaseException as exc:
            if progress is not None:
                progress.finish(aborted=True)
            error = _primary_error(exc)
            await _record_failure(writer, run_id, error)
            if error is exc:
                raise
            # The task group wrapped it: raise the error itself (a StoreError, say), as
            # API §5.6 promises, keeping its own cause.
            raise error from error.__cause__
        finally:
            observers.end_span(run_span, status)
            if observers.tracer is not None:
                # An unreachable collector can block a flush for seconds: keep the loop free.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(observers.force_flush)


def _primary_error(exc: BaseException) -> BaseException:
    """The error a task-group failure stands for: an interrupt, else a store error, else
    the only error in the group; a group of several unrelated errors stays a group."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(reversed(current.exceptions))
        else:
            leaves.append(current)
    for kind in (KeyboardInterrupt, StoreError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if len(leaves) == 1 else exc


async def _record_failure(writer: EventWriter, run_id: str, exc: BaseException) -> None:
    """Best effort: flush what is pending and append ``run_failed``; never mask ``exc``."""
    cancelled = isinstance(exc, (anyio.get_cancelled_exc_class(), KeyboardInterrupt))
    log.warning(
        "run.aborted",
        run_id=run_id,
        cancelled=cancelled,
        error=f"{type(exc).__name__}: {exc}",
    )
    with anyio.CancelScope(shield=True):
        # After a store failure, or when the pending events cannot be written, they are
        # dropped (and redone on resume) so that run_failed alone keeps the log dense.
        pending_error: BaseException | None = exc if isinstance(exc, StoreError) else None
        if pending_error is None:
            try:
                await writer.flush()
            except Exception as error:
                pending_error = error
        if pending_error is not None:
            dropped = writer.discard_pending()
            if dropped:
                log.warning("run.events_dropped", run_id=run_id, events=dropped)
        try:
            writer.emit(
                RunFailedEvent(
                    run_id=run_id,
                    error_message=str(exc) or type(exc).__name__,
                    error_type=type(exc).__name__,
                    cancelled=cancelled,
                )
            )
            await writer.flush()
        except Exception as error:
            writer.discard_pending()
            log.warning("run.failure_not_recorded", run_id=run_id, error=str(error))


async def _stored_state(
    store: RunStore, snapshot: RunSnapshot
) -> tuple[ExecutionState | None, int, bool]:
    """(the stored run's state, its last seq, whether the state is the store's folder's).

    A ``BaseRunStore`` folds the log once, into the folder it keeps for the run's
    projections (or starts that folder from a state kept at rest), and the run plans from
    that folder's state rather than folding the log a second time. The folder goes on
    folding the run's events as they are appended, each after the case that emitted it
    has read what it needed of its own state, so the plan is never changed under a case.
    Any other store hands over its log, and the run folds its own copy.
    """
    from themis.core._fold_state import folded_state
    from themis.core.stores import BaseRunStore

    run_id = snapshot.run_id
    if isinstance(store, BaseRunStore):
        folder = await call_store(store, store.projection_folder, run_id)
        if folder is None:
            return None, 0, False
        return folded_state(folder), folder.last_seq, True
    stored = await call_store(store, store.resume, run_id)
    if stored is None:
        return None, 0, False
    state = ExecutionState.from_events(
        run_id, stored.events, snapshot=snapshot, load_payload=_loader(store)
    )
    return state, max((e.seq or 0 for e in stored.events), default=0), False


def _loader(store: RunStore) -> Any:
    """A payload loader that reads JSON blobs back from ``store``."""
    import json

    def load(ref: str) -> dict[str, Any]:
        found = store.load_blob(ref)
        if found is None:
            raise StoreError(
                f"{type(store).__name__}: blob {ref} is missing; the store lost a payload"
            )
        return dict(json.loads(found[1]))

    return load


def _replayed_metrics(snapshot: RunSnapshot, replay: Replay | None) -> frozenset[str] | None:
    """The metrics a replay may recompute: the named ones; for ``judge``, workflow metrics."""
    if replay is None:
        return None
    if replay.metric_ids:
        return frozenset(replay.metric_ids)
    if replay.stage == "judge":
        refs = snapshot.component_refs.metrics
        return frozenset(
            ref.component_id
            for ref, kind in zip(refs, snapshot.metric_kinds, strict=True)
            if kind != "pure"
        )
    return None


def _supports_cache(store: Any) -> bool:
    from themis.core.stores import BaseRunStore

    method = getattr(type(store), "load_stage_cache", None)
    if method is None:
        return False
    return method is not BaseRunStore.load_stage_cache


async def _run_cases(
    ctx: RunContext, pipeline: CasePipeline, state: Any, progress: RunProgress | None
) -> None:
    snapshot = ctx.snapshot
    until = STAGE_ORDER[ctx.until_stage]
    kinds = snapshot.metric_kinds
    metric_ids = [ref.component_id for ref in snapshot.component_refs.metrics]
    pure_ids = [m for m, k in zip(metric_ids, kinds, strict=True) if k == "pure"]
    workflow_ids = [m for m, k in zip(metric_ids, kinds, strict=True) if k != "pure"]
    case_states = state.case_states if state is not None else {}

    fingerprints = {ref.dataset_id: ref.fingerprint for ref in snapshot.identity.dataset_refs}
    case_digests = ctx.components.case_digests

    def pending() -> Iterator[CaseInput]:
        run_id = snapshot.run_id
        for dataset in snapshot.datasets:
            dataset_id = dataset.dataset_id
            # case_key_for(dataset_id, case_id), its dataset part built once.
            prefix = case_key_for(dataset_id, "")
            # The cases' hashes worked out with the fingerprint the run's identity holds,
            # for exactly these cases (compile_experiment); else each case hashes its own.
            digests = case_digests.get((dataset_id, fingerprints.get(dataset_id, "")))
            if digests is not None and len(digests) != 32 * len(dataset.cases):
                digests = None
            for index, case in enumerate(dataset.cases):
                key = prefix + case.case_id
                prior = case_states.get(key) if case_states else None
                if prior is not None and _done(prior, until, pure_ids, workflow_ids):
                    if progress is not None:
                        progress.skipped_cases += 1
                    continue
                if not ctx.allow_generate and (
                    prior is None or not prior.generated_candidates_by_index
                ):
                    if progress is not None:
                        progress.skipped_cases += 1
                    continue  # replay never calls the generator
                # The ids every event of the case carries, in the dict they all share.
                fields = {
                    "run_id": run_id,
                    "case_id": case.case_id,
                    "dataset_id": dataset_id,
                    "case_key": key,
                }
                yield CaseInput(
                    dataset=dataset,
                    case=case,
                    case_key=key,
                    prior=prior,
                    case_hash=None
                    if digests is None
                    else digests[32 * index : 32 * index + 32].hex(),
                    fields=fields,
                )

    work = pending()
    writer = ctx.writer

    # A fixed pool of workers pulls cases in order: at most max_concurrent_tasks cases are
    # in flight, and no task is spawned per case.
    async def worker() -> None:
        for item in work:
            await pipeline.run(item)
            wait = writer.backpressure()
            if wait is not None:
                await wait

    failed_keys = writer.failed_keys
    if progress is not None and failed_keys is not None:
        # The same loop, counting: a few integer updates per case, no clock, no lock.
        async def worker() -> None:
            for item in work:
                progress.in_flight += 1
                await pipeline.run(item)
                progress.in_flight -= 1
                if item.case_key in failed_keys:
                    failed_keys.discard(item.case_key)
                    progress.failed_cases += 1
                else:
                    progress.completed_cases += 1
                wait = writer.backpressure()
                if wait is not None:
                    await wait

    total = sum(len(d.cases) for d in snapshot.datasets)
    workers = max(1, min(ctx.runtime.max_concurrent_tasks, total))
    async with anyio.create_task_group() as tg:
        # The pool is spawned in doubling batches (1, 2, 4, ...) with a turn of the loop
        # after each, so the first workers take their cases while the rest are spawned:
        # an anyio task costs about 25 us to spawn, and spawning 512 before any case
        # started kept the first model calls, and the run's end, 12 ms late. Doubling
        # keeps the turns few (a turn of a busy loop can be long).
        spawned, batch = 0, 1
        while spawned < workers:
            for _ in range(min(batch, workers - spawned)):
                tg.start_soon(worker)
            spawned += batch
            batch *= 2
            if spawned < workers:
                await anyio.lowlevel.checkpoint()


async def _fold_result(store: RunStore, snapshot: RunSnapshot, *, executed: bool) -> RunResult:
    """The run's ``RunResult``, folded from the stored events."""
    from themis.core._case_list import own_cases
    from themis.core._result_text import run_result_from_json
    from themis.core.stores import BaseRunStore

    if executed:
        # A store whose writer process folded the run kept its result at rest: it is read
        # as another process reads it (a folder here never saw the run).
        elsewhere = getattr(store, "_result_written_elsewhere", None)
        if elsewhere is not None:
            written = await call_store(store, elsewhere, snapshot.run_id)
            if written is not None:
                return written  # type: ignore[no-any-return]
    else:
        # A store that keeps the result of a run at rest answers with it, its cases read
        # when they are used, or with its text.
        stored_of = getattr(store, "_stored_run_result", None)
        stored = await call_store(store, stored_of, snapshot.run_id) if stored_of else None
        if stored is not None:
            return stored  # type: ignore[no-any-return]
        text_of = getattr(store, "_projection_json", None)
        text = await call_store(store, text_of, snapshot.run_id, "run_result") if text_of else None
        if text is not None:
            # A line of cases at a time when the store wrote it so (``_result_text``).
            return run_result_from_json(text)
    if isinstance(store, BaseRunStore):
        # The store's folder has followed the run (folded on append, or caught up here),
        # so its model is the projection: dumping it to JSON and validating that back
        # would cost more than the whole fold did. A run that is not done yet resumes
        # from this same folder.
        folder = await call_store(store, store.projection_folder, snapshot.run_id)
        if folder is None:
            raise RunNotFoundError(f"Unknown run_id: {snapshot.run_id}")
        result: RunResult = folder.run_result()
        # The folder keeps its model for later reads: hand out a list of our own (one
        # whose finished cases are still compressed stays so, ``CaseList``).
        return result.model_copy(update={"cases": own_cases(result.cases)})
    payload = await call_store(store, store.get_projection, snapshot.run_id, "run_result")
    if payload is None:
        raise RunNotFoundError(f"Unknown run_id: {snapshot.run_id}")
    with paused_gc():
        return RunResult.model_validate(payload)


def _has_snapshot_of(store: RunStore) -> Any:
    """``store._has_snapshot`` where the store has it, else a ``load_snapshot`` test."""
    has = getattr(store, "_has_snapshot", None)
    if has is not None:
        return has
    return lambda run_id: store.load_snapshot(run_id) is not None
