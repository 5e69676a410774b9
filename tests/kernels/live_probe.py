"""Run inside a live guest: open /proc/kcore the way vmcore-tools does, read
the struct page of every page the test modules logged as leaked, take a census and
look for orphans in a kernel that keeps running while it is read.  Then run
every subcommand with --json on the same program (as the drgn plugin does)
and hand back the documents, for the host to check against the schemas.

While the tool reads, a churn process forces the kernel to change under
it: it maps, touches and unmaps anonymous memory, writes and deletes shmem
files and forks short-lived children (page tables, stacks, slab objects,
free lists), so struct pages and lists change between two reads.

    live_probe.py VMLINUX [DEBUG_INFO ...]
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import time

from pathlib import Path

import drgn
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.mm import pfn_to_page
from drgn.helpers.linux.percpu import per_cpu

from vmcore_tools import open_program
from vmcore_tools.cli.main import run_on
from vmcore_tools.kernel.stacks import thread_size
from vmcore_tools.leaks.orphans import orphans

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sample_cores.manifest import parse_log  # noqa: E402  (the cores' ground-truth parser)

CHURN = """
import mmap, os
n = 0
while True:
    m = mmap.mmap(-1, 8 << 20)
    for off in range(0, 8 << 20, 4096):
        m[off] = 1
    with open(f"/dev/shm/churn{n % 4}", "wb") as f:
        f.write(b"x" * (1 << 20))
    if n % 4 == 3:
        for i in range(4):
            os.unlink(f"/dev/shm/churn{i}")
    m.close()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    n += 1
    print(n, flush=True)
"""


def churned() -> int:
    """Rounds the churn process has finished so far."""
    with open("/tmp/churn.log") as f:
        rounds = f.read().split()
    return int(rounds[-1]) if rounds else 0


os.environ["VMCORE_TOOLS_DEBUG"] = "1"     # a failing command shows where it faulted
prog = open_program(None, sys.argv[1], sys.argv[2:])
records = "".join(p.read_text() for p in sorted(Path("/sys/kernel/debug/vmct_truth").glob("*")))
leaks = [{"pfn": x["pfn"], "refcount": x["refcount"], "ring": x["ring"]} for x in parse_log(records)[0]]
for leak in leaks:
    leak["refcount_read"] = pfn_to_page(prog, leak["pfn"])._refcount.counter.value_()
with open("/tmp/churn.log", "w") as log_file:
    churn = subprocess.Popen([sys.executable, "-c", CHURN], stdout=log_file)
while not churned():
    time.sleep(0.1)
before = churned()
r = orphans(prog)
c = r.census
churn_rounds = churned() - before
referenced = {x.pfn: x.references for x in r.referenced}
#: each CPU's interrupt stack: a word the scan read there was on a stack the CPU was on when read
#: (x86-64: the static per-CPU irq_stack_backing_store; arm64: THREAD_SIZE vmalloc'd at irq_stack_ptr)
cpus = list(for_each_possible_cpu(prog))
if "irq_stack_backing_store" in prog:
    irq_stacks = [(s.address_, s.address_ + drgn.sizeof(s))
                  for s in (per_cpu(prog["irq_stack_backing_store"], cpu) for cpu in cpus)]
elif "irq_stack_ptr" in prog:
    size = thread_size(prog, prog["PAGE_SHIFT"].value_())
    irq_stacks = [(base, base + size) for base in (per_cpu(prog["irq_stack_ptr"], cpu).value_() for cpu in cpus)]
else:
    irq_stacks = []
for leak in leaks:
    leak["class"] = c.class_of(leak["pfn"]).label
    if leak["pfn"] in r.inferred_rules:  # listed in the inferred tier, by its rule
        leak["inferred"] = r.inferred_rules[leak["pfn"]]
    if leak["pfn"] in referenced:        # explains a miss
        leak["referenced_from"] = referenced[leak["pfn"]]
        # the truth of a page a handler left on its CPU's interrupt stack is the
        # CPU's state at the read: in an interrupt, all of that stack is live
        # (no saved stack pointer on a live kernel), and the page is held
        leak["held_on_a_busy_irq_stack"] = all(
            any(lo <= ref.address < hi for lo, hi in irq_stacks) for ref in r.references[leak["pfn"]])


def command(*args: str) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_on(prog, [*args, "--json", "--quiet"])
    return {"rc": rc, "stderr": err.getvalue()[-2000:], "doc": json.loads(out.getvalue()) if rc in (0, 3) else None}


cli = {name: command(name) for name in ("info", "census", "buddy", "slab", "rings", "orphans", "snapshot")}
cli["page"] = command("page", str(leaks[0]["pfn"]))
cli["report"] = command("report", "--html", "/tmp/report.html")
# metrics as the timer runs them: a textfile for node_exporter, written whole
metrics_rc = run_on(prog, ["metrics", "--quiet", "--textfile", "/tmp/vmcore_tools.prom"])
metrics = {"rc": metrics_rc, "text": open("/tmp/vmcore_tools.prom").read() if metrics_rc in (0, 3) else ""}
os.environ["VMCORE_TOOLS_FAIL_STAGE"] = "scan: live re-check"     # the stage only a live kernel has
injected = command("orphans")
del os.environ["VMCORE_TOOLS_FAIL_STAGE"]
churn.kill()
print(json.dumps({"cli": cli, "injected": injected, "metrics": metrics, "target": "/proc/kcore", "churn_rounds": churn_rounds, "classes": c.totals(), "total_pages": c.total_pages,
                  "release": prog["init_uts_ns"].name.release.string_().decode(),
                  "page_pool_marked": prog.type("struct page").has_member("pp_magic"),
                  "leaks": leaks, "problems": c.problems + r.problems,
                  "orphans": [{"pfn": o.pfn, "order": o.order, "refcount": o.refcount,
                               "suspect": o.suspect} for o in r.orphans],
                  "suspects": [{"label": s.label, "netdev": s.netdev, "driver": s.driver}
                               for s in r.suspects]}))
