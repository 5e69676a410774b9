"""The seed's shape at benchmark size: 60% of a guest's memory leaked by
fake_i40e's 2.3.6 rx bug (``seed-4g``, ``seed-16g`` and their ``-kdump``
twins).  Per core, side by side in one run: ``census`` and ``report`` (each
in its own process, wall time and peak RSS), the report's JSON size, and
recall against the module's complete record of what it lost; then a line
through the points per command, extrapolated to a 128 GB host with 100 GB
leaked and to 1 TB.

    .venv/bin/python benchmarks/seed_bench.py [--kernel 6.1] [--sizes 1 4 16] [--no-kdump]

Building a core the first time takes minutes (a TCG guest leaking page by
page).  Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import BIN, best_of  # noqa: E402
from scaling import HOSTS, fit  # noqa: E402

from sample_cores.__main__ import target_args  # noqa: E402
from sample_cores.scenarios import build  # noqa: E402


def run_core(scenario: str, kernel: str) -> dict:
    path = build(scenario, kernel, log=lambda m: print(m, file=sys.stderr))
    manifest = json.loads((path / "manifest.json").read_text())
    args = target_args(path)
    cli = [str(BIN / "vmcore-tools")]
    census = best_of([*cli, "census", "--json", "--quiet", *args])
    report = best_of([*cli, "report", "--json", "--quiet", *args])
    doc = subprocess.run([*cli, "report", "--json", "--quiet", *args], capture_output=True, text=True)
    pfns = path / "orphans.pfns"
    subprocess.run([*cli, "orphans", "--quiet", "--pfns", str(pfns), *args], capture_output=True, check=True)
    found = {int(line.split()[0]) for line in pfns.read_text().splitlines()}
    pfns.unlink()
    truth = {x["pfn"] for x in manifest["planted_leaks"]}
    pages = manifest["kpageflags"]["pages"]
    return {"scenario": scenario, "format": manifest["core"]["format"], "pages": pages,
            "leaked": len(truth), "found": len(found & truth), "extra": len(found - truth),
            "census": census, "report": report, "json_bytes": len(doc.stdout), "rc": doc.returncode}


def print_core(r: dict) -> None:
    c, rep = r["census"], r["report"]
    recall = r["found"] / r["leaked"] if r["leaked"] else 1.0
    print(f"{r['scenario']} ({r['format']}): {r['pages']} pages, {r['leaked']} allocations leaked")
    print(f"  census  {c['seconds']:7.2f} s  {c['rss_mb']:7.0f} MB RSS  {c['anon_mb']:6.0f} MB anon")
    print(f"  report  {rep['seconds']:7.2f} s  {rep['rss_mb']:7.0f} MB RSS  {rep['anon_mb']:6.0f} MB anon"
          f"   = {rep['seconds'] / c['seconds']:.2f}x the census time, "
          f"{rep['rss_mb'] - c['rss_mb']:+.0f} MB RSS")
    print(f"  report --json {r['json_bytes'] / 1e6:.2f} MB; recall {r['found']}/{r['leaked']} "
          f"({100 * recall:.4f}%), {r['extra']} orphans not in the record; exit {r['rc']}")


def print_fit(runs: list[dict]) -> None:
    pages = [r["pages"] for r in runs]
    print(f"\nFit over {', '.join(map(str, pages))} pages, extrapolated (60% leaked at each point, so the "
          "128 GB row stands for about 77 GB leaked, as the seed's 100 GB)")
    print("  (RSS counts the core's pages the process maps, shared page cache; anon is its own memory)")
    for cmd in ("census", "report"):
        t0, tp = fit(pages, [r[cmd]["seconds"] for r in runs])
        for what in ("rss_mb", "anon_mb"):
            m0, mp = fit(pages, [r[cmd][what] * 2**20 for r in runs])
            cells = "  ".join(f"{h}: {t0 + tp * n:6.1f} s {(m0 + mp * n) / 2**30:5.2f} GB"
                              for h, n in HOSTS.items())
            print(f"  {cmd:7} {what[:-3]:4} {t0:6.2f} s + {tp * 1e6:.3f} us/page, "
                  f"{m0 / 2**20:5.0f} MB + {mp:5.1f} B/page   {cells}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--no-kdump", action="store_true", help="ELF cores only")
    args = ap.parse_args()
    suffixes = [""] + ([] if args.no_kdump else ["-kdump"])
    for suffix in suffixes:
        # 1 GB is the test suite's "seed" core; it has no kdump twin
        runs = [run_core("seed" if gb == 1 else f"seed-{gb}g{suffix}", args.kernel)
                for gb in args.sizes if gb != 1 or not suffix]
        for r in runs:
            print_core(r)
        if len(runs) > 1:
            print_fit(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
