"""Run the PERFORMANCE.md scenarios, each in its own process, and print one JSON line each.

    uv run python benchmarks/run.py                 # every scenario at full size
    uv run python benchmarks/run.py --quick         # small N, under a minute (CI)
    uv run python benchmarks/run.py --only P1,P3 --repeat 3
    uv run python benchmarks/run.py --only P1 --compare-rev HEAD~3          # HEAD~3 vs tree
    uv run python benchmarks/run.py --only P2 --compare-set event_batch_size=256 \\
        event_batch_size=1024

With ``--repeat K`` every number is the median of K runs (rounds are interleaved, so a
noisy minute hits every scenario alike). A comparison runs the same scenarios under two
revisions (a git worktree of each in a temp dir, put first on PYTHONPATH) or two runtime
settings, alternating A and B, and adds a ratio line per scenario. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE_SOURCES = (
    "themis-core/src",
    "themis-builtins/src",
    "themis-store-sqlite/src",
    "themis-otel/src",
)


@dataclass(frozen=True)
class Job:
    """One scenario process: its script, its arguments and a label for the output."""

    scenario: str
    script: str
    args: tuple[str, ...] = ()
    timeout_s: float = 1800.0

    @property
    def key(self) -> str:
        return " ".join((self.scenario, *self.args))


def full_jobs() -> list[Job]:
    return [
        Job("P1", "p1_overhead.py", ("--n", "10000")),
        Job("P1", "p1_overhead.py", ("--n", "100000")),
        Job("P2", "p2_sqlite.py", ("--n", "10000")),
        Job("P2", "p2_sqlite.py", ("--n", "100000")),
        Job("P3", "p3_concurrency.py", ("--n", "2000", "--concurrency", "64")),
        Job("P3", "p3_concurrency.py", ("--n", "10000", "--concurrency", "512")),
        Job("P4", "p4_memory.py", ("--n", "100000", "--variant", "memory")),
        Job("P4", "p4_memory.py", ("--n", "100000", "--variant", "sqlite")),
        Job("P5", "p5_resume.py", ("--n", "100000")),
        Job("P6", "p6_startup.py", ("--samples", "10")),
        Job("P7", "p7_rejudge.py", ("--n", "10000")),
        Job("P8", "p8_otel.py", ("--n", "10000", "--variant", "untraced")),
        Job("P8", "p8_otel.py", ("--n", "10000", "--variant", "otel")),
    ]


def quick_jobs() -> list[Job]:
    quick = 120.0
    return [
        Job("P1", "p1_overhead.py", ("--n", "500"), quick),
        Job("P1", "p1_overhead.py", ("--n", "2000"), quick),
        Job("P2", "p2_sqlite.py", ("--n", "500"), quick),
        Job("P2", "p2_sqlite.py", ("--n", "2000"), quick),
        Job("P3", "p3_concurrency.py", ("--n", "256", "--concurrency", "64"), quick),
        Job("P3", "p3_concurrency.py", ("--n", "1024", "--concurrency", "512"), quick),
        Job("P4", "p4_memory.py", ("--n", "2000", "--variant", "memory"), quick),
        Job("P4", "p4_memory.py", ("--n", "2000", "--variant", "sqlite"), quick),
        Job("P5", "p5_resume.py", ("--n", "1000"), quick),
        Job("P6", "p6_startup.py", ("--samples", "1"), quick),
        Job("P7", "p7_rejudge.py", ("--n", "300"), quick),
        Job("P8", "p8_otel.py", ("--n", "500", "--variant", "untraced"), quick),
        Job("P8", "p8_otel.py", ("--n", "500", "--variant", "otel"), quick),
    ]


@dataclass
class Side:
    """One setting under which jobs run: a source tree on PYTHONPATH and runtime settings."""

    name: str
    pythonpath: str | None = None
    settings: tuple[str, ...] = ()
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# -- running one job -----------------------------------------------------------------------


def run_job(job: Job, side: Side) -> list[dict[str, Any]]:
    """Run ``job`` in a fresh interpreter and return the JSON records it printed."""
    command = [sys.executable, str(HERE / job.script), *job.args]
    for pair in side.settings:
        command += ["--set", pair]
    env = dict(os.environ)
    if side.pythonpath:
        env["PYTHONPATH"] = side.pythonpath
    else:
        env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            cwd=str(HERE),
            timeout=job.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [_failure(job, side, f"timed out after {job.timeout_s:.0f} s")]
    took = time.perf_counter() - start
    records = []
    for text in done.stdout.splitlines():
        text = text.strip()
        if not text.startswith("{"):
            continue  # anything else a scenario prints is not a result
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict) and "scenario" in record:
            records.append(record)
    if done.returncode != 0 or not records:
        tail = done.stderr.strip().splitlines()[-5:]
        return [_failure(job, side, f"exit code {done.returncode}: " + " | ".join(tail))]
    _progress(f"{side.name:>8}  {job.key:<45} {took:6.1f} s")
    return records


def _failure(job: Job, side: Side, message: str) -> dict[str, Any]:
    _progress(f"{side.name:>8}  {job.key:<45} FAILED {message}")
    return {
        "scenario": job.scenario,
        "variant": "error",
        "n": None,
        "concurrency": None,
        "wall_s": None,
        "cases_per_s": None,
        "us_per_case": None,
        "peak_rss_mb": None,
        "efficiency": None,
        "ok": False,
        "error": message,
    }


def _progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# -- medians and ratios --------------------------------------------------------------------


def _record_key(record: dict[str, Any]) -> str:
    return f"{record['scenario']}|{record.get('variant')}|{record.get('n')}|" + str(
        record.get("concurrency")
    )


def median_record(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first record with every numeric field replaced by its median over ``records``."""
    merged = dict(records[0])
    if len(records) == 1:
        return merged
    for key, value in records[0].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        if key in ("n", "concurrency", "samples"):
            continue
        merged[key] = round(statistics.median(values), 4)
    merged["repeat"] = len(records)
    merged["ok"] = all(r.get("ok", True) for r in records)
    wall = [r["wall_s"] for r in records if isinstance(r.get("wall_s"), (int, float))]
    if wall:
        merged["wall_s_runs"] = [round(w, 4) for w in wall]
    return merged


