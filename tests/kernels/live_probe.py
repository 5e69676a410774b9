"""Run inside a live guest: open /proc/kcore the way vmcore-tools does, read
the struct page of every page fake_i40e logged as leaked, take a census and
look for orphans in a kernel that keeps running while it is read.  Then run
every subcommand with --json on the same program (as the drgn plugin does)
and hand back the documents, for the host to check against the schemas.

    live_probe.py VMLINUX [DEBUG_INFO ...]
"""

import contextlib
import io
import json
import re
import subprocess
import sys

from drgn.helpers.linux.mm import pfn_to_page

from vmcore_tools import open_program
from vmcore_tools.cli import run_on
from vmcore_tools.orphans import orphans

prog = open_program(None, sys.argv[1], sys.argv[2:])
log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
leaks = [{"pfn": int(p), "refcount": int(r)}
         for p, r in re.findall(r"fake_i40e: leaked pfn=(\d+) order=\d+ refcount=(-?\d+)", log)]
for leak in leaks:
    leak["refcount_read"] = pfn_to_page(prog, leak["pfn"])._refcount.counter.value_()
r = orphans(prog)
c = r.census
referenced = {x.pfn: x.references for x in r.referenced}
for leak in leaks:
    leak["class"] = c.class_of(leak["pfn"]).label
    if leak["pfn"] in referenced:        # explains a miss
        leak["referenced_from"] = referenced[leak["pfn"]]


def command(*args: str) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_on(prog, [*args, "--json", "--quiet"])
    return {"rc": rc, "stderr": err.getvalue()[-2000:], "doc": json.loads(out.getvalue()) if rc == 0 else None}


cli = {name: command(name) for name in ("info", "census", "buddy", "slab", "rings", "orphans", "snapshot")}
cli["page"] = command("page", str(leaks[0]["pfn"]))
cli["report"] = command("report", "--html", "/tmp/report.html")
print(json.dumps({"cli": cli, "target": "/proc/kcore", "classes": c.totals(), "total_pages": c.total_pages,
                  "release": prog["init_uts_ns"].name.release.string_().decode(),
                  "leaks": leaks, "problems": c.problems + r.problems,
                  "orphans": [{"pfn": o.pfn, "order": o.order, "refcount": o.refcount,
                               "suspect": o.suspect} for o in r.orphans],
                  "suspects": [{"label": s.label, "netdev": s.netdev, "driver": s.driver}
                               for s in r.suspects]}))
