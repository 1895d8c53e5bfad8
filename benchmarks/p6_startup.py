"""P6: start-up. ``python -c "import themis"`` against ``python -c "pass"`` measured in the same
run (interleaved, median of ``--samples``), and ``themis quick-eval inline`` end to end.

Each line's ``cpu_s`` is the median CPU time (user + system) of the child processes it timed:
on a shared machine it is the steadier figure, since time spent waiting for a core is not in it.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

import _common as common

QUICK_EVAL = ["quick-eval", "inline", "--input", '"20+22"', "--expected-output", '"20+22"']


# An installed package runs from compiled bytecode: let the children write and use .pyc
# files even where the environment turns that off (PYTHONDONTWRITEBYTECODE).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wall(command: list[str], cpu: list[float] | None = None) -> float:
    """The wall time of ``command``; its CPU time is appended to ``cpu`` when given."""
    cpu_before = _children_cpu_s()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=_ENV)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command} failed ({done.returncode}): {done.stderr[-2000:]}")
    if cpu is not None:
        cpu.append(_children_cpu_s() - cpu_before)
    return wall


def _themis_command() -> list[str]:
    """The console script next to this interpreter (what users type), else ``-m themis``."""
    script = os.path.join(os.path.dirname(sys.executable), "themis")
    if os.path.exists(script) and not os.environ.get("PYTHONPATH"):
        return [script]
    found = shutil.which("themis")
    if found and not os.environ.get("PYTHONPATH"):
        return [found]
    # Under a compared revision (PYTHONPATH set) go through the interpreter, so the script's
    # own interpreter line cannot pick another tree.
    return [sys.executable, "-m", "themis"]


def main() -> None:
    args = common.arguments(__doc__ or "", samples=10)
    python = sys.executable
    bare: list[float] = []
    imported: list[float] = []
    quick: list[float] = []
    imported_cpu: list[float] = []
    quick_cpu: list[float] = []
    themis = _themis_command()
    _wall([python, "-c", "import themis"])  # warm the file cache and any .pyc writes
    _wall([*themis, *QUICK_EVAL])
    for _ in range(args.samples):
        bare.append(_wall([python, "-c", "pass"]))
        imported.append(_wall([python, "-c", "import themis"], imported_cpu))
        quick.append(_wall([*themis, *QUICK_EVAL], quick_cpu))
    pass_s = statistics.median(bare)
    import_s = statistics.median(imported)
    common.emit(
        common.line(
            "P6",
            "import",
            n=None,
            wall_s=import_s,
            peak_rss=None,
            python_pass_s=round(pass_s, 4),
            import_over_pass_s=round(import_s - pass_s, 4),
            samples=args.samples,
            min_wall_s=round(min(imported), 4),
            cpu_s=round(statistics.median(imported_cpu), 4),
        )
        | {"peak_rss_mb": None}
    )
    common.emit(
        common.line(
            "P6",
            "quick-eval",
            n=1,
            wall_s=statistics.median(quick),
            samples=args.samples,
            min_wall_s=round(min(quick), 4),
            cpu_s=round(statistics.median(quick_cpu), 4),
            # The largest child this process waited for: a quick-eval run.
            peak_rss=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            command=" ".join(["themis", *QUICK_EVAL]),
        )
        | {"cases_per_s": None, "us_per_case": None}
    )


if __name__ == "__main__":
    main()
