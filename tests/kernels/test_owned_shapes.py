"""Pages owned without a plain pointer next to them (vmct_shapes, written
the way kernels and drivers keep such pages), on every kernel line: none
is orphaned, each is held the way its shape holds it, and the page lost
inside each shape is orphaned.  The same module with leak=0 is in the
no-leak cores, whose verdict is no leak."""

from __future__ import annotations

import re

import numpy as np
import pytest
from drgn import Architecture, sizeof
from drgn.helpers.linux.cpumask import for_each_online_cpu
from drgn.helpers.linux.llist import llist_for_each_entry
from drgn.helpers.linux.mm import pfn_to_page, pfn_to_virt
from drgn.helpers.linux.percpu import per_cpu, per_cpu_ptr

from vmcore_tools import orphans
from vmcore_tools.kernel.blk_mq import request_blocks
from vmcore_tools.core.features import has_member
from vmcore_tools.leaks.candidates import candidate_heads
from vmcore_tools.kernel.percpu_batches import dead_batch_slots
from vmcore_tools.refs.scan import scan_references
from vmcore_tools.kernel.stacks import dead_irq_stack_spans
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.net.skb import skb_pfns
from vmcore_tools.refs.references import TABLE_SHAPE

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
    # a 32 KiB kmalloc: large (its own compound page) with 4 KiB pages, a
    # kmalloc-32k object with 16 KiB ones (SLUB serves up to 2 * PAGE_SIZE)
    "large-kmalloc-held": ("itself referenced", "kernel pages", "slab kmalloc-32k"),
    "rx-buffer-array": ("slab",),                 # a kcalloc'd record array (lost itself with leak=1)
    "page-pool-ring": ("slab",),                  # a driver's kcalloc'd ring of pages taken from a pool
    "page-pool-ptr-ring": ("slab",),              # the pool's ptr_ring (kvmalloc'd queue)
    "page-pool-cache": ("slab",),                 # the pool's alloc cache, inside struct page_pool
    "skb-defer-list": ("slab",),                  # a frag of an skb (its kmalloc'd head) on a defer list
    "percpu-held": ("per-cpu", "vmalloc"),        # a kept per-cpu allocation (first chunk, or a later one)
    # vmct_blocks (test_blocks.py)
    "block-end": ("slab",),                       # a pointer 16 bytes below a non-compound block's end
    "block-table": ("vmalloc",),                  # the table's start in the module's .bss
    "block-table-entry": ("itself referenced",),  # an entry in pages 1-3 of that block
    "held-buffer": ("slab",),                     # a split block's start, in the driver's state
}
#: the shapes held by an inference where the dump does not prove the hold,
#: and its rule (registry.INFERENCES): they are in the inferred tier
INFERRED_BY = {"table-level": TABLE_SHAPE, "table-leaf": TABLE_SHAPE}
#: the shapes with a page lost inside (leak=1)
LOST_IN = ("lru-list", "private-chain", "table", "page-pool", "idle-request", "irq-stack", "lru-batch",
           "percpu-freed")


#: arm64 lines the shapes are also planted on (test_arm64.py); 6.1's in make test
ARM64 = ("6.1-arm64", "6.12-arm64", "6.12-arm64-16k")


@pytest.fixture(scope="module", params=[*KERNELS, *lines(ARM64, ci=("6.1-arm64",))])
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
    prog = r.census.prog
    bulk = prog.type("struct page").has_member("pp_magic")
    absent = (set() if bulk else {"page-pool-cache"}) | (set() if has_defer_lists(prog) else {"skb-defer-list"})
    assert set(kinds) == set(HELD_BY) - absent, kinds.keys()
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


def has_defer_lists(prog) -> bool:
    """skb_attempt_defer_free()'s lists: ``softnet_data.defer_list`` 6.0
    to 6.17, per-node ``net_hotdata.skb_defer_nodes`` from 6.18."""
    return prog.type("struct softnet_data").has_member("defer_list") or has_member(
        prog, "struct net_hotdata", "skb_defer_nodes")


