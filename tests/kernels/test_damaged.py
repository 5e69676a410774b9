"""A crash dump comes from a damaged kernel: each case damages one list of
the 6.1 sample core the way a stray write does (``damage.py``: a cycle away
from the list's head, in memory, never in the file) and runs the command
that walks it.  The command ends, with no traceback and exit code 0, 1 or 3;
a problem line names the damaged structure; what the damage does not touch
is as on the clean core."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from vmcore_tools.census.classes import PageClass
from vmcore_tools.core.stages import failed_stages
from vmcore_tools.leaks.orphans import orphans

from ..conftest import run_cli, sample_core
from . import damage
from .damage import CASES

pytestmark = pytest.mark.vm

#: a damaged run may take this many times the clean run, plus a process's start-up
SLOWER = 2
START_SECONDS = 20


@pytest.fixture(scope="module")
def clean():
    """The 6.1 core, and each command's clean JSON and time."""
    core = sample_core("i40e-leak", "6.1")
    out = {}
    for command in {c[1] for c in CASES.values()}:
        t0 = time.monotonic()
        proc = run_cli(command, "--json", "--quiet", *core.args)
        assert proc.returncode == 0, proc.stderr
        out[command] = (json.loads(proc.stdout), time.monotonic() - t0)
    return core, out


def run_damaged(core, case: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    spec = {"core": str(core.core), "vmlinux": core.vmlinux, "debug": core.debug, "case": case, "args": args}
    return subprocess.run([sys.executable, "-m", "tests.kernels.damage", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout)


def problems(doc: dict) -> list[str]:
    return [*doc.get("problems", []), *doc.get("census", {}).get("problems", []),
            *doc.get("orphans", {}).get("problems", [])]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cycle_in_a_list_is_stated_not_followed(clean, case):
    core, runs = clean
    _, command, says = CASES[case]
    before, seconds = runs[command]
    t0 = time.monotonic()
    proc = run_damaged(core, case, [command, "--json", "--quiet"], timeout=SLOWER * seconds + START_SECONDS)
    took = time.monotonic() - t0
    print(f"{case}: {took:.1f} s damaged, {seconds:.1f} s clean; {proc.stderr.splitlines()[0]}")
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("DAMAGED: "), proc.stderr
    doc = json.loads(proc.stdout)
    named = [p for p in problems(doc) if says in p]
    assert named, problems(doc)
    assert proc.returncode == 3         # a walk stopped at damage: a partial result
    if command == "census":
        if "no kernel writes" in says:      # damaged struct pages, counted as such
            assert doc["classes"]["damaged"] > 0 and doc["damaged_ranges"]
        else:                               # a cycle in a free list: every block still found
            assert doc["classes"] == before["classes"]
        assert doc["total_pages"] == before["total_pages"]
    elif command == "report":
        assert doc["census"]["total_pages"] == before["census"]["total_pages"]
        assert doc["census"]["release"] == before["census"]["release"]
    else:
        clean_caches = {c["name"]: c for c in before["caches"]}
        # the caches listed before the damage are listed as they were
        assert doc["caches"] and all(clean_caches[c["name"]] == c for c in doc["caches"])


def test_noise_over_struct_pages_is_counted_as_damaged_not_classed(clean):
    """64 KiB of random bytes over 1,024 struct pages: the pages whose
    struct page holds a state no kernel writes are ``damaged`` (and listed
    as ranges, and the result is partial); every page keeps its clean class
    or is damaged, every page outside the noise keeps its clean class, and
    no damaged page is an orphan.  A random struct page escapes the tests
    (``census.damage``) only where its words happen to form a state a page
    can have: 78 of 1,024 did before the node and zone fields of the flags
    were tested, which then took the class their random flags said; a
    random node field names this one-node guest's node once in 1,024
    pages, and none of the 1,024 escapes now."""
    core, _ = clean
    prog = core.program()
    before = orphans(prog)
    noisy = core.program()
    what, writes = damage.struct_page_noise(noisy)
    damage.damage(noisy, writes)
    after = orphans(noisy)
    pfns = np.arange(damage.noise_pfns(noisy).start, damage.noise_pfns(noisy).stop)
    was, now = before.census.classes, after.census.classes
    outside = np.ones(was.size, bool)
    outside[pfns] = False
    assert (was[outside] == now[outside]).all(), np.flatnonzero(outside & (was != now))[:10]
    hit = now[pfns] == PageClass.DAMAGED
    assert ((now[pfns] == was[pfns]) | hit).all()
    assert hit.sum() >= pfns.size - 2, hit.sum()
    assert after.census.totals()["damaged"] == hit.sum()
    assert all(pfns[0] <= p and p + n <= pfns[-1] + 1 for p, n in after.census.damaged)
    # the damaged struct pages, and the free list one of them was on (cut there, read back from its head)
    assert failed_stages(after.census.problems) in (["struct pages"], ["free lists", "struct pages"])
    assert not set(after.found.pfn.tolist()) & set(pfns[hit].tolist())
    assert set(after.found.pfn.tolist()) <= set(before.found.pfn.tolist())
