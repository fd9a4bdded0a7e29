#!/usr/bin/env python
"""What the start-up hook adds to every interpreter: `python -c pass` with the hook on vs off.

    .venv/bin/python benchmarks/startup.py [--runs 40]

Prints the median wall time of each and their difference/ratio, measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def _median_wall(env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    on_env = {k: v for k, v in os.environ.items() if k != "LM_EVAL_KINJECT_NO_HOOK"}
    off_env = {**on_env, "LM_EVAL_KINJECT_NO_HOOK": "1"}
    _median_wall(on_env, 3)  # warm the file cache
    on, off = _median_wall(on_env, args.runs), _median_wall(off_env, args.runs)
    print(f"python -c pass, median of {args.runs}: hook on {on * 1e3:.1f} ms, hook off {off * 1e3:.1f} ms, "
          f"added {(on - off) * 1e3:+.1f} ms (ratio {on / off:.2f})")


if __name__ == "__main__":
    main()
