"""The page census on real kernels, measured against each core's ground truth.

Reference values: the kernel's own vmstat counters read from the same core
(the state at dump time), and the manifest's /proc/kpageflags counts, which
the guest captured a few seconds before the dump while its workload was still
running (so only slowly moving figures are compared with them).
"""

from __future__ import annotations

import subprocess
import sys

import drgn
import numpy as np
import pytest

from vmcore_tools.census.census import census
from vmcore_tools.census.classes import UNCLAIMED, PageClass
from vmcore_tools.core.features import constant
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.census.walks import page_list_pfns, walk_free_lists

from ..conftest import cli_json, run_cli, sample_core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def leak_census(leak_core):
    return leak_core, census(leak_core.program())


def within(a: int, b: int, rel: float) -> bool:
    return abs(a - b) <= rel * max(a, b)


def test_every_page_in_exactly_one_class(leak_census):
    core, c = leak_census
    totals = c.totals()
    assert sum(totals.values()) == c.total_pages
    assert c.total_pages == c.memmap.valid_pages
    assert totals["unreadable"] == 0, "an ELF dump holds every struct page"
    d = c.decomposition()
    assert d["U"] + d["K"] + d["S"] + d["C"] + d["F"] == d["T"]


def test_free_pages_exactly_match_nr_free_pages(leak_census):
    core, c = leak_census
    assert c.totals()["free"] == c.counters["free"]
    assert not c.problems
    for z in c.zones:
        assert z.blocks_walked == z.blocks_counted, z


@pytest.mark.parametrize("ours,counter", [
    (("anon",), "anon"),
    (("file", "shmem"), "file"),       # NR_FILE_PAGES includes shmem
    (("shmem",), "shmem"),
    (("page_table",), "page_tables"),
    (("vmalloc", "kernel_stack"), "vmalloc"),  # VmallocUsed counts stacks too
])
def test_classes_match_kernel_counters(leak_census, ours, counter):
    core, c = leak_census
    t = c.totals()
    assert within(sum(t[o] for o in ours), c.counters[counter], 0.01), (ours, t, c.counters)


def test_kernel_stacks_match_nr_kernel_stack(leak_census):
    core, c = leak_census
    page_kb = (1 << c.prog["PAGE_SHIFT"].value_()) // 1024
    assert c.totals()["kernel_stack"] * page_kb == c.counters["kernel_stack_kb"]


def test_slab_counts_head_and_tail_pages(leak_census):
    """Slab pages (heads and tails) agree with /proc/kpageflags' KPF_SLAB.

    The kernel's NR_SLAB_* counters are larger: kmalloc_large() pages are
    accounted as unreclaimable slab although they are plain compound pages.
    The gap must cover at least the large kmallocs the workload planted."""
    core, c = leak_census
    slab = c.totals()["slab"]
    assert within(slab, core.manifest["kpageflags"]["flags"]["SLAB"], 0.01)
    large = sum(1 << d["order"] for d in core.manifest["decoys"] if d["kind"] == "large_kmalloc")
    assert c.counters["slab"] - slab >= large


def test_page_tables_agree_with_kpageflags(leak_census):
    core, c = leak_census
    assert within(c.totals()["page_table"], core.manifest["kpageflags"]["flags"]["PGTABLE"], 0.10)


def test_planted_leaks_are_leak_candidates(leak_census):
    """Every page a test module lost is a candidate of the reference scan:
    unattributed, or page_pool for the page lost from a pool."""
    core, c = leak_census
    for leak in core.manifest["planted_leaks"]:
        for pfn in range(leak["pfn"], leak["pfn"] + (1 << leak["order"])):
            assert c.class_of(pfn).label == core.planted_class(c.prog, leak), (leak, pfn)


def test_decoys_are_allocated_kernel_memory(leak_census):
    """Large kmalloc and page_frag pages are allocated kernel memory.  Until
    the reference scan they stay unattributed, except where the kernel marks
    large kmalloc with its page type (``PGTY_large_kmalloc``, 6.15+); they
    must never be taken for free, slab or user memory."""
    core, c = leak_census
    marked = constant(c.prog, "PGTY_large_kmalloc") is not None
    for d in core.manifest["decoys"]:
        want = PageClass.LARGE_KMALLOC if marked and d["kind"] == "large_kmalloc" else None
        assert c.class_of(d["pfn"]) in ((want,) if want else (PageClass.UNATTRIBUTED, PageClass.PAGE_FRAG)), d


def test_classes_do_not_depend_on_the_chunk_size(leak_census):
    """The census reads the memmap a chunk at a time and keeps only the class
    array; a compound page cut by a chunk border (at 97 pages, every slab
    of order >= 1 and every THP is cut somewhere) gets the same classes and
    the same recorded heads as with the default chunks."""
    core, c = leak_census
    small = census(c.prog, chunk_pages=97)
    assert (small.classes == c.classes).all()
    assert (small.memmap.heads == c.memmap.heads).all() and (small.memmap.orders == c.memmap.orders).all()
    starts = np.array([s for s, _ in c.memmap.ranges])
    offset = c.memmap.heads - starts[np.searchsorted(starts, c.memmap.heads, side="right") - 1]
    spanning = c.memmap.heads[offset % 97 + (1 << c.memmap.orders.astype(int)) > 97]
    assert spanning.size > 10, "no compound page crossed a chunk border: the test proves nothing"


