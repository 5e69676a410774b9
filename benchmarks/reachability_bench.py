"""Reachability on sample cores: objects traced, how many are unreachable
(the false-unreachable rate on the no-leak cores, where nothing is lost),
the pages held only by unreachable memory, and the time and memory it costs
next to the orphan report.

    .venv/bin/python benchmarks/reachability_bench.py [--scenario no-leak i40e-leak] [--kernel 5.10 6.1 ...]

Each core runs in a fresh process, so peak RSS is the run's own.  It
builds a core that is not cached yet.  Results are recorded in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
sys.path.insert(0, {bench!r})
from peers import memory_kb     # VmHWM: ru_maxrss would hold the RSS exec replaced, a vfork'd parent's
from vmcore_tools.core.target import open_program
from vmcore_tools.leaks.orphans import orphans
from vmcore_tools.leaks.reachability import reachability
args = {args!r}   # the manifest is read by the parent: a 16 GB core's is 1 GB of Python objects
prog = open_program(args[1], args[3], args[5::2])
t0 = time.perf_counter(); r = orphans(prog); t_orphans = time.perf_counter() - t0
rss_orphans = memory_kb()["VmHWM"]
t0 = time.perf_counter(); rr = reachability(r); t_reach = time.perf_counter() - t0
print(json.dumps({{"objects": rr.objects, "unreachable": rr.unreachable, "hidden_pages": rr.hidden_pages,
                  "holders": [h.text for h in rr.holders],
                  "caches": {{c.cache: c.objects for c in rr.caches}},
                  "orphans_s": t_orphans, "reach_s": t_reach, "root_mib": rr.root_bytes >> 20,
                  "traced_mib": rr.traced_bytes >> 20, "rss_orphans_mb": rss_orphans >> 10,
                  "peak_rss_mb": memory_kb()["VmHWM"] >> 10}}))
"""


def main() -> int:
    from sample_cores.__main__ import target_args
    from sample_cores.scenarios import build
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", nargs="+", default=["no-leak", "i40e-leak"])
    ap.add_argument("--kernel", nargs="+", default=["5.10", "6.1", "6.12", "7.3"])
    opts = ap.parse_args()
    print(f"{'core':22} {'objects':>8} {'unreach':>7} {'rate':>9} {'hidden':>6} "
          f"{'orphans s':>9} {'reach s':>7} {'roots MiB':>9} {'traced MiB':>10} {'RSS MB':>11}")
    for scenario in opts.scenario:
        for kernel in opts.kernel:
            core_dir = build(scenario, kernel, log=lambda *_: None)
            child = CHILD.format(repo=str(REPO), bench=str(REPO / "benchmarks"), args=target_args(core_dir))
            out = subprocess.run([sys.executable, "-c", child],
                                 capture_output=True, text=True, check=True).stdout
            d = json.loads(out.splitlines()[-1])
            print(f"{scenario + ' ' + kernel:22} {d['objects']:8} {d['unreachable']:7} "
                  f"{d['unreachable'] / d['objects']:9.2e} {d['hidden_pages']:6} {d['orphans_s']:9.2f} "
                  f"{d['reach_s']:7.2f} {d['root_mib']:9} {d['traced_mib']:10} "
                  f"{d['rss_orphans_mb']:>5}->{d['peak_rss_mb']:<5}")
            for text in d["holders"]:
                print(f"    {text}")
            if d["caches"]:
                print("    unreachable: " + ", ".join(f"{k} {v}" for k, v in d["caches"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