def deferred_skbs(prog) -> list:
    """Every skb waiting on a CPU's defer list."""
    out = []
    for cpu in for_each_online_cpu(prog):
        if prog.type("struct softnet_data").has_member("defer_list"):
            skb = per_cpu(prog["softnet_data"], cpu).defer_list
            while skb:
                out.append(skb)
                skb = skb.next
        else:
            nodes = per_cpu_ptr(prog["net_hotdata"].skb_defer_nodes, cpu)
            for n in range(prog["nr_node_ids"].value_()):
                out += llist_for_each_entry("struct sk_buff", nodes[n].defer_list.first, "ll_node")
    return out


def test_an_skb_on_a_defer_list_holds_its_page(shapes):
    """Right before the dump, vmct_shapes frees an skb onto another CPU's
    defer list as tcp_recvmsg() does (skb_attempt_defer_free(), 6.0+: an
    skb read on another CPU than the one that allocated it waits there for
    that CPU's next net_rx_action()), a filled page in its frags, that CPU
    held from receiving until the dump.  The dump's list holds it, and no
    page an skb on a defer list holds is orphaned."""
    core, r = shapes
    prog = r.census.prog
    planted = by_kind(core).get("skb-defer-list", [])
    if not has_defer_lists(prog):
        assert not planted
        return
    held = {p for skb in deferred_skbs(prog) for p in skb_pfns(prog, r.census.memmap, skb)}
    assert len(planted) == 1 and set(planted) <= held, (planted, held)
    assert not held & {o.pfn for o in r.orphans}


