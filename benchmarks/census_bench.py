"""Census and orphan-report speed and memory on a sample core: prints
pages/s, the reference scan's GB/s, the orphan report against the census,
and peak RSS.

    .venv/bin/python benchmarks/census_bench.py [--scenario i40e-leak] [--kernel 6.1] [--profile]

Each run happens in a fresh process so peak RSS is the census's own.
``--profile`` adds where the census's time goes, in process (the fastest
of three censuses): each stage, and the memmap pass split into reading the
struct pages, decoding their words and judging the class rules.
Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
sys.path.insert(0, {bench!r})
from peers import memory_kb     # VmHWM: ru_maxrss would hold the RSS exec replaced, a vfork'd parent's
from vmcore_tools.core.target import open_program
from vmcore_tools.census.census import census
from vmcore_tools.leaks.orphans import orphans
from vmcore_tools.mm.memmap import CHUNK_PAGES, Memmap
args = {args!r}   # the manifest is read by the parent: a 16 GB core's is 1 GB of Python objects
core, vmlinux, debug = args[1], args[3], args[5::2]
t0 = time.perf_counter(); prog = open_program(core, vmlinux, debug); t_open = time.perf_counter() - t0
split_open = memory_kb(); rss_open = split_open["VmHWM"]
t0 = time.perf_counter(); n = sum(w.nr for w in Memmap.from_program(prog).chunks()); t_read = time.perf_counter() - t0
t0 = time.perf_counter(); c = census(prog); t_census = time.perf_counter() - t0
split_census = memory_kb(); rss_census = split_census["VmHWM"]
t0 = time.perf_counter(); r = orphans(prog); t_orphans = time.perf_counter() - t0
profile = {{}}
if {profile!r}:
    census_module = sys.modules["vmcore_tools.census.census"]
    real_stage, real_rings = census_module.run_stage, census_module.walk_rings
    times = {{}}
    def timed(name, fn):
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
    census_module.run_stage = lambda name, fn, *a, **k: timed(name, lambda: real_stage(name, fn, *a, **k))
    census_module.walk_rings = lambda *a, **k: timed("NIC rings", lambda: real_rings(*a, **k))
    for _ in range(3):
        times.clear()
        t0 = time.perf_counter(); census(prog); times["census"] = time.perf_counter() - t0
        for k, v in times.items():
            profile[k] = min(profile.get(k, v), v)
    m = Memmap.from_program(prog)
    def read_only():
        for s, e in m.ranges:
            for lo in range(s, e, CHUNK_PAGES):
                m._read(lo, min(e, lo + CHUNK_PAGES))      # dropped at once, as the census does
    def read_and_decode():
        for _ in m.chunks():
            pass
    passes = {{"memmap: read": read_only, "memmap: read + decode": read_and_decode}}
    for _ in range(5):          # alternately, fastest of five each: the core's pages are warm for both
        for name, fn in passes.items():
            t0 = time.perf_counter(); fn(); t = time.perf_counter() - t0
            profile[name] = min(profile.get(name, t), t)
print(json.dumps({{"profile": profile, "pages": c.total_pages, "open_s": t_open, "read_s": t_read, "census_s": t_census,
                  "orphans_s": t_orphans, "scan_bytes": r.scan.bytes_scanned, "scan_s": r.scan.seconds,
                  "orphans": len(r.found), "rss_after_census_kb": rss_census,
                  "rss_after_open_kb": rss_open, "split_open": split_open, "split_census": split_census,
                  "peak_rss_kb": memory_kb()["VmHWM"]}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="i40e-leak")
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--profile", action="store_true", help="where the census's time goes, stage by stage")
    args = ap.parse_args()
    from sample_cores.__main__ import target_args
    from sample_cores.scenarios import build
    core_dir = build(args.scenario, args.kernel, log=lambda m: print(m, file=sys.stderr))
    repo = str(Path(__file__).resolve().parent.parent)
    child = CHILD.format(repo=repo, bench=str(Path(__file__).resolve().parent), args=target_args(core_dir),
                         profile=args.profile)
    out = subprocess.run([sys.executable, "-c", child],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    fmt = json.loads((core_dir / "manifest.json").read_text())["core"]["format"]
    print(f"core: {args.scenario} on {args.kernel} ({fmt}), {r['pages']} pages")
    print(f"open (debug info):   {r['open_s']:.2f} s")
    print(f"struct page read:    {r['read_s']:.3f} s  = {r['pages'] / r['read_s'] / 1e6:.1f} M pages/s")
    print(f"full census:         {r['census_s']:.3f} s  = {r['pages'] / r['census_s'] / 1e6:.2f} M pages/s")
    print(f"orphan report:       {r['orphans_s']:.3f} s  = {r['orphans_s'] / r['census_s']:.1f}x the census "
          f"(census + rings + reference scan + evidence; {r['orphans']} orphans)")
    print(f"reference scan:      {r['scan_bytes'] / 2**20:.0f} MiB in {r['scan_s']:.3f} s "
          f"= {r['scan_bytes'] / r['scan_s'] / 1e9:.2f} GB/s")
    print(f"peak RSS:            {r['peak_rss_kb'] / 1024:.0f} MB "
          f"({r['rss_after_open_kb'] / 1024:.0f} MB after loading debug info; "
          f"census adds {(r['rss_after_census_kb'] - r['rss_after_open_kb']) / 1024:.0f} MB "
          f"= {(r['rss_after_census_kb'] - r['rss_after_open_kb']) * 1024 / r['pages']:.1f} bytes/page)")
    so, sc = r["split_open"], r["split_census"]
    print(f"resident after open:   {so['RssAnon'] / 1024:.0f} MB anonymous, {so['RssFile'] / 1024:.0f} MB mapped files")
    print(f"resident after census: {sc['RssAnon'] / 1024:.0f} MB anonymous, {sc['RssFile'] / 1024:.0f} MB mapped files "
          "(debug info; on kdump also libkdumpfile's window on the dump)")
    if args.profile:
        print_profile(r["profile"], r["pages"])
    return 0


def print_profile(p: dict, pages: int) -> None:
    """The census stage by stage (fastest of three runs each); the memmap
    pass ("struct pages") split into read, decode and the class rules."""
    print(f"\nwhere the census's {p['census']:.3f} s go ({pages / p['census'] / 1e6:.2f} M pages/s in process):")
    for name, s in sorted(p.items(), key=lambda kv: -kv[1]):
        if name != "census" and not name.startswith("memmap"):
            print(f"  {name:28} {s:7.3f} s  {100 * s / p['census']:5.1f}%")
    read, decode = p["memmap: read"], p["memmap: read + decode"] - p["memmap: read"]
    rules = p.get("struct pages", 0.0) - read - decode
    print("  the memmap pass (struct pages) split:")
    for name, s in (("read the struct pages", read), ("decode their words", decode), ("class rules", rules)):
        print(f"    {name:26} {s:7.3f} s  = {pages / max(s, 1e-9) / 1e6:7.1f} M pages/s")


if __name__ == "__main__":
    sys.exit(main())
