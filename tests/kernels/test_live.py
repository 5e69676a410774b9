"""The live path: the tool runs inside a booted guest against /proc/kcore,
on each kernel line: it opens the kernel, reads planted pages, takes a
census and finds the orphans of a kernel that keeps running while it is
read -- and that a churn process keeps changing (torn reads, forced)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sample_cores.kernels import fetch

from ..conftest import KERNELS, lines, planted_class, run_probe_in_guest
from ..schemas import validate
from .test_metrics import series

pytestmark = pytest.mark.vm
PROBE = Path(__file__).with_name("live_probe.py")


# live on 6.1 in CI (7.3 is there as dumps); the other lines, and arm64's 6.1
# (the tool runs on the guest root's Debian drgn), in make test-all: a live
# guest costs about 4 minutes of a cold run, which took 58 of its 60 in session 24
@pytest.mark.parametrize("kernel", lines(KERNELS, ci=("6.1",)) + lines(("6.1-arm64",), ci=()))
def test_drgn_reads_proc_kcore_in_guest(kernel):
    result = run_probe_in_guest(kernel, PROBE)
    assert result["target"] == "/proc/kcore"
    assert result["release"] == fetch(kernel).abi
    assert result["leaks"], "the guest's test modules logged planted leaks"
    for leak in result["leaks"]:
        assert leak["refcount_read"] == leak["refcount"], leak
        assert leak["class"] == planted_class(leak, result["page_pool_marked"]), leak
    assert sum(result["classes"].values()) == result["total_pages"]
    # the kernel changed under the orphan report: the churn ran while it read
    assert result["churn_rounds"] > 0, result["churn_rounds"]
    # the leak is found live, with nothing else taken for one
    assert_orphans_are_the_planted_leaks(result)
    assert any(s["netdev"] == "eth2" and s["driver"] == "i40e" for s in result["suspects"])
    # every subcommand, live: exit 0 and --json valid against its schema
    for name, run in result["cli"].items():
        assert run["rc"] == 0, (name, run["stderr"])
        validate(run["doc"])
    assert result["cli"]["info"]["doc"]["target"] == "/proc/kcore"
    assert result["cli"]["page"]["doc"]["class"] == "unattributed"
    assert "i40e rx buffers of eth2" in result["cli"]["report"]["doc"]["verdict"]
    # metrics live, as the timer writes them: promtool accepts the textfile, and
    # its orphans and classes are the probe's (the leaks stay put while the kernel runs)
    metrics = result["metrics"]
    assert metrics["rc"] == 0 and shutil.which("promtool"), metrics
    check = subprocess.run(["promtool", "check", "metrics"], input=metrics["text"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    s = series(metrics["text"])
    assert s["vmcore_tools_orphaned_allocations"] == len(result["orphans"])
    assert sum(v for k, v in s.items() if k.startswith("vmcore_tools_memory_bytes{")) == result["total_pages"] * 4096
    # the live re-check failing on purpose: a stated partial result, exit 3
    injected = result["injected"]
    assert injected["rc"] == 3, injected["stderr"]
    validate(injected["doc"])
    assert any(p.startswith("scan: live re-check failed") for p in injected["doc"]["problems"])


#: the production-shaped guests whose dump tests ask for exactly the planted
#: leaks as orphans (test_iommu, test_pti; hosts has its own live test)
SHAPED = ("iommu", "pti")


@pytest.mark.parametrize("scenario", SHAPED)
@pytest.mark.parametrize("kernel", lines(KERNELS, ci=()))
def test_production_shaped_guests_live(kernel, scenario):
    """A production-shaped guest, live: the tool reads /proc/kcore inside it
    (live_probe.py, with its churn process) and finds the planted leaks
    and nothing else, as in the guest's dump."""
    result = run_probe_in_guest(kernel, PROBE, scenario)
    assert result["leaks"] and result["churn_rounds"] > 0
    assert_orphans_are_the_planted_leaks(result)


def assert_orphans_are_the_planted_leaks(result: dict) -> None:
    """A live probe's orphans are its guest's planted leaks, but for those
    the report lists in its inferred tier (see Core.expected_orphans: a
    refcount-1 page after a heap-held alloc_pages_exact() run, taken for
    its tail, never silently held); and a page held only from an interrupt
    stack its CPU was on when read (the irq-stack plant: a live kernel
    saves no stack pointer, so all of a busy interrupt stack is live -- the
    truth of that moment, as the probe recorded it)."""
    found = {o["pfn"] for o in result["orphans"]}
    missed = [leak for leak in result["leaks"] if leak["pfn"] not in found]
    inferred = [leak for leak in missed if leak.get("inferred")]
    busy = [leak for leak in missed if leak.get("held_on_a_busy_irq_stack") and not leak.get("inferred")]
    explained = {leak["pfn"] for leak in inferred + busy}
    # each missed leak with what referenced it, if anything did
    # (as text: pytest cuts the repr of a list of dicts short, and what held a missed page is the point)
    assert len(busy) <= 1 and {leak["pfn"] for leak in missed} == explained, json.dumps(missed, default=str)
    extra = [o for o in result["orphans"] if o["pfn"] not in {leak["pfn"] for leak in result["leaks"]}]
    assert found == {leak["pfn"] for leak in result["leaks"]} - explained, \
        (extra, [result["suspects"][o["suspect"]]["label"] for o in extra if o["suspect"] >= 0])
