"""Run inside a live guest with fake_i40e loaded: snapshot, make the leak
grow (fake_i40e's leak_more parameter), snapshot again and diff; then watch
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
from vmcore_tools.report.snapshot import diff, take_snapshot

LEAK_MORE = Path("/sys/module/fake_i40e/parameters/leak_more")


def leaked_pages() -> int:
    """Pages fake_i40e lost so far, by its complete record (vmct_truth.h)."""
    record = Path("/sys/kernel/debug/vmct_truth/fake_i40e").read_text()
    return sum(1 << int(order) for order in re.findall(r"fake_i40e: leaked pfn=\d+ order=(\d+)", record))


vmlinux, debug = sys.argv[1], sys.argv[2:]
prog = open_program(None, vmlinux, debug)
before_log = leaked_pages()
a = take_snapshot(prog)
LEAK_MORE.write_text("8")
grown_log = leaked_pages() - before_log
b = take_snapshot(prog)
d = diff(a, b)

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
    logged = leaked_pages()
    for _ in range(20):         # a replay does not always strand a page: until one is lost
        LEAK_MORE.write_text("3")
        if leaked_pages() > logged:
            break
    step_log_pages.append(leaked_pages() - logged)
    os.kill(watch.pid, signal.SIGCONT)
stderr = watch.stderr.read()
rc = watch.wait(timeout=900)
print(json.dumps({"grown_log_pages": grown_log, "before": a, "after": b, "diff": d,
                  "watch_rc": rc, "watch_svg": SVG.read_text() if SVG.exists() else None,
                  "watch_stderr": stderr[-2000:], "step_log_pages": step_log_pages,
                  "watch": [json.loads(line) for line in lines if line.startswith("{")]}))
