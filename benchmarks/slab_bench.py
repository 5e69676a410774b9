"""Kernel memory at scale: slab-heavy guests (``slab-4g``, ``slab-16g`` and
their ``-kdump`` twins), more than half of their memory in 128-byte objects
that vmct_slabfill linked as one long list (16.7 M objects at 4 GB), hash
chains, a red-black tree and page records, a thousand of each lost.

Per core, side by side in one run, each command in its own process, three
times (the fastest wall time; the median peak RSS and anon memory): ``census``, ``report``,
``unreachable`` and ``report --reachability``.  Then what the reference scan
read, per registry entry (what it reads and why: each entry's fact is in
``refs/registry.py``), and its GB/s; and recall against the module's record:
the objects it lost must be unreachable, the pages only its lost records
hold must be named as held only by unreachable memory.

    .venv/bin/python benchmarks/slab_bench.py [--kernel 6.1] [--sizes 4 16] [--no-kdump]

Building a core the first time takes minutes (a TCG guest filling slab
object by object).  Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import BIN, measure  # noqa: E402
from scaling import HOSTS, fit  # noqa: E402

from sample_cores.__main__ import target_args  # noqa: E402
from sample_cores.scenarios import build  # noqa: E402

#: the cache vmct_slabfill's objects come from
CACHE = "vmct_obj"
COMMANDS = {"census": ["census"], "report": ["report"], "unreachable": ["unreachable"],
            "report --reachability": ["report", "--reachability"]}


def timed_json(cmd: list[str], runs: int = 3) -> tuple[dict, dict]:
    """``cmd --json`` run ``runs`` times, measured (a shell that execs it,
    so the measured process is the command's own): the fastest run's time,
    the median peak memory, and the document it wrote."""
    done = []
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        line = f"exec {shlex.join(cmd)} > {shlex.quote(out.name)}"
        for _ in range(runs):
            done.append(measure(["sh", "-c", line]))
        text = Path(out.name).read_text()
    best = dict(min(done, key=lambda r: r["seconds"]))
    for key in ("rss_mb", "anon_mb"):
        best[key] = float(np.median([r[key] for r in done]))
    best["runs"] = runs
    return best, json.loads(text) if text.strip() else {}


def run_core(scenario: str, kernel: str) -> dict:
    path = build(scenario, kernel, log=lambda m: print(m, file=sys.stderr))
    manifest = json.loads((path / "manifest.json").read_text())
    args = target_args(path)
    cli = [str(BIN / "vmcore-tools")]
    runs, docs = {}, {}
    for name, sub in COMMANDS.items():
        cmd = [*cli, *sub, "--json", "--quiet", *args]
        runs[name], docs[name] = timed_json(cmd)
    report, unreach = docs["report"], docs["unreachable"]
    lost = manifest.get("lost_objects", {})
    cache = next((c for c in unreach.get("caches", []) if c["cache"] == CACHE), {"objects": 0})
    hidden = {x["pfn"] for x in manifest.get("hidden", [])}
    named = {p for h in unreach.get("holders", []) for p in h["pfns"]}
    slab_kb = manifest["meminfo_kb"].get("Slab", 0)
    return {"scenario": scenario, "format": manifest["core"]["format"],
            "pages": manifest["kpageflags"]["pages"], "mem_kb": manifest["meminfo_kb"]["MemTotal"],
            "slab_kb": slab_kb, "objects": unreach.get("objects", 0),
            "lost": sum(lost.values()), "lost_by_shape": lost, "unreachable_in_cache": cache["objects"],
            "unreachable": unreach.get("unreachable", 0),
            "hidden": len(hidden), "hidden_found": len(hidden & named), "hidden_extra": len(named - hidden),
            "scan": report.get("orphans", {}).get("scan", {}), "runs": runs}


def print_core(r: dict) -> None:
    print(f"{r['scenario']} ({r['format']}): {r['pages']} pages, slab {r['slab_kb'] >> 10} MB of "
          f"{r['mem_kb'] >> 10} MB ({100 * r['slab_kb'] / r['mem_kb']:.0f}%), {r['objects']} objects traced")
    base = r["runs"]["report"]["seconds"]
    for name, m in r["runs"].items():
        print(f"  {name:22} {m['seconds']:8.2f} s  {m['rss_mb']:7.0f} MB RSS  {m['anon_mb']:6.0f} MB anon"
              f"  = {m['seconds'] / base:5.2f}x report  exit {m['rc']}")
    print(f"  lost objects {r['lost']} {r['lost_by_shape']}: {r['unreachable_in_cache']} unreachable in "
          f"{CACHE}, {r['unreachable'] - r['unreachable_in_cache']} elsewhere")
    print(f"  pages only lost records hold: {r['hidden_found']}/{r['hidden']} named, "
          f"{r['hidden_extra']} named beside them")
    scan = r["scan"]
    if scan:
        print(f"  reference scan: {scan['bytes'] / 2**30:.2f} GiB in {scan['seconds']:.2f} s "
              f"({scan['gb_per_s']:.2f} GB/s); by registry entry:")
        for name, n in sorted(scan.get("bytes_by_root", {}).items(), key=lambda kv: -kv[1]):
            if n >= 1 << 20:
                print(f"    {name:40} {n / 2**20:9.1f} MiB")


def print_fit(runs: list[dict], title: str) -> None:
    """Each command's time and peak RSS as a line through the points, in
    pages, extrapolated to a 128 GB and a 1 TB host with as much of its
    memory in slab objects (a prediction, not a measurement)."""
    pages = [r["pages"] for r in runs]
    print(f"\nFit, {title}, over {', '.join(map(str, pages))} pages, extrapolated (slab at the same share):")
    for name in COMMANDS:
        t0, tp = fit(pages, [r["runs"][name]["seconds"] for r in runs])
        m0, mp = fit(pages, [r["runs"][name]["rss_mb"] * 2**20 for r in runs])
        cells = "  ".join(f"{h}: {t0 + tp * n:7.1f} s {(m0 + mp * n) / 2**30:6.2f} GB" for h, n in HOSTS.items())
        print(f"  {name:22} {t0:6.2f} s + {tp * 1e6:.3f} us/page, {m0 / 2**20:5.0f} MB + {mp:5.1f} B/page   {cells}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--no-kdump", action="store_true", help="ELF cores only")
    args = ap.parse_args()
    for suffix in [""] + ([] if args.no_kdump else ["-kdump"]):
        runs = [run_core(f"slab-{gb}g{suffix}", args.kernel) for gb in args.sizes]
        for r in runs:
            print_core(r)
        if len(runs) > 1:
            print_fit(runs, "kdump" if suffix else "ELF")
    return 0


if __name__ == "__main__":
    sys.exit(main())
