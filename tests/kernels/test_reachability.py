"""Reachability (kmemleak-style, offline) on real cores of every kernel
line: vmct_shapes loses a kcalloc'd rx buffer array with the pages it names
(i40e's rx_bi[] records) on the i40e-leak cores and keeps it on the no-leak
ones.  Each run is cheap next to the census: every line runs in CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vmcore_tools import orphans
from vmcore_tools.census.classes import PageClass
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.leaks.reachability import reachability, reachability_text
from vmcore_tools.refs.registry import KEPT, REACH_ROOTS, REACH_RULES, TRACED
from vmcore_tools.core.stages import STAGES, failed_stages

from ..conftest import KERNELS, cli_json, lines, sample_core

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]

#: unreachable objects a no-leak core may show, as a share of the objects traced:
#: residue of what the trace cannot see (a pointer kept by a device or in an
#: encoded form); measured 0 to 1 in 150 000-185 000 on the four lines
FALSE_UNREACHABLE_RATE = 1e-4


#: arm64 lines the reachability tests also run on, in make test-all
ARM64 = ("6.1-arm64", "6.12-arm64", "6.12-arm64-16k")


def kmalloc_cache_for(prog, size: int) -> str:
    """The kmalloc cache a ``kmalloc(size)`` comes from: the smallest
    ``kmalloc-N`` of this kernel that fits it (arm64's kmalloc caches start
    at 128 bytes and have no 192, its DMA alignment; x86-64's do)."""
    from vmcore_tools.mm.slab import all_slab_caches
    sizes = []
    for cache in all_slab_caches(prog):
        name = cache.name.string_().decode()
        if name.startswith("kmalloc-") and name[8:].rstrip("k").isdigit():
            sizes.append((int(name[8:].rstrip("k")) << (10 if name.endswith("k") else 0), name))
    return min((s, n) for s, n in sizes if s >= size)[1]


@pytest.fixture(scope="module", params=[*KERNELS, *lines(ARM64, ci=())])
def leaked_holder(request):
    core = sample_core("i40e-leak", request.param)
    r = orphans(core.program())
    return core, r, reachability(r)


def test_a_leaked_holder_hides_its_pages(leaked_holder):
    """The pages of the lost array are referenced (not orphaned), and
    reachability names them as held only by that array, at the address the
    module logged, described as records that each name a page."""
    core, r, rr = leaked_holder
    hidden = core.manifest["hidden"]
    assert len(hidden) == 8 and len({h["holder"] for h in hidden}) == 1
    holder = hidden[0]["holder"]
    orphaned = {o.pfn for o in r.orphans}
    assert not orphaned & {h["pfn"] for h in hidden}
    found = {h.holder: h for h in rr.holders}
    assert holder in found, reachability_text(rr)
    h = found[holder]
    assert sorted(h.pfns) == sorted(x["pfn"] for x in hidden)
    assert h.cache == kmalloc_cache_for(r.census.prog, 8 * 24), h.cache     # kcalloc of 8 records of 24 bytes
    assert "8 struct page pointer(s), one every 24 bytes" in h.layout, h.layout
    assert any(holder in c.samples or c.cache == h.cache for c in rr.caches)
    # nothing else is held only by unreachable memory on this core
    assert [x.holder for x in rr.holders] == [holder], reachability_text(rr)


@pytest.mark.parametrize("kernel", [*KERNELS, *lines(ARM64, ci=())])
def test_no_leak_core_has_few_unreachable_objects(kernel):
    """With the array kept, no page is held only by unreachable memory, and
    what is left unreachable is a tiny residue (the false-unreachable rate:
    benchmarks/reachability.py prints it for every core)."""
    core = sample_core("no-leak", kernel)
    rr = reachability(orphans(core.program()))
    assert rr.holders == [], reachability_text(rr)
    assert rr.objects > 50_000 and rr.unread_slabs == 0
    assert rr.unreachable <= FALSE_UNREACHABLE_RATE * rr.objects, reachability_text(rr)
    assert not failed_stages(rr.problems), rr.problems


def test_every_allocated_object_is_traced(leaked_holder):
    """The object table of the holder's cache has exactly the objects drgn's
    own walk finds allocated (per-CPU freelists and, on 6.18+, sheaves taken
    out)."""
    from drgn.helpers.linux.slab import find_slab_cache, slab_cache_for_each_allocated_object
    _, r, rr = leaked_holder
    name = rr.holders[0].cache
    theirs = sum(1 for _ in slab_cache_for_each_allocated_object(find_slab_cache(r.census.prog, name), "void"))
    assert rr.objects_by_cache[name] == theirs > 0


def test_full_slabs_laid_out_in_bulk_are_what_their_freelists_say(leaked_holder):
    """``SlabObjects.allocated_slabs`` lays out the slabs with no freelist of
    their own from the memmap in bulk: per cache, the same object starts as
    walking each slab's freelist one by one (``allocated``)."""
    _, r, _ = leaked_holder
    c = r.census
    slabs = SlabObjects(c.prog, c.memmap)
    heads = np.unique(c.memmap.heads_of(c.pfns_of(PageClass.SLAB)))
    bulk: dict[str, set[int]] = {}
    for got in slabs.allocated_slabs(heads):
        assert got is not None
        bulk.setdefault(got[0], set()).update(got[2].tolist())
    one_by_one: dict[str, set[int]] = {}
    walker = SlabObjects(c.prog, c.memmap)          # its own caches: nothing shared with the bulk read
    for head in heads.tolist():
        name, _, starts = walker.allocated(head)
        one_by_one.setdefault(name, set()).update(starts.tolist())
    assert bulk == one_by_one
    own_free = c.memmap.struct_pages(heads, slabs.freelist_offset, slabs.freelist_offset + 8).view("<u8")
    assert 0 < int((own_free == 0).sum()) < heads.size     # both paths taken


def test_cli_unreachable_json(leaked_holder):
    core, _, _ = leaked_holder
    doc = cli_json("unreachable", *core.args)
    assert doc["schema"] == "vmcore-tools/unreachable/1"
    assert doc["hidden_pages"] == 8 and doc["holders"][0]["holder"] == core.manifest["hidden"][0]["holder"]


#: reachability entries that no sample core exercises, and why; they must
#: reach nothing more here (or this list is stale)
NOT_EXERCISED = {
    "page frags": "no sample core keeps the only pointer to an object in an skb head (frag_list)",
    "KFENCE objects": "KFENCE is off on the no-leak cores (Debian's default); "
                      "test_kfence.py::test_an_object_kfence_served_is_traced runs it on the kfence core",
}
ENTRIES = [e.name for e in (*REACH_ROOTS, *TRACED, *KEPT)]


@pytest.fixture(scope="module")
def no_leak_reports():
    out = []
    for kernel in ("6.1", "7.3"):       # large kmalloc is a class (and traced) from 6.15
        r = orphans(sample_core("no-leak", kernel).program())
        out.append((r, reachability(r).unreachable))
    return out


@pytest.mark.parametrize("name", ENTRIES)
def test_each_reachability_entry_is_needed(no_leak_reports, name):
    """Leaving an entry out makes objects of the no-leak cores unreachable
    (vmct_shapes keeps an object in a kthread's locals and one in a large
    kmalloc'd table; sysctl keeps its built-in headers)."""
    more = sum(reachability(r, without=frozenset({name})).unreachable - base for r, base in no_leak_reports)
    if name in NOT_EXERCISED:
        assert more == 0, f"{name} reaches {more} objects now: take it off NOT_EXERCISED"
    else:
        assert more > 0, f"without {name}, no object of the no-leak cores is lost: what does it reach?"


@pytest.mark.parametrize("name", ENTRIES + [r.name for r in REACH_RULES])
def test_each_reachability_entry_names_its_test(name):
    e = next(e for e in (*REACH_ROOTS, *TRACED, *KEPT, *REACH_RULES) if e.name == name)
    assert e in KEPT or e in REACH_RULES or f"reachability: {name}" in STAGES
    assert e.fact and e.kernels
    path, func = e.test.split("::")
    assert f"def {func}(" in (REPO / path).read_text(), e.test
