"""P3's ceiling on this machine: the same waves of 50 ms sleeps with no framework at all.

N cases over `--concurrency` asyncio tasks on the loop Themis makes (or the stock loop
with `--stock`), each case a sleep then `--work-us` microseconds of busy work. The
efficiency it prints (ideal / wall, ideal as P3's) is what a run of that shape can reach
here when a case costs that much CPU; P3's own figure is to be read against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from themis.core._loop import _new_loop

SLEEP_S = 0.05


async def _worker(cases: int, work_s: float) -> None:
    for _ in range(cases):
        await asyncio.sleep(SLEEP_S)
        started = time.perf_counter()
        while time.perf_counter() - started < work_s:
            pass


async def _run(n: int, concurrency: int, work_s: float) -> None:
    share, extra = divmod(n, concurrency)
    await asyncio.gather(
        *(_worker(share + (i < extra), work_s) for i in range(concurrency) if share or i < extra)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--work-us", type=float, default=0.0)
    parser.add_argument("--stock", action="store_true", help="asyncio's own selector loop")
    args = parser.parse_args()
    loop = asyncio.new_event_loop() if args.stock else _new_loop()
    try:
        wall = time.perf_counter()
        cpu = time.process_time()
        loop.run_until_complete(_run(args.n, args.concurrency, args.work_us * 1e-6))
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    finally:
        loop.close()
    ideal = args.n / args.concurrency * SLEEP_S
    print(
        json.dumps(
            {
                "scenario": "P3-ceiling",
                "variant": "stock" if args.stock else "themis-loop",
                "n": args.n,
                "concurrency": args.concurrency,
                "work_us": args.work_us,
                "wall_s": round(wall, 4),
                "cpu_s": round(cpu, 4),
                "efficiency": round(ideal / wall, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