def test_census_keeps_one_byte_per_page(leak_census):
    """No decoded memmap outlives the pass: per page, the census holds its
    class (1 byte); compound heads are a sparse list."""
    core, c = leak_census
    assert c.classes.dtype == "uint8" and c.classes.size == c.memmap.nr
    assert not any(isinstance(v, np.ndarray) and v.size >= c.memmap.nr and v is not c.classes
                   for v in vars(c).values())
    assert c.memmap.heads.size < c.memmap.nr // 8


def test_census_memory_is_bounded_by_the_chunk_not_the_memmap(leak_census):
    """Peak Python/numpy memory of a census (tracemalloc sees numpy's
    buffers) stays far below the size of the struct page array: the chunked
    reader never holds the memmap, only a chunk of it and the class byte per
    page.  With the old whole-memmap reader the peak was over 2x the memmap."""
    import tracemalloc
    core, c = leak_census
    memmap_bytes = c.memmap.valid_pages * c.memmap.struct_size
    tracemalloc.start()
    try:
        census(c.prog, chunk_pages=2048)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < memmap_bytes / 4, (peak, memmap_bytes)


def test_census_on_kdump_compressed_core(kdump_core):
    c = census(kdump_core.program())
    t = c.totals()
    assert sum(t.values()) == c.total_pages
    assert t["free"] == c.counters["free"]
    for leak in kdump_core.manifest["planted_leaks"]:
        assert c.class_of(leak["pfn"]).label == kdump_core.planted_class(c.prog, leak), leak


def test_cli_buddy_walk_matches_the_kernels_counts(leak_core):
    check_buddy(leak_core)


def test_cli_buddy_on_kdump_compressed_core(kdump_core):
    check_buddy(kdump_core)


def _longest_free_list(prog, m):
    """(zone name, order, list head address, PFNs) of the longest buddy list."""
    from drgn.helpers.linux.mmzone import for_each_online_pgdat
    best = None
    for pgdat in for_each_online_pgdat(prog):
        for zone in pgdat.node_zones:
            if not zone.present_pages:
                continue
            for order in range(len(zone.free_area)):
                for head in zone.free_area[order].free_list:
                    pfns = page_list_pfns(m, head.address_of_().value_(), "lru", "", [])
                    if best is None or pfns.size > best[3].size:
                        best = (zone.name.string_().decode(), order, head.address_of_().value_(), pfns)
    return best


@pytest.mark.parametrize("breakage", ["poison", "fault"])
def test_a_broken_free_list_is_a_problem_not_a_crash(breakage):
    """A live kernel can change a free list under the walk, and a damaged
    dump can hold a broken one: the second entry's ``lru.next`` becomes
    LIST_POISON1 (what ``list_del`` leaves), or its memory cannot be read.
    The walk keeps the entries before the break, says where it broke, and
    reads the rest back from the head through ``prev`` (a ``list_head`` is
    doubly linked), so every block of the list is still found.  The break
    is an overlay segment over the core's memory (drgn reads the newest
    segment first); the dump is not written."""
    prog = sample_core("i40e-leak", "6.1").program()
    m = Memmap.from_program(prog)
    zone, order, head, pfns = _longest_free_list(prog, m)
    assert pfns.size >= 3
    lru = m.memmap + int(pfns[1]) * m.struct_size + drgn.offsetof(prog.type("struct page"), "lru")

    def read(address, count, offset, physical):
        if breakage == "fault":
            raise drgn.FaultError("overlay: unreadable", address)
        return (0xdead000000000100).to_bytes(8, "little")
    prog.add_memory_segment(lru, 8, read)
    classes = np.full(m.nr, UNCLAIMED, np.uint8)
    zones = walk_free_lists(prog, m, classes)
    z = next(z for z in zones if z.zone == zone)
    expect = {"poison": "list leaves the memmap at entry 3", "fault": "list unreadable at entry 2"}[breakage]
    assert any(expect in p and f"order {order}" in p for p in z.problems), z.problems
    assert z.blocks_walked[order] == z.blocks_counted[order]
    assert all(classes[p:p + (1 << order)].tolist() == [PageClass.FREE] * (1 << order) for p in pfns.tolist())


def check_buddy(core):
    """``buddy`` walks the free lists alone: per zone and order the blocks
    equal ``free_area[order].nr_free``, the total equals NR_FREE_PAGES, and
    the zones are those of the guest's /proc/buddyinfo."""
    doc = cli_json("buddy", *core.args)
    assert doc["schema"] == "vmcore-tools/buddy/1"
    assert doc["free_pages_walked"] == doc["nr_free_pages"] > 0
    assert doc["pcp_pages"] >= 0 and not doc["problems"]
    for z in doc["zones"]:
        assert z["free_blocks"] == z["nr_free"], z
        assert sum(z["free_blocks"]) == sum(map(sum, z["free_by_migratetype"].values()))
    assert {(z["node"], z["zone"]) for z in doc["zones"]} == \
        {(z["node"], z["zone"]) for z in core.manifest["buddyinfo"]}
    run = run_cli("buddy", *core.args)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "= NR_FREE_PAGES" in text and "pagetypeinfo" in text