def add_flatness(records: list[dict[str, Any]]) -> None:
    """On the larger-N line of P1 and P2, the per-case cost relative to the smaller N."""
    for scenario in ("P1", "P2"):
        lines = sorted(
            (r for r in records if r["scenario"] == scenario and r.get("us_per_case")),
            key=lambda r: r["n"],
        )
        if len(lines) >= 2:
            small, large = lines[0], lines[-1]
            large["per_case_vs_n"] = f"{large['n']}/{small['n']}"
            large["per_case_ratio"] = round(large["us_per_case"] / small["us_per_case"], 3)


def add_overhead(records: list[dict[str, Any]]) -> None:
    """On each traced P8 line, its wall and CPU time over those of the untraced run of that N.

    ``overhead_ratio`` divides the medians; ``overhead_ratio_runs`` pairs the runs of each
    round (the two variants ran back to back, so a noisy minute hits both alike).
    """
    baselines = {
        r["n"]: r for r in records if r["scenario"] == "P8" and r.get("variant") == "untraced"
    }
    for traced in records:
        if traced["scenario"] != "P8" or traced.get("variant") != "otel":
            continue
        base = baselines.get(traced["n"])
        if base is None or not base.get("wall_s") or not traced.get("wall_s"):
            continue
        traced["overhead_vs"] = "otel/untraced"
        traced["overhead_ratio"] = round(traced["wall_s"] / base["wall_s"], 3)
        if base.get("cpu_s") and traced.get("cpu_s"):
            traced["cpu_overhead_ratio"] = round(traced["cpu_s"] / base["cpu_s"], 3)
        runs, base_runs = traced.get("wall_s_runs"), base.get("wall_s_runs")
        if runs and base_runs and len(runs) == len(base_runs):
            traced["overhead_ratio_runs"] = [
                round(t / b, 3) for t, b in zip(runs, base_runs, strict=True)
            ]


