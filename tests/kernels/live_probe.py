"""Run inside a live guest: open /proc/kcore the way vmcore-tools does and
read the struct page of every page fake_i40e logged as leaked."""

import json
import re
import subprocess
import sys

from drgn.helpers.linux.mm import pfn_to_page

from vmcore_tools import open_program
from vmcore_tools.census import census

prog = open_program(None, sys.argv[1])
log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
leaks = [{"pfn": int(p), "refcount": int(r)}
         for p, r in re.findall(r"fake_i40e: leaked pfn=(\d+) order=\d+ refcount=(-?\d+)", log)]
for leak in leaks:
    leak["refcount_read"] = pfn_to_page(prog, leak["pfn"])._refcount.counter.value_()
c = census(prog)
for leak in leaks:
    leak["class"] = c.class_of(leak["pfn"]).label
print(json.dumps({"target": "/proc/kcore", "classes": c.totals(), "total_pages": c.total_pages,
                  "release": prog["init_uts_ns"].name.release.string_().decode(),
                  "leaks": leaks}))
