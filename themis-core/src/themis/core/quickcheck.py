"""``quickcheck``: a run's status, case counts and metric means at a glance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from themis.core.errors import RunNotFoundError

if TYPE_CHECKING:
    from themis.core.protocols import RunStore

__all__ = ["quickcheck"]


def quickcheck(store: RunStore, run_id: str) -> dict[str, Any]:
    """``{run_id, status, total_cases, completed_cases, failed_cases, metric_means, score_rows}``.

    ``score_rows`` is the number of benchmark rows (one per finished case and metric);
    the rows themselves are in ``store.get_projection(run_id, "benchmark_result")``.
    """
    run_result = store.get_projection(run_id, "run_result")
    benchmark = store.get_projection(run_id, "benchmark_result")
    if run_result is None or benchmark is None:
        raise RunNotFoundError(
            f"Unknown run_id: {run_id}; {type(store).__name__} holds no such run "
            "(check the run id and the store it was written to)"
        )
    progress = run_result.get("progress") or {}
    return {
        "run_id": run_id,
        "status": run_result.get("status"),
        "total_cases": int(progress.get("total_cases", 0)),
        "completed_cases": int(progress.get("completed_cases", 0)),
        "failed_cases": int(progress.get("failed_cases", 0)),
        "metric_means": dict(benchmark.get("metric_means") or {}),
        "score_rows": len(benchmark.get("score_rows") or []),
    }