def test_a_page_the_disk_read_into_then_lost_is_orphaned(shapes):
    """Right before the dump, vmct_shapes reads a disk block into a page
    the kernel's own way (a bio, submit_bio_wait()), then loses the page.
    The request that did the read is given back (``ref`` 0) with its
    virtio-blk scatterlist as the read left it, so until its tag comes round
    again an idle request names the lost page; on 7.3 the bio, put back in
    fs_bio_set's per-CPU cache, names it too.  The dump's idle request does
    name it, and the page is orphaned: only a request in use holds anything
    (blk_mq.request_blocks), and no cached bio (bio_cache.cached_bios)."""
    core, r = shapes
    prog = r.census.prog
    lost = [leak["pfn"] for leak in core.manifest["planted_leaks"] if leak["ring"] == "idle-request"]
    assert len(lost) == 1, core.manifest["planted_leaks"]
    page = pfn_to_page(prog, lost[0]).value_()
    size = sizeof(prog.type("struct page"))
    naming = []
    for start, end in request_blocks(prog).idle:
        words = np.frombuffer(prog.read(start, (end - start) // 8 * 8), "<u8")
        if ((words >= page) & (words < page + size)).any():
            naming.append(hex(start))
    assert naming, "no idle request names the page: the plant left nothing for the rule to decide"
    assert lost[0] in {o.pfn for o in r.orphans}, naming


def irq_stack(prog, cpu: int) -> tuple[int, int]:
    """Where ``cpu``'s interrupt stack is and its size: x86-64's static
    per-CPU ``irq_stack_backing_store``, arm64's vmalloc'd stack at
    ``irq_stack_ptr`` (``IRQ_STACK_SIZE`` is ``THREAD_SIZE``)."""
    if prog.platform.arch == Architecture.AARCH64:
        return per_cpu(prog["irq_stack_ptr"], cpu).value_(), prog["THREAD_SIZE"].value_()
    stack = per_cpu(prog["irq_stack_backing_store"], cpu)
    return stack.address_, sizeof(stack)


def test_a_page_left_in_a_dead_interrupt_stack_frame_is_orphaned(shapes):
    """Right before the dump, vmct_shapes has another CPU fill a page in an
    interrupt handler (an IPI's function, run on that CPU's interrupt
    stack), the page's address in the handler's frame, then loses the page.
    The dump's interrupt stack of that CPU still holds the address; the CPU
    is not in an interrupt, so the stack is not read
    (``stacks.dead_irq_stack_spans``) and the page is orphaned.  If the
    CPU is in an interrupt at the dump, only the frames from its saved stack
    pointer up are live: the handler's frame, 8 KiB deep, lies below any
    interrupt that followed, so the page is still orphaned, unless the dump
    saved no registers for the CPU."""
    core, r = shapes
    prog = r.census.prog
    lost = [leak["pfn"] for leak in core.manifest["planted_leaks"] if leak["ring"] == "irq-stack"]
    assert len(lost) == 1, core.manifest["planted_leaks"]
    cpu = int(re.search(rf"vmct_shapes: irq-stack pfn={lost[0]} cpu=(\d+)",
                        (core.path / "dmesg.txt").read_text()).group(1))
    start, size = irq_stack(prog, cpu)
    words = np.frombuffer(prog.read(start, size), "<u8")
    assert (words == pfn_to_virt(prog, lost[0]).value_()).any(), \
        "the handler's frame was overwritten: the plant left nothing for the rule to decide"
    orphaned = lost[0] in {o.pfn for o in r.orphans}
    at = np.uint64(start) + np.uint64(8) * np.flatnonzero(words == pfn_to_virt(prog, lost[0]).value_())
    lo, hi = (np.uint64(x) for x in dead_irq_stack_spans(prog).get(cpu, (0, 0)))
    dead = bool(((at >= lo) & (at < hi)).all())
    assert orphaned == dead, (cpu, (lo, hi), at, orphaned)


def test_a_page_named_only_in_a_freed_per_cpu_area_is_orphaned(shapes):
    """Right before the dump, vmct_shapes stores a page's address in the
    last word of the first CPU's copy of a per-cpu allocation, frees it,
    and loses the page.  The dump still has the word (free_percpu() leaves
    the bytes), but the chunk's alloc_map says the area is free: the word
    holds nothing (``percpu.free_percpu_spans``) and the page is orphaned.
    Without the entry the word holds it; the page a kept allocation names
    stays held."""
    core, r = shapes
    prog = r.census.prog
    lost = [leak["pfn"] for leak in core.manifest["planted_leaks"] if leak["ring"] == "percpu-freed"]
    assert len(lost) == 1, core.manifest["planted_leaks"]
    word = int(re.search(rf"vmct_shapes: percpu-freed pfn={lost[0]} word=([0-9a-f]+)",
                         (core.path / "dmesg.txt").read_text()).group(1), 16)
    assert prog.read_u64(word) == pfn_to_virt(prog, lost[0]).value_(), \
        "a later per-cpu allocation took the word: the plant left nothing for the rule to decide"
    assert lost[0] in {o.pfn for o in r.orphans}, r.references.get(lost[0])
    heads = candidate_heads(r.census)
    without = scan_references(r.census, heads, without=frozenset({"free per-cpu areas"})).references
    assert lost[0] in without, "the freed area was not read at all: the test shows nothing"
    held = by_kind(core)["percpu-held"]
    assert set(held) <= {x.pfn for x in r.referenced}, held


def test_stale_sheaf_slots_hold_nothing(shapes):
    """A sheaf (6.18+) keeps free objects in ``objects[0..size)``; taking
    one leaves its pointer in ``objects[size]``.  A page that was a slab
    page, freed, allocated again and lost is still named by such stale
    slots (on the 7.3 core, the page vmct_shapes lost after an interrupt
    handler used it).  No candidate a stale slot names is held by it;
    without the registry entry each is.  Where no stale slot names a
    candidate, or the kernel has no sheaves, the core has nothing for the
    entry to decide."""
    core, r = shapes
    prog, a = r.census.prog, r.census.memmap
    spans = SlabObjects(prog, a).stale_sheaf_spans()
    if not spans:
        pytest.skip("no slab sheaves on this kernel")
    words = np.concatenate([np.frombuffer(prog.read(lo, hi - lo), "<u8") for lo, hi in spans])
    named = set(a.pfns_of_virts(words).tolist()) & set(candidate_heads(r.census).tolist())
    if not named:
        pytest.skip("no stale sheaf slot of this core names a candidate page")

    def by_a_slot(refs) -> bool:
        return any(any(lo <= ref.address < hi for lo, hi in spans) for ref in refs)
    without = scan_references(r.census, candidate_heads(r.census),
                              without=frozenset({"stale sheaf slots"})).references
    assert not any(by_a_slot(r.references.get(pfn, [])) for pfn in named)
    assert any(by_a_slot(without.get(pfn, [])) for pfn in named), sorted(named)


def test_a_page_a_dead_lru_batch_slot_names_is_orphaned(shapes):
    """Right before the dump, vmct_shapes fills the first CPU's
    lru_deactivate_file batch with shmem folios, the last one filling it
    (the batch is moved to the LRU and set to nr = 0), frees them, takes the
    last one again from the CPU's free list, and loses it.  The dump's
    batch still names that page's struct page in a slot past its count: a
    dead slot (``percpu_batches.dead_batch_slots``), not read, so the page
    is orphaned.  Without the registry entry it is referenced from the
    per-CPU area."""
    core, r = shapes
    prog = r.census.prog
    lost = [leak["pfn"] for leak in core.manifest["planted_leaks"] if leak["ring"] == "lru-batch"]
    assert len(lost) == 1, core.manifest["planted_leaks"]
    page = pfn_to_page(prog, lost[0]).value_()
    dead = [(lo, hi) for lo, hi in dead_batch_slots(prog)
            if (np.frombuffer(prog.read(lo, hi - lo), "<u8") == page).any()]
    assert dead, "no dead batch slot names the page: the plant left nothing for the rule to decide"
    assert lost[0] in {o.pfn for o in r.orphans}
    cpu = re.search(rf"vmct_shapes: lru-batch pfn={lost[0]} cpu=(\d+)", (core.path / "dmesg.txt").read_text())[1]
    without = scan_references(r.census, candidate_heads(r.census), without={"per-cpu batches"})
    assert {ref.region for ref in without.references.get(lost[0], [])} == {f"per-cpu cpu{cpu}"}


def test_physical_tables_hold_their_levels(shapes):
    """A three-level table of phys | flags entries at scattered slots: its
    levels and leaves are held by the entries above them."""
    core, r = shapes
    inferred = {x.pfn: x.references for x in r.held_by_inference}
    kinds = by_kind(core)
    for pfn in kinds["table-level"] + kinds["table-leaf"]:
        # held by the entry above, a guess at the page's shape: said so, in the inferred tier
        assert pfn in inferred and any(w.startswith("page pfn") for w in inferred[pfn]), (pfn, inferred.get(pfn))
        assert r.inferred_rules[pfn] == TABLE_SHAPE


def test_no_owned_page_is_orphaned_and_each_is_held_by_its_shape(shapes):
    core, r = shapes
    orphaned = {o.pfn for o in r.orphans}
    held = {x.pfn: x.references for x in r.referenced + r.held_by_inference}
    classes = {o["pfn"]: r.census.class_of(o["pfn"]).label for o in core.manifest["owned"]}
    for o in core.manifest["owned"]:
        assert o["pfn"] not in orphaned, o
        if classes[o["pfn"]] != "unattributed":
            continue        # a class owns it (large kmalloc from 6.15): no reference needed
        words = HELD_BY[o["kind"]]
        assert any(any(w in line for w in words) for line in held[o["pfn"]]), (o, held[o["pfn"]])
        # proved, or in the inferred tier by the rule its shape rests on
        assert r.inferred_rules.get(o["pfn"]) == INFERRED_BY.get(o["kind"]), (o, r.inferred_rules.get(o["pfn"]))


def test_the_page_lost_in_each_shape_is_orphaned(shapes):
    core, r = shapes
    orphaned = {o.pfn for o in r.orphans}
    for leak in core.expected_orphans().values():
        if leak["ring"] in LOST_IN:
            assert leak["pfn"] in orphaned, leak


@pytest.mark.parametrize("kernel", lines(KERNELS + ARM64, ci=("6.1", "7.3", "6.1-arm64")))
def test_no_leak_core_has_no_orphans(kernel):
    core = sample_core("no-leak", kernel)
    assert not core.manifest["planted_leaks"] and core.manifest["owned"]
    r = orphans(core.program())
    assert r.orphans == [], [(o.pfn, o.order, o.refcount) for o in r.orphans]
    assert r.census.totals()["nic_ring"] > 0
    assert not r.problems
    from vmcore_tools.leaks.verdict import verdict
    # the owned table shapes are held by inference: the verdict does not say "no leak"
    assert r.inferred_heads.size and verdict(r).startswith("No orphaned page: every unattributed page is "
                                                           "referenced, but "), verdict(r)
