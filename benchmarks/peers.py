"""vmcore-tools beside its peers, on the same core, in one run: wall time and
peak RSS of our ``census`` and ``report``, a naive drgn loop over
``for_each_page()`` (naive_census.py), drgn-crash's ``kmem -i`` / ``kmem -p``
and crash's ``kmem -i`` / ``kmem -p``.

    .venv/bin/python benchmarks/peers.py [--scenario i40e-leak] [--kernel 6.1 ...]

Each tool runs in its own process; its peak RSS (``VmHWM``) and peak
anonymous (private) memory come from sampling /proc/PID/status.  The
census runs once untimed first (warm caches); a tool that takes under 5 s is
run five times: its fastest time and its median peak memory are kept.  A tool
that fails (crash on a kernel newer than it knows) is reported as failed with
its last line of output, not left out.  Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent


def memory_kb(pid: int | str = "self") -> dict[str, int]:
    """``RssAnon``, ``RssFile`` and ``VmHWM`` (the peak resident memory of
    the process's own address space so far) of ``pid`` now, in KiB; zeros
    once it has exited."""
    fields = ("RssAnon", "RssFile", "VmHWM")
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return {k: int(status[k].split()[0]) for k in fields}
    except (OSError, KeyError, ValueError):
        return dict.fromkeys(fields, 0)


def measure(cmd: list[str], stdin: str | None = None) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (MB), its private part, exit code
    and the last line it printed.

    Peak RSS counts file pages mapped into the process: the debug info drgn
    maps, and the window libkdumpfile maps of a compressed dump.  They are
    shared, clean page cache.  It is the child's ``VmHWM``, sampled every
    5 ms (the last sample before it exits), not its ``ru_maxrss``: exec
    records the RSS of the memory it replaces in ``ru_maxrss``
    (``setmax_mm_hiwater_rss()``), and a vfork'd child replaces the
    parent's, so a benchmark that has read a large manifest would lend its
    own size to every command it runs.  ``anon_mb`` is the process's own
    memory: the peak of ``RssAnon``, sampled likewise.
    """
    with tempfile.TemporaryFile("w+") as inp, tempfile.TemporaryFile("w+") as out:
        if stdin is not None:
            inp.write(stdin)
            inp.seek(0)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=inp, stdout=out, stderr=subprocess.STDOUT, text=True)
        anon_kb = hwm_kb = 0
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = memory_kb(proc.pid)
            anon_kb, hwm_kb = max(anon_kb, now["RssAnon"]), max(hwm_kb, now["VmHWM"])
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        # only the tail: kmem -p prints a line per page
        out.seek(max(0, out.seek(0, os.SEEK_END) - 4096))
        lines = [line for line in out.read().splitlines() if line.strip()]
    return {"seconds": wall, "rss_mb": hwm_kb / 1024, "anon_mb": anon_kb / 1024,
            "rc": proc.returncode, "last": lines[-1][:100] if lines else ""}


def best_of(cmd: list[str], stdin: str | None = None, runs: int = 5, quick: float = 5.0) -> dict:
    """``measure``, repeated up to ``runs`` times while a run takes under
    ``quick`` seconds.  Time is the fastest run's; peak RSS and peak anon
    are the medians of the runs: a process's peak memory moves by a few MB
    from run to run (allocator and sampling noise, up to 9 MB seen on the
    census), as much as the whole per-page growth from 1 to 8 GB, so one
    run per size cannot give the slope."""
    done = [measure(cmd, stdin)]
    while len(done) < runs and done[-1]["seconds"] < quick:
        done.append(measure(cmd, stdin))
    best = dict(min(done, key=lambda r: r["seconds"]))
    for key in ("rss_mb", "anon_mb"):
        best[key] = float(np.median([r[key] for r in done]))
    best["runs"] = len(done)
    return best


def tools(core, vmlinux: str, debug: list[str]) -> dict[str, tuple[list[str], str | None]]:
    target = ["-c", str(core), "-s", vmlinux, *(x for d in debug for x in ("-d", d))]
    modules = [x for d in debug if d.endswith(".ko") for x in ("-s", d)]
    crash_in = "{}\nquit\n"
    out = {
        "vmcore-tools census": ([str(BIN / "vmcore-tools"), "census", "--json", "--quiet", *target], None),
        "vmcore-tools report": ([str(BIN / "vmcore-tools"), "report", "--json", "--quiet", *target], None),
        "naive drgn for_each_page loop": ([str(BIN / "drgn"), "-q", "-c", str(core), "-s", vmlinux, *modules,
                                           str(REPO / "benchmarks" / "naive_census.py")], None),
        "drgn-crash kmem -i": ([str(BIN / "drgn-crash"), vmlinux, str(core)], "kmem -i\n"),
        "drgn-crash kmem -p": ([str(BIN / "drgn-crash"), vmlinux, str(core)], "kmem -p\n"),
    }
    if shutil.which("crash"):
        for cmd in ("kmem -i", "kmem -p"):
            out[f"crash {cmd}"] = (["crash", "-s", vmlinux, str(core)], crash_in.format(cmd))
    return out


def run_core(scenario: str, kernel: str) -> dict:
    """Every tool on one sample core: its description, page count and per-tool results."""
    from sample_cores.scenarios import build
    core_dir = build(scenario, kernel, log=lambda m: print(m, file=sys.stderr))
    manifest = json.loads((core_dir / "manifest.json").read_text())
    k = manifest["kernel"]
    core = core_dir / manifest["core"]["file"]
    debug = [*k["test_modules"].values(), k["debug_modules_dir"]]
    runs = tools(core, k["vmlinux"], debug)
    # also the warm-up: the debug info and the core are in the page cache before anything is timed
    doc = subprocess.run(runs["vmcore-tools census"][0], capture_output=True, text=True, check=True).stdout
    results = {name: best_of(cmd, stdin) for name, (cmd, stdin) in runs.items()}
    return {"title": f"{scenario} on {kernel} ({manifest['core']['format']}, "
                     f"{core.stat().st_size / 2**30:.2f} GiB file",
            "pages": json.loads(doc)["total_pages"], "results": results}


def print_core(run: dict) -> None:
    pages, results = run["pages"], run["results"]
    census = results["vmcore-tools census"]
    print(f"\n{run['title']}, {pages} pages)")
    print(f"{'tool':32} {'seconds':>8} {'peak RSS MB':>12} {'anon MB':>8} {'pages/s':>10} {'x census':>9}  result")
    for name, r in results.items():
        ok = r["rc"] == 0
        print(f"{name:32} {r['seconds']:8.2f} {r['rss_mb']:12.0f} {r['anon_mb']:8.0f} "
              f"{pages / r['seconds'] / 1e6:9.2f}M "
              f"{r['seconds'] / census['seconds']:9.1f}  {'ok' if ok else 'FAILED (rc %d): %s' % (r['rc'], r['last'])}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="i40e-leak")
    ap.add_argument("--kernel", nargs="+", default=["6.1"])
    args = ap.parse_args()
    for kernel in args.kernel:
        print_core(run_core(args.scenario, kernel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
