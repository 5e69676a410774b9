"""How vmcore-tools and its peers scale with memory: every tool of peers.py
on the benchmark guests of 1, 4, 8 and 16 GB (``scale-*g`` sample cores: a
quarter of memory in page cache, a quarter in anon -- up to 8 GB; the 16 GB
guest has the 8 GB guest's workload and more free memory -- the i40e leak
planted), then a least-squares line through the points per tool,
extrapolated to a 128 GB and a 1 TB host.  The same sizes as kdump-compressed cores
(-d 31, written by makedumpfile in a kdump capture kernel) get their own fit.

    .venv/bin/python benchmarks/scaling.py [--kernel 6.1] [--sizes 1 4 8 16] [--no-kdump]

Building the cores the first time takes a few minutes each (TCG guests; the
16 GB dump is a 16 GB file).  Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import print_core, run_core  # noqa: E402

#: 4 KiB pages on the hosts we extrapolate to
HOSTS = {"128 GB": 128 << 18, "1 TB": 1 << 28}


def fit(pages: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares ``value = fixed + per_page * pages``; a tool that does
    not grow with memory (a negative slope is noise) gets its mean as fixed."""
    per_page, fixed = np.polyfit(np.array(pages, float), np.array(values, float), 1)
    if per_page < 0:
        return float(np.mean(values)), 0.0
    return fixed, per_page


def print_fit(runs: list[dict], title: str) -> None:
    """Fixed cost and cost per page of every tool over ``runs``, extrapolated."""
    pages = [r["pages"] for r in runs]
    print(f"\nScaling fit, {title}, over {', '.join(str(p) for p in pages)} pages "
          f"(fixed + per page; each tool's own process)")
    cols = "".join(f" {h + ' s':>10} {h + ' RSS':>12}" for h in HOSTS)
    print(f"{'tool':32} {'fixed s':>8} {'us/page':>8} {'fixed MB':>9} {'B/page':>7} "
          f"{'anon MB':>8} {'anon B/p':>8}{cols}")
    for name in runs[0]["results"]:
        rs = [r["results"][name] for r in runs]
        if any(r["rc"] != 0 for r in rs):
            print(f"{name:32} failed on at least one size")
            continue
        t0, tp = fit(pages, [r["seconds"] for r in rs])
        m0, mp = fit(pages, [r["rss_mb"] * 2**20 for r in rs])
        a0, ap = fit(pages, [r["anon_mb"] * 2**20 for r in rs])
        line = f"{name:32} {t0:8.2f} {tp * 1e6:8.3f} {m0 / 2**20:9.0f} {mp:7.1f} {a0 / 2**20:8.0f} {ap:8.1f}"
        for n in HOSTS.values():
            line += f" {t0 + tp * n:10.1f} {(m0 + mp * n) / 2**30:10.2f}GB"
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--no-kdump", action="store_true", help="ELF cores only")
    args = ap.parse_args()
    formats = [("ELF", "")] + ([] if args.no_kdump else [("kdump-compressed -d 31", "-kdump")])
    fits = []
    for title, suffix in formats:
        runs = [run_core(f"scale-{gb}g{suffix}", args.kernel) for gb in args.sizes]
        for run in runs:
            print_core(run)
        fits.append((runs, title))
    for runs, title in fits:
        print_fit(runs, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