def ratio_record(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> dict[str, Any]:
    """How B compares with A on one scenario (> 1 means B is faster / smaller)."""
    out: dict[str, Any] = {
        "scenario": a["scenario"],
        "variant": a.get("variant"),
        "n": a.get("n"),
        "concurrency": a.get("concurrency"),
        "compare": {"a": names[0], "b": names[1]},
        "wall_s_a": a.get("wall_s"),
        "wall_s_b": b.get("wall_s"),
    }
    if a.get("wall_s") and b.get("wall_s"):
        out["speedup_b_over_a"] = round(a["wall_s"] / b["wall_s"], 3)
    if a.get("cpu_s") and b.get("cpu_s"):
        out["cpu_speedup_b_over_a"] = round(a["cpu_s"] / b["cpu_s"], 3)
    if a.get("peak_rss_mb") and b.get("peak_rss_mb"):
        out["peak_rss_ratio_b_over_a"] = round(b["peak_rss_mb"] / a["peak_rss_mb"], 3)
    if a.get("rss_per_case_kb") and b.get("rss_per_case_kb"):
        out["rss_per_case_ratio_b_over_a"] = round(b["rss_per_case_kb"] / a["rss_per_case_kb"], 3)
    return out


# -- revisions -----------------------------------------------------------------------------


@contextmanager
def revision_tree(revision: str) -> Iterator[str | None]:
    """A worktree of ``revision`` in a temp dir (None: the working tree itself).

    An existing directory is taken as a source tree as it stands (a checkout with a patch
    applied, say), so uncommitted changes can be compared too.
    """
    if revision in (".", "WORKTREE", "worktree"):
        yield None
        return
    if os.path.isdir(revision):
        yield os.pathsep.join(
            os.path.join(os.path.abspath(revision), source) for source in PACKAGE_SOURCES
        )
        return
    with tempfile.TemporaryDirectory(prefix="themis-bench-rev-") as root:
        tree = os.path.join(root, "tree")
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", tree, revision],
            check=True,
        )
        try:
            yield os.pathsep.join(os.path.join(tree, source) for source in PACKAGE_SOURCES)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", tree], check=False
            )


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small N; the whole run < 1 min")
    parser.add_argument("--repeat", type=int, default=1, metavar="K", help="report medians of K")
    parser.add_argument("--only", default="", help="comma-separated scenario ids, e.g. P1,P3")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a RuntimeConfig field for every run (repeatable)",
    )
    compare = parser.add_mutually_exclusive_group()
    compare.add_argument(
        "--rev",
        metavar="REV",
        help="measure git revision (or source directory) REV instead of the working tree",
    )
    compare.add_argument(
        "--compare-rev",
        nargs="+",
        metavar="REV",
        help="A [B]: run under git revision (or source directory) A and B "
        "(default B: the working tree, '.')",
    )
    compare.add_argument(
        "--compare-set",
        nargs=2,
        metavar=("A", "B"),
        help='two settings, each "key=value[,key=value]", e.g. event_batch_size=256',
    )
    args = parser.parse_args(argv)
    if args.compare_rev is not None and len(args.compare_rev) > 2:
        parser.error("--compare-rev takes one or two revisions")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def select(jobs: list[Job], only: str) -> list[Job]:
    wanted = {s.strip().upper() for s in only.split(",") if s.strip()}
    return [j for j in jobs if not wanted or j.scenario in wanted]


def run_rounds(jobs: list[Job], sides: list[Side], repeat: int) -> None:
    """Run every job under every side ``repeat`` times, alternating sides and jobs."""
    for _ in range(repeat):
        for job in jobs:
            for side in sides:
                for record in run_job(job, side):
                    side.records.setdefault(_record_key(record), []).append(record)


def summaries(side: Side) -> list[dict[str, Any]]:
    lines = [median_record(records) for records in side.records.values()]
    add_flatness(lines)
    add_overhead(lines)
    return lines


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = select(quick_jobs() if args.quick else full_jobs(), args.only)
    if not jobs:
        _progress(f"no scenario matches --only {args.only!r}")
        return 2
    settings = tuple(args.set)
    if args.compare_set:
        a, b = args.compare_set
        sides = [Side(a, settings=(*settings, a)), Side(b, settings=(*settings, b))]
        run_rounds(jobs, sides, args.repeat)
        return report_comparison(sides)
    if args.compare_rev:
        rev_a = args.compare_rev[0]
        rev_b = args.compare_rev[1] if len(args.compare_rev) == 2 else "."
        with revision_tree(rev_a) as path_a, revision_tree(rev_b) as path_b:
            sides = [
                Side(rev_a, pythonpath=path_a, settings=settings),
                Side(rev_b, pythonpath=path_b, settings=settings),
            ]
            run_rounds(jobs, sides, args.repeat)
        return report_comparison(sides)
    with revision_tree(args.rev or ".") as path:
        side = Side(args.rev or "tree", pythonpath=path, settings=settings)
        run_rounds(jobs, [side], args.repeat)
    lines = summaries(side)
    for record in lines:
        emit(record)
    return 0 if all(r.get("ok", True) for r in lines) else 1


def report_comparison(sides: list[Side]) -> int:
    a, b = sides
    lines_a = {_record_key(r): r for r in summaries(a)}
    lines_b = {_record_key(r): r for r in summaries(b)}
    ok = True
    for key, record in lines_a.items():
        emit(record | {"side": a.name})
        other = lines_b.get(key)
        if other is not None:
            emit(other | {"side": b.name})
            emit(ratio_record(record, other, (a.name, b.name)))
        ok = ok and record.get("ok", True) and (other or {}).get("ok", True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
