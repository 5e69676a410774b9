"""Pages owned without a plain pointer next to them (vmct_shapes, written
the way kernels and drivers keep such pages), on every kernel line: none
is orphaned, each is held the way its shape holds it, and the page lost
inside each shape is orphaned.  The same module with leak=0 is in the
no-leak cores, whose verdict is no leak."""

from __future__ import annotations

import numpy as np
import pytest

from vmcore_tools import orphans

from ..conftest import KERNELS, lines, sample_core

pytestmark = pytest.mark.vm

#: how each kind of owned page must be found referenced (a word of its Describer line)
HELD_BY = {
    "lru-list": ("struct page", "vmalloc"),       # the pool's head in the module's .bss, then page->lru
    "private-chain": ("struct page", "vmalloc"),  # the chain's head, then page->private
    "table-root": ("vmalloc",),                   # the root pointer in .bss
    "table-level": ("itself referenced",),        # an entry of the root
    "table-leaf": ("itself referenced",),         # an entry of a level
    "vm-map-ram": ("mapped at",),                 # a leaf of init_mm
    "kthread-local": ("stack",),
    "large-kmalloc-held": ("itself referenced", "kernel pages"),
    "rx-buffer-array": ("slab",),                 # a kcalloc'd record array (lost itself with leak=1)
    "page-pool-ring": ("slab",),                  # a driver's kcalloc'd ring of pages taken from a pool
    "page-pool-ptr-ring": ("slab",),              # the pool's ptr_ring (kvmalloc'd queue)
    "page-pool-cache": ("slab",),                 # the pool's alloc cache, inside struct page_pool
}
#: the shapes with a page lost inside (leak=1)
LOST_IN = ("lru-list", "private-chain", "table", "page-pool")


@pytest.fixture(scope="module", params=KERNELS)
def shapes(request):
    core = sample_core("i40e-leak", request.param)
    return core, orphans(core.program())


def by_kind(core) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for o in core.manifest["owned"]:
        out.setdefault(o["kind"], []).append(o["pfn"])
    return out


def test_every_shape_is_planted(shapes):
    core, r = shapes
    kinds = by_kind(core)
    # a pool fills its alloc cache by bulk refills from 5.13 (the kernels with
    # pp_magic have them); 5.10's recycles there only from a softirq: empty
    bulk = r.census.prog.type("struct page").has_member("pp_magic")
    assert set(kinds) == set(HELD_BY) - (set() if bulk else {"page-pool-cache"}), kinds.keys()
    lost = {l["ring"] for l in core.manifest["planted_leaks"]}
    assert set(LOST_IN) <= lost


def test_page_lists_through_struct_page(shapes):
    """page->lru lists and page->private chains: every page held, through
    the struct page of the one before it after the first."""
    core, r = shapes
    referenced = {x.pfn: x.references for x in r.referenced}
    for kind in ("lru-list", "private-chain"):
        pfns = by_kind(core)[kind]
        assert all(p in referenced for p in pfns), kind
        linked = [p for p in pfns if any(w.startswith("struct page") for w in referenced[p])]
        assert len(linked) >= len(pfns) - 1, (kind, {p: referenced[p] for p in pfns})


def test_page_pool_pages_are_held_by_the_pool_or_its_user(shapes):
    """A page_pool's pages, marked as the pool's (pp_magic, 5.14+) wherever
    they are: those in the pool's ptr_ring and alloc cache are held by the
    pool's arrays, those handed out by the driver's ring; the one handed
    out and never given back is orphaned, said to be a page_pool page of
    the device its pool serves."""
    core, r = shapes
    marked = r.census.prog.type("struct page").has_member("pp_magic")
    pool_pages = [o for o in core.manifest["owned"] if o["kind"].startswith("page-pool")]
    assert {o["kind"] for o in pool_pages} >= {"page-pool-ring", "page-pool-ptr-ring"}
    for o in pool_pages:
        assert r.census.class_of(o["pfn"]).label == ("page_pool" if marked else "unattributed"), o
        assert any(ref.region == "slab" for ref in r.references.get(o["pfn"], [])), o
    lost = [l["pfn"] for l in core.manifest["planted_leaks"] if l["ring"] == "page-pool"]
    assert len(lost) == 1
    if marked:
        (s,) = [s for s in r.suspects if r.found.suspect[np.searchsorted(r.found.pfn, lost[0])] == s.id]
        assert s.history == {"page_pool page": s.sampled}, s
        # the pool DMA-maps for an edu device that fake_i40e drives, and names no netdev
        ports = {core.manifest["netdevs"][d]["device"] for d in core.netdevs("i40e")}
        (owner,) = s.pools
        assert s.pools[owner] == s.sampled and owner in {f"device {p} (i40e)" for p in ports}, s.pools
        assert f"taken from a page_pool of {owner} and never given back" in s.label, s.label
        assert lost[0] not in {x.pfn for x in r.referenced}


def test_physical_tables_hold_their_levels(shapes):
    """A three-level table of phys | flags entries at scattered slots: its
    levels and leaves are held by the entries above them."""
    core, r = shapes
    referenced = {x.pfn: x.references for x in r.referenced}
    kinds = by_kind(core)
    for pfn in kinds["table-level"] + kinds["table-leaf"]:
        assert pfn in referenced and any(w.startswith("page pfn") for w in referenced[pfn]), \
            (pfn, referenced.get(pfn))


def test_no_owned_page_is_orphaned_and_each_is_held_by_its_shape(shapes):
    core, r = shapes
    orphaned = {o.pfn for o in r.orphans}
    referenced = {x.pfn: x.references for x in r.referenced}
    classes = {o["pfn"]: r.census.class_of(o["pfn"]).label for o in core.manifest["owned"]}
    for o in core.manifest["owned"]:
        assert o["pfn"] not in orphaned, o
        if classes[o["pfn"]] != "unattributed":
            continue        # a class owns it (large kmalloc from 6.15): no reference needed
        words = HELD_BY[o["kind"]]
        assert any(any(w in line for w in words) for line in referenced[o["pfn"]]), (o, referenced[o["pfn"]])


def test_the_page_lost_in_each_shape_is_orphaned(shapes):
    core, r = shapes
    orphaned = {o.pfn for o in r.orphans}
    for leak in core.expected_orphans().values():
        if leak["ring"] in LOST_IN:
            assert leak["pfn"] in orphaned, leak


@pytest.mark.parametrize("kernel", lines(KERNELS, ci=("6.1", "7.3")))
def test_no_leak_core_has_no_orphans(kernel):
    core = sample_core("no-leak", kernel)
    assert not core.manifest["planted_leaks"] and core.manifest["owned"]
    r = orphans(core.program())
    assert r.orphans == [], [(o.pfn, o.order, o.refcount) for o in r.orphans]
    assert r.census.totals()["nic_ring"] > 0
    assert not r.problems
    from vmcore_tools.verdict import verdict
    assert verdict(r).startswith("No page-allocator leak"), verdict(r)