def test_cli_census_json(leak_core):
    doc = cli_json("census", *leak_core.args)
    assert doc["schema"] == "vmcore-tools/census/1"
    assert sum(doc["classes"].values()) == doc["total_pages"]
    assert doc["release"] == leak_core.manifest["kernel"]["abi"]


def test_drgn_helper_script(leak_core):
    """helpers/census.py runs as a drgn script on the core."""
    from pathlib import Path
    drgn = Path(sys.executable).with_name("drgn")
    helper = Path(__file__).resolve().parents[2] / "helpers" / "census.py"
    out = subprocess.run([str(drgn), "-q", "-c", str(leak_core.core), "-s", leak_core.vmlinux,
                          str(helper)], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"Page census of {leak_core.manifest['kernel']['abi']}")
    assert "unexplained kernel memory" in out


def test_meminfo_reconstruction_matches_kernel(leak_census):
    """The /proc/meminfo-style figures rebuilt from pages agree with the
    kernel's counters read from the same core."""
    core, c = leak_census
    m = c.meminfo()
    assert m["MemTotal"]["census_kb"] == m["MemTotal"]["kernel_kb"]
    assert m["MemFree"]["census_kb"] == m["MemFree"]["kernel_kb"]
    for name in ("Cached+Shmem", "Shmem", "AnonPages", "KernelStack", "PageTables", "VmallocUsed"):
        assert within(m[name]["census_kb"], m[name]["kernel_kb"], 0.01), (name, m[name])
    # MemTotal against the guest's own /proc/meminfo, captured a moment before the dump
    assert m["MemTotal"]["kernel_kb"] == core.manifest["meminfo_kb"]["MemTotal"]


def test_class_totals_by_zone_add_up(leak_census):
    core, c = leak_census
    zones = c.by_zone()
    assert len(zones) == len(c.zones) >= 2
    summed = {}
    for counts in zones.values():
        for k, v in counts.items():
            summed[k] = summed.get(k, 0) + v
    t = c.totals()
    assert summed["free"] == t["free"] and summed["slab"] == t["slab"] and summed["anon"] == t["anon"]


def test_slab_caches_slabtop_style(leak_census):
    """Per-cache slabs add up to the census' slab pages; object counts agree
    with the guest's /proc/slabinfo for caches the workload filled and left
    alone; merged caches carry their aliases."""
    from vmcore_tools.mm.slab import slab_caches
    core, c = leak_census
    caches = slab_caches(c.prog)
    assert sum(x.pages for x in caches) == c.totals()["slab"]
    assert caches == sorted(caches, key=lambda x: -x.total_bytes)
    by_name = {x.name: x for x in caches}
    shmem = by_name["shmem_inode_cache"]
    assert within(shmem.objects, core.manifest["slabinfo"]["shmem_inode_cache"]["num_objs"], 0.02)
    assert shmem.object_size == core.manifest["slabinfo"]["shmem_inode_cache"]["objsize"]
    assert any(x.aliases for x in caches)
    assert all(0 <= x.active <= x.objects for x in caches)


def test_slab_objects_agree_with_drgn(leak_census):
    """SlabObjects (one freelist walk per slab) gives the same object and the
    same allocated/free answer as drgn's slab_object_info() at addresses
    spread over every slab page of the core."""
    from drgn.helpers.linux.slab import slab_object_info

    from vmcore_tools.mm.slab import SlabObjects
    core, c = leak_census
    a = c.memmap
    objects = SlabObjects(c.prog, a)
    pfns = c.pfns_of(PageClass.SLAB)
    addrs = [a.virt_of_pfn(int(p)) + (i * 1576) % 4096 // 8 * 8 for i, p in enumerate(pfns[::4])]
    seen = {True: 0, False: 0}
    for addr in addrs:
        ours, theirs = objects(addr), slab_object_info(c.prog, addr)
        assert (ours.address, ours.allocated) == (theirs.address, theirs.allocated), hex(addr)
        assert ours.cache == theirs.slab_cache.name.string_().decode()
        seen[ours.allocated] += 1
    assert seen[True] > 100 and seen[False] > 10, seen


def test_cli_slab_json(leak_core):
    """--top is the text table's rows; the JSON document lists every cache, in the order asked."""
    doc = cli_json("slab", "--sort", "objects", "--top", "5", *leak_core.args)
    assert doc["schema"] == "vmcore-tools/slab/1"
    objs = [x["objects"] for x in doc["caches"]]
    assert len(objs) > 5 and objs == sorted(objs, reverse=True)
    assert sum(x["pages"] for x in doc["caches"]) == doc["total_pages"]
    text = run_cli("slab", "--sort", "objects", "--top", "5", "--quiet", *leak_core.args).stdout
    rows = text.splitlines()[4:]
    assert [row.split()[0] for row in rows] == [x["name"] for x in doc["caches"][:5]], text
