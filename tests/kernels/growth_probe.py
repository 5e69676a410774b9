"""Run inside a live guest with fake_i40e loaded: snapshot, make the leak
grow (fake_i40e's leak_more parameter), snapshot again and diff; then watch
the kernel while the leak keeps growing.  Prints one JSON document.

    growth_probe.py VMLINUX [DEBUG_INFO ...]
"""

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from vmcore_tools import open_program
from vmcore_tools.snapshot import diff, take_snapshot

LEAK_MORE = Path("/sys/module/fake_i40e/parameters/leak_more")


def leaked_pages() -> int:
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    return sum(1 << int(order) for order in re.findall(r"fake_i40e: leaked pfn=\d+ order=(\d+)", log))


vmlinux, debug = sys.argv[1], sys.argv[2:]
prog = open_program(None, vmlinux, debug)
before_log = leaked_pages()
a = take_snapshot(prog)
LEAK_MORE.write_text("8")
grown_log = leaked_pages() - before_log
b = take_snapshot(prog)
d = diff(a, b)

stop = threading.Event()


def keep_leaking() -> None:
    while not stop.is_set():
        LEAK_MORE.write_text("3")
        time.sleep(1)


leaker = threading.Thread(target=keep_leaking)
leaker.start()
SVG = Path("/tmp/growth.svg")
cli = [sys.executable, "-m", "vmcore_tools.cli", "watch", "--interval", "1s", "--count", "5", "--steps", "3",
       "--json", "--quiet", "--svg", str(SVG), "-s", vmlinux, *(x for path in debug for x in ("-d", path))]
try:
    watch = subprocess.run(cli, capture_output=True, text=True, timeout=900)
finally:
    stop.set()
    leaker.join()
print(json.dumps({"grown_log_pages": grown_log, "before": a, "after": b, "diff": d,
                  "watch_rc": watch.returncode, "watch_svg": SVG.read_text() if SVG.exists() else None, "watch_stderr": watch.stderr[-2000:],
                  "watch": [json.loads(line) for line in watch.stdout.splitlines() if line.startswith("{")]}))
