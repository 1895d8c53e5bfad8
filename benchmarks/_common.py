"""What every scenario shares: the synthetic data, the generators, the clocks and the output.

A scenario module is run as its own process by ``run.py`` (or by hand) and prints exactly
one JSON object per measurement on stdout. Nothing here is imported by the library.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# The keys every line carries (None where a key does not apply to the scenario).
REQUIRED_KEYS = (
    "scenario",
    "variant",
    "n",
    "concurrency",
    "wall_s",
    "cases_per_s",
    "us_per_case",
    "peak_rss_mb",
    "efficiency",
)

SLEEP_S = 0.05


# -- components ----------------------------------------------------------------------------


class SumGenerator:
    """Answers ``"a+b"`` with the integer sum at once (or after ``delay`` seconds)."""

    version = "1.0"

    def __init__(self, delay: float = 0.0) -> None:
        # Imported here once: an import statement in ``generate`` cost about 1.2 us per call
        # (the package's lazy attribute lookup), a cost of this generator, not of Themis.
        from themis.core.models import GenerationResult

        self._result = GenerationResult
        self.delay = delay
        self.calls = 0
        self.component_id = "bench/sum" if delay == 0 else "bench/sum_sleep"

    def fingerprint(self) -> str:
        return f"bench-sum-{self.delay}"

    async def generate(self, case: Any, ctx: Any) -> Any:
        self.calls += 1
        if self.delay:
            # The run is on asyncio; anyio.sleep would add its backend lookup to every call,
            # a cost of this generator, not of the framework under test.
            await asyncio.sleep(self.delay)
        left, right = str(case.input).split("+")
        return self._result(candidate_id=ctx.candidate_id, final_output=int(left) + int(right))


def dataset(n: int, dataset_id: str = "sums") -> Any:
    """``n`` cases ``"a+b"`` whose expected output is the sum."""
    from themis.core.models import Case, Dataset

    cases = [
        Case(case_id=f"c{i}", input=f"{i}+{i % 97}", expected_output=i + i % 97) for i in range(n)
    ]
    return Dataset(dataset_id=dataset_id, cases=cases)


def experiment(
    n: int,
    *,
    generator: SumGenerator | None = None,
    runtime: dict[str, Any] | None = None,
    judged: bool = False,
) -> Any:
    """The benchmark experiment: the sum generator, exact match (and a rubric judge)."""
    from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
    from themis.core.experiment import Experiment

    metrics: list[Any] = ["builtin/exact_match"]
    judges: list[Any] = []
    if judged:
        metrics.append("builtin/llm_rubric")
        judges.append("builtin/demo_judge")
    return Experiment(
        generation=GenerationConfig(generator=generator or SumGenerator()),
        evaluation=EvaluationConfig(metrics=metrics, judge_models=judges),
        runtime=RuntimeConfig(**(runtime or {})),
        datasets=[dataset(n)],
        # A fixed commit keeps compile from shelling out to git (it is not timed anyway).
        git_commit="benchmark",
    )


def warm_up(*, sqlite: bool = False, judged: bool = False) -> None:
    """Run a 2-case experiment first, so the lazy imports of a first run stay out of the figures.

    Start-up cost is what P6 measures; the other scenarios measure steady running.
    """
    from themis.core.stores import InMemoryRunStore

    tiny = experiment(2, judged=judged)
    tiny.run(store=InMemoryRunStore())
    if sqlite:
        with temp_dir() as root:
            store = sqlite_store(os.path.join(root, "warm.sqlite3"))
            try:
                tiny.run(store=store)
                if judged:
                    tiny.rejudge(store=store)
            finally:
                store.close()


def sqlite_store(path: str) -> Any:
    from themis_store_sqlite import SqliteRunStore

    # THEMIS_BENCH_WRITER_PROCESS=1: the store's writer process (``writer_process=True``).
    # Passed only then: a revision from before the option (``--compare-rev``) has no such
    # parameter.
    if os.environ.get("THEMIS_BENCH_WRITER_PROCESS") == "1":
        return SqliteRunStore(path, writer_process=True)
    return SqliteRunStore(path)


@contextmanager
def temp_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="themis-bench-") as path:
        yield path


# -- measuring -----------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """The peak RSS since the last reset (VmHWM), else the process's lifetime peak."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return kb / 1024


# The CPU time (all threads) of the last ``timed`` call: on a shared machine it is the
# steadier figure, since time spent waiting for a core is not in it.
last_cpu_s = 0.0


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """``(call(), wall seconds)``; the CPU seconds go to ``last_cpu_s``."""
    global last_cpu_s
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    value = call()
    wall = time.perf_counter() - start
    last_cpu_s = time.process_time() - cpu
    return value, wall


def check_result(result: Any, n: int) -> dict[str, Any]:
    """The facts that show a run did its work (a broken optimisation shows up here)."""
    progress = result.progress
    return {
        "status": str(result.status.value),
        "completed_cases": progress.completed_cases,
        "ok": progress.completed_cases == n and result.status.value == "completed",
    }


def line(
    scenario: str,
    variant: str,
    *,
    n: int | None,
    wall_s: float | None,
    concurrency: int | None = None,
    efficiency: float | None = None,
    peak_rss: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One output record with every required key; rates derived from ``n`` and ``wall_s``."""
    rate = per_case = None
    if n and wall_s:
        rate = round(n / wall_s, 1)
        per_case = round(wall_s / n * 1e6, 2)
    record: dict[str, Any] = {
        "scenario": scenario,
        "variant": variant,
        "n": n,
        "concurrency": concurrency,
        "wall_s": None if wall_s is None else round(wall_s, 4),
        "cases_per_s": rate,
        "us_per_case": per_case,
        "peak_rss_mb": round(peak_rss if peak_rss is not None else peak_rss_mb(), 1),
        "efficiency": None if efficiency is None else round(efficiency, 4),
    }
    if wall_s is not None and last_cpu_s:
        record["cpu_s"] = round(last_cpu_s, 4)
    record.update(extra)
    return record


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, sort_keys=False) + "\n")
    sys.stdout.flush()


# -- command line --------------------------------------------------------------------------


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``["event_batch_size=512", ...]`` as RuntimeConfig keyword arguments (JSON values)."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        for item in filter(None, pair.split(",")):
            key, sep, raw = item.partition("=")
            if not sep:
                raise SystemExit(f"--set expects key=value, got {item!r}")
            try:
                settings[key.strip()] = json.loads(raw)
            except ValueError:
                settings[key.strip()] = raw
    return settings


def arguments(description: str, **defaults: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=defaults.get("n", 10_000))
    parser.add_argument("--concurrency", type=int, default=defaults.get("concurrency"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a RuntimeConfig field for the run (repeatable; JSON values)",
    )
    parser.add_argument("--variant", default=defaults.get("variant"))
    parser.add_argument("--phase", default="all", help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=defaults.get("samples", 10))
    return parser.parse_args()


def runtime_settings(args: argparse.Namespace, **base: Any) -> dict[str, Any]:
    settings = dict(base)
    if args.concurrency is not None:
        settings["max_concurrent_tasks"] = args.concurrency
    settings.update(parse_settings(args.set))
    return settings


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def db_option() -> str | None:
    """``--db PATH``: keep the set-up run in this file and reuse it on the next call.

    Taken off the command line before the options every scenario shares are parsed.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=None)
    known, rest = parser.parse_known_args()
    sys.argv[1:] = rest
    db: str | None = known.db
    return db
