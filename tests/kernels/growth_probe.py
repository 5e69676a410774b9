"""Run inside a live guest with fake_i40e loaded: snapshot, make the leak
grow (fake_i40e's leak_more parameter), snapshot again and diff, keeping
the two scans' orphans as sets to say which pages the diff counts; then watch
the kernel, making the leak grow once between each two samples.  Prints one
JSON document.

    growth_probe.py VMLINUX [DEBUG_INFO ...]
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from vmcore_tools import open_program
from vmcore_tools.leaks.orphans import orphans
from vmcore_tools.leaks.evidence import Describer
from vmcore_tools.report.snapshot import diff, snapshot_of

LEAK_MORE = Path("/sys/module/fake_i40e/parameters/leak_more")


def logged() -> list[tuple[int, int]]:
    """(PFN, order) of each allocation fake_i40e lost so far, by its
    complete record (vmct_truth.h), in the order it lost them."""
    record = Path("/sys/kernel/debug/vmct_truth/fake_i40e").read_text()
    return [(int(p), int(o)) for p, o in re.findall(r"fake_i40e: leaked pfn=(\d+) order=(\d+)", record)]


def leaked_pages() -> int:
    """Pages fake_i40e lost so far."""
    return sum(1 << order for _, order in logged())


def orphaned(r) -> dict[int, int]:
    """Head PFN: pages, of each orphaned allocation of an orphan report."""
    return {int(p): 1 << int(o) for p, o in zip(r.found.pfn, r.found.order)}


def why(r, pfns) -> dict[int, dict]:
    """What the scan of ``r`` said of each page of ``pfns``: its class, the
    references it found to its allocation and the inference they rest on."""
    where = Describer(r.census)
    out = {}
    for pfn in pfns:
        head = int(r.census.memmap.head_of(pfn))
        out[pfn] = {"class": r.census.class_of(pfn).label, "head": head,
                    "references": [where(x) for x in r.references.get(head, [])],
                    "inferred": r.inferred_rules.get(head)}
    return out


vmlinux, debug = sys.argv[1], sys.argv[2:]
prog = open_program(None, vmlinux, debug)
before_log = logged()
ra = orphans(prog)
a = snapshot_of(prog, ra)
LEAK_MORE.write_text("8")
lost = logged()[len(before_log):]
grown_log = sum(1 << order for _, order in lost)
rb = orphans(prog)
b = snapshot_of(prog, rb)
d = diff(a, b)
# the orphans as sets: which pages the diff's count is made of
in_a, in_b = orphaned(ra), orphaned(rb)
lost_pfns = {pfn for pfn, _ in lost}
sets = {"lost": sorted(lost_pfns),
        "lost_not_orphaned": why(rb, sorted(lost_pfns - set(in_b))),
        "lost_already_orphaned": sorted(lost_pfns & set(in_a)),
        "appeared": why(rb, sorted(set(in_b) - set(in_a) - lost_pfns)),
        "vanished": why(rb, sorted(set(in_a) - set(in_b))),
        "pages_a": sum(in_a.values()), "pages_b": sum(in_b.values()),
        # pages whose only references the live re-check saw change while
        # read, in either scan (refs.live.drop_unstable says so in problems)
        "unstable": sorted({int(p) for x in ra.problems + rb.problems
                            for p in re.findall(r"^pfn (\d+): its only references changed while read", x)})}

# watch, driven per sample: after each sample's line, watch is stopped
# (SIGSTOP) while the module leaks more, then let go; so every step of the
# series has a leak in it however slowly the guest runs, and nothing leaks
# while a sample is being taken
SVG = Path("/tmp/growth.svg")
SAMPLES = 5
cli = [sys.executable, "-m", "vmcore_tools.cli", "watch", "--interval", "3s", "--count", str(SAMPLES),
       "--steps", "3", "--json", "--quiet", "--svg", str(SVG), "-s", vmlinux,
       *(x for path in debug for x in ("-d", path))]
watch = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
lines, step_log_pages = [], []
for line in watch.stdout:
    lines.append(line)
    if not line.startswith("{") or json.loads(line)["sample"] >= SAMPLES:
        continue
    os.kill(watch.pid, signal.SIGSTOP)
    pages = leaked_pages()
    for _ in range(20):         # a replay does not always strand a page: until one is lost
        LEAK_MORE.write_text("3")
        if leaked_pages() > pages:
            break
    step_log_pages.append(leaked_pages() - pages)
    os.kill(watch.pid, signal.SIGCONT)
stderr = watch.stderr.read()
rc = watch.wait(timeout=900)
print(json.dumps({"grown_log_pages": grown_log, "sets": sets, "before": a, "after": b, "diff": d,
                  "watch_rc": rc, "watch_svg": SVG.read_text() if SVG.exists() else None,
                  "watch_stderr": stderr[-2000:], "step_log_pages": step_log_pages,
                  "watch": [json.loads(line) for line in lines if line.startswith("{")]}))
