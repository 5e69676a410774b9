"""Debian's arm64 kernels (sample_cores/arch.py): the same guests as on
amd64 -- the i40e leak and the shapes of vmct_shapes, the blocks of
vmct_blocks, the decoys of vmct_workload -- on QEMU's virt machine, their
modules cross-built, their userspace an arm64 root of Debian packages.

What differs and is tested here: the page tables (arm64's descriptors,
``arch.arm64``), the image's absolute symbols (``features.image_symbol``),
the stacks (``thread.cpu_context.sp``, vmalloc'd interrupt stacks at
``irq_stack_ptr``) and the GICv3 ITS's level-2 tables (``gic_its``)."""

from __future__ import annotations

import numpy as np
import pytest

from vmcore_tools import orphans
from vmcore_tools.kernel.fdt import fdt_neighbours
from vmcore_tools.kernel.gic_its import its_level2_tables
from vmcore_tools.kernel.stacks import dead_irq_stack_spans
from vmcore_tools.leaks.verdict import verdict

from ..conftest import assert_census_whole, cli_json, sample_core
from .test_drgn_plugin import drgn_session

pytestmark = pytest.mark.vm
#: Debian's arm64 lines; 6.1's runs in make test
ARM64 = ("6.1-arm64", "6.12-arm64", "6.12-arm64-16k")


#: the cores: a QMP dump on each line, and a real kdump kernel's capture
#: (makedumpfile -c -d 31) on 6.1's; only 6.1's dump in make test
CORES = [pytest.param((scenario, line), id=f"{scenario}-{line}",
                      marks=() if (scenario, line) == ("i40e-leak", "6.1-arm64") else (pytest.mark.full,))
         for scenario, line in (*(("i40e-leak", line) for line in ARM64), ("i40e-leak-kdump", "6.1-arm64"))]


@pytest.fixture(scope="module", params=CORES)
def arm64(request):
    core = sample_core(*request.param)
    return core, orphans(core.program())


def within(a: int, b: int, rel: float) -> bool:
    return abs(a - b) <= rel * max(a, b)


def test_the_core_is_arm64_and_says_so(arm64):
    core, r = arm64
    doc = cli_json("info", *core.args)
    assert doc["machine"] == "aarch64"
    assert doc["page_size"] == 1 << r.census.prog["PAGE_SHIFT"].value_()


def test_the_census_matches_the_kernels_counters(arm64):
    core, r = arm64
    c = r.census
    assert_census_whole(c)
    t = c.totals()
    for ours, counter in ((("anon",), "anon"), (("file", "shmem"), "file"),
                          (("page_table",), "page_tables"), (("vmalloc", "kernel_stack"), "vmalloc")):
        assert within(sum(t[o] for o in ours), c.counters[counter], 0.01), (ours, t, c.counters)


def test_exactly_the_planted_leaks_are_orphaned(arm64):
    """Every page the modules lost is orphaned and nothing else: the
    kernel's own tables (swapper_pg_dir's and the KPTI trampoline's lower
    levels), the image's .bss up to its absolute ``__bss_stop``, the live
    parts of the stacks and the ITS's level-2 tables are all read."""
    core, r = arm64
    assert {o.pfn for o in r.orphans} == set(core.expected_orphans())
    assert not r.problems
    kinds = {leak["ring"] for leak in core.manifest["planted_leaks"]}
    assert {"eth2/0", "irq-stack", "idle-request", "lru-list", "table", "page-pool"} <= kinds


def test_the_its_level2_table_is_held_by_its_level1_entry(arm64):
    """QEMU's GICv3 ITS on virt has an indirect device table: the level-2
    table of the devices in use is named only by its level-1 entry."""
    core, r = arm64
    tables = its_level2_tables(r.census.prog, r.census.memmap)
    assert tables, "no indirect ITS table: nothing for the root to decide"
    for pfn, (at, _, what) in tables.items():
        assert any(ref.address == at for ref in r.references.get(pfn, [])), (pfn, r.references.get(pfn))


def test_an_interrupt_stack_is_dead_below_the_cpus_stack_pointer(arm64):
    """Each CPU's interrupt stack (vmalloc'd) is known, and the page an
    interrupt handler left its address on (vmct_shapes' irq-stack) is
    orphaned."""
    core, r = arm64
    prog = r.census.prog
    spans = dead_irq_stack_spans(prog)
    assert set(spans) == set(range(prog["nr_cpu_ids"].value_()))
    assert all(lo < hi for lo, hi in spans.values())
    lost = [leak["pfn"] for leak in core.manifest["planted_leaks"] if leak["ring"] == "irq-stack"]
    assert lost and set(lost) <= {o.pfn for o in r.orphans}


def test_the_pages_beside_the_fdt_in_its_block_mapping_are_not_held_by_it(arm64):
    """arm64 6.1 maps the FDT at the fixmap in whole 2 MiB blocks
    (``fixmap_remap_fdt()``): the buddy allocator's pages beside it there
    are mapped, and held by nothing for that.  (A planted page-pool page
    landed there on one 6.1-arm64 build and was taken as held.)  The 6.12
    lines map the FDT page by page: nothing is beside it."""
    core, r = arm64
    c = r.census
    vas, pfns = c.page_tables.kernel_pages(c.memmap.page_shift)
    beside = fdt_neighbours(c.prog, vas, pfns, c.memmap.page_shift)
    fdt = c.prog["initial_boot_params"].value_()
    huge = c.page_tables.kernel_huge_vas
    by_block = bool(((huge <= fdt) & (fdt < huge + (c.page_tables.kernel_huge_pages << c.memmap.page_shift)
                                        .astype(np.uint64))).any())
    assert (beside.sum() > 0) == by_block, "a block-mapped FDT maps pages beside it, one mapped page by page none"
    spans = set(vas[beside].tolist())
    assert not any(ref.kind == "kernel mapping" and ref.address in spans
                   for refs in r.references.values() for ref in refs)
    allocated = [p for p in pfns[beside].tolist() if c.class_of(p).label not in ("free", "free_pcp", "reserved")]
    print(f"{int(beside.sum())} pages beside the FDT, {len(allocated)} of them allocated")


def test_the_drgn_plugin_reports_on_an_arm64_core(arm64):
    """``vmcore-tools report`` in a drgn session on the arm64 core, as on amd64."""
    core, _ = arm64
    run = drgn_session(core, """
from drgn.commands import run_command
print("report rc", run_command(prog, "vmcore-tools report --quiet --fail-on-leak"))
""")
    assert run.returncode == 0, run.stderr
    assert "report rc 1" in run.stdout and "i40e rx buffers of eth2" in run.stdout, run.stdout[-2000:]


def test_a_clean_arm64_core_has_no_leak():
    core = sample_core("no-leak", "6.1-arm64")
    r = orphans(core.program())
    assert r.orphans == [], [(o.pfn, o.order, o.refcount) for o in r.orphans]
    assert verdict(r).startswith("No orphaned page")
