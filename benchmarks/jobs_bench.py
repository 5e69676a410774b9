"""``--jobs``: the census and the report in one process and in several, on
the same cores, interleaved (each command in its own process, three runs,
the fastest wall time kept), with the documents compared (they must be the
same but for their timings).

From the 1- and 2-job times it fits Amdahl's law, ``T(n) = T(1) * (s + (1 -
s) / n)`` (``s``: the part that stays in one process -- start-up, debug
info, the walks, the decisions), and prints what that predicts for 16
cores: a prediction, marked as such, not a measurement.

    .venv/bin/python benchmarks/jobs_bench.py [--cores slab-16g-kdump:6.1 ...] [--jobs 1 2]

Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import BIN  # noqa: E402
from slab_bench import timed_json  # noqa: E402

from sample_cores.__main__ import target_args  # noqa: E402
from sample_cores.scenarios import build  # noqa: E402
from tests.schemas import without_timings  # noqa: E402

COMMANDS = ("census", "report")
PREDICT_FOR = 16


def serial_part(t1: float, t2: float) -> float:
    """Amdahl's ``s`` from the times with 1 and 2 jobs."""
    return min(1.0, max(0.0, 2 * t2 / t1 - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", nargs="+", default=["slab-16g-kdump:6.1", "slab-4g:6.1"],
                    help="SCENARIO:KERNEL of the cores to run on")
    ap.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    opts = ap.parse_args()
    for spec in opts.cores:
        name, kernel = spec.split(":")
        args = target_args(build(name, kernel, log=lambda m: print(m, file=sys.stderr)))
        print(f"\n{name} ({kernel})")
        print(f"{'command':<10} " + " ".join(f"{'-j ' + str(j):>18}" for j in opts.jobs)
              + f"   speedup   serial part   predicted -j {PREDICT_FOR}")
        for command in COMMANDS:
            runs = {j: timed_json([str(BIN / "vmcore-tools"), command, *args, "-j", str(j), "--json", "--quiet"])
                    for j in opts.jobs}
            first = without_timings(runs[opts.jobs[0]][1])
            same = all(without_timings(doc) == first for _, doc in runs.values())
            t = {j: r["seconds"] for j, (r, _) in runs.items()}
            cells = " ".join(f"{t[j]:>7.2f} s {runs[j][0]['rss_mb']:>5.0f} MB" for j in opts.jobs)
            line = f"{command:<10} {cells}"
            if 1 in t and 2 in t:
                s = serial_part(t[1], t[2])
                line += (f"   {t[1] / t[2]:>5.2f}x   {s:>9.2f}     {t[1] * (s + (1 - s) / PREDICT_FOR):>6.2f} s "
                         "(prediction)")
            print(line + ("" if same else "   DOCUMENTS DIFFER"))


if __name__ == "__main__":
    main()
