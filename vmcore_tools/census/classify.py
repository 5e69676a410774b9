"""Who owns a page: one rule per owner class, in one place.

The census (``census.py``) gathers the evidence: the memmap, decoded a chunk
at a time (``pages.py``), and the pages found by walking kernel structures
(free lists, vmap areas, page tables, per-cpu chunks, page_frag caches, NIC
rings).  This module turns that evidence into one class per page.  Rules run
in the order of ``RULES``; the first that claims a page wins, so every page
lands in exactly one class.  Compound pages are classified by their head and
the tails inherit its class, so a compound page counts as its full size.

Memory stays at one byte per page: the walks write what they found straight
into the class array (``claim``; a page keeps the finding whose rule comes
first, which is all "first rule wins" needs), and ``classify`` then turns
that array into classes chunk by chunk, in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import drgn
import numpy as np

from vmcore_tools.census.classes import UNCLAIMED, PageClass
from vmcore_tools.census.damage import Damage
from vmcore_tools.core.parallel import can_fork, forked_map, jobs_of
from vmcore_tools.mm.memmap import CHUNK_PAGES, Memmap, PageWords
from vmcore_tools.mm.pageflags import PageTypes, page_flag_bits
from vmcore_tools.core.arrays import unique


@dataclass
class Evidence:
    """What the census found by walking kernel structures.

    Findings judged page by page (free blocks, per-CPU lists, vmalloc,
    stack and per-cpu pages, page-table pages) are in ``classes`` itself,
    put there by ``claim``.  Findings judged on the compound head are short
    sorted PFN lists.
    """

    classes: np.ndarray            # uint8 per PFN: the claimed class, or UNCLAIMED
    page_frag: np.ndarray          # sorted PFNs: pages of known page_frag caches
    nic_ring: np.ndarray           # sorted PFNs: compound heads held by a ring slot
    shmem: "ShmemMappings"
    hugetlb_dtor: int | None = None  # HUGETLB_PAGE_DTOR, where compound_dtor tells hugetlb
    #: sorted PFNs whose struct page holds a state no kernel writes (``classify`` fills it)
    damaged: np.ndarray | None = None


@dataclass
class ChunkEvidence:
    """``Evidence`` cut down to one chunk of pages, what the rules see."""

    claimed: np.ndarray            # uint8: the claimed class of each page
    page_frag: np.ndarray          # bool
    nic_ring: np.ndarray           # bool
    shmem: "ShmemMappings"
    hugetlb_dtor: int | None

    @classmethod
    def of(cls, ev: Evidence, w: PageWords) -> "ChunkEvidence":
        lo, hi = int(w.pfn[0]), int(w.pfn[-1]) + 1
        return cls(ev.classes[lo:hi].copy(), _members(w.pfn, ev.page_frag), _members(w.pfn, ev.nic_ring),
                   ev.shmem, ev.hugetlb_dtor)


def _members(pfns: np.ndarray, sorted_list: np.ndarray) -> np.ndarray:
    """Which of the (sorted) ``pfns`` are in ``sorted_list``."""
    lo, hi = np.searchsorted(sorted_list, [pfns[0], pfns[-1] + 1])
    return np.isin(pfns, sorted_list[lo:hi]) if hi > lo else np.zeros(pfns.size, bool)


class ShmemMappings:
    """Which ``address_space``s are shmem/tmpfs (``a_ops == &shmem_aops``),
    read once per distinct mapping as the pass meets them."""

    def __init__(self, prog: drgn.Program):
        self.prog = prog
        try:
            self.aops: int | None = prog["shmem_aops"].address_of_().value_()
        except KeyError:
            self.aops = None
        self.offset = drgn.offsetof(prog.type("struct address_space"), "a_ops")
        self.known: dict[int, bool] = {}

    def is_shmem(self, mapping: int) -> bool:
        if mapping not in self.known:
            try:
                self.known[mapping] = self.prog.read_u64(mapping + self.offset) == self.aops
            except drgn.FaultError:
                self.known[mapping] = False
        return self.known[mapping]

    def mask(self, mapping: np.ndarray) -> np.ndarray:
        if self.aops is None:
            return np.zeros(mapping.size, bool)
        files = unique(mapping[(mapping != 0) & ((mapping & np.uint64(3)) == 0)])
        shmem = [m for m in files.tolist() if self.is_shmem(m)]
        return np.isin(mapping, np.array(shmem, np.uint64)) if shmem else np.zeros(mapping.size, bool)


Rule = Callable[[PageWords, ChunkEvidence, "Context"], np.ndarray]


@dataclass
class Context:
    prog: drgn.Program
    types: PageTypes
    pg: dict[str, int]  # PG_* bit numbers


def _flag(w: PageWords, ctx: Context, name: str) -> np.ndarray:
    bit = ctx.pg.get(name)
    if bit is None:
        return np.zeros(w.nr, bool)
    return (w.flags & np.uint64(1 << bit)).astype(bool)


def rule_free(w, ev, ctx):
    """Free buddy blocks: PageBuddy marks the first page of a block, whose
    order is in ``page_private``; the census claims the whole block."""
    return ev.claimed == PageClass.FREE


def rule_free_pcp(w, ev, ctx):
    """Free pages on per-CPU lists (``zone->per_cpu_pageset``): not PageBuddy,
    refcount 0, found by walking the lists."""
    return ev.claimed == PageClass.FREE_PCP


def rule_reserved(w, ev, ctx):
    """``PG_reserved``: kernel image, memblock allocations, firmware holes."""
    return _flag(w, ctx, "reserved")


def rule_slab(w, ev, ctx):
    """Slab: ``PG_slab`` on the head page until 6.9, the ``slab`` page type
    from 6.10 (``PAGE_SLAB_MAPCOUNT_VALUE`` in VMCOREINFO).  Tail pages
    inherit from their head, so multi-page slabs count in full."""
    value = ctx.types.numbers.get("PAGE_SLAB_MAPCOUNT_VALUE")
    if value is not None:
        return (w.mapcount >> np.uint32(24)) == np.uint32((value >> 24) & 0xFF)
    return _flag(w, ctx, "slab")


def rule_page_table(w, ev, ctx):
    """Page tables: the ``table`` page type (4.18+; ``ptdesc`` from 6.5 is the
    same struct page)."""
    return ctx.types.is_type(w.mapcount, "table")


def rule_kernel_page_table(w, ev, ctx):
    """Page-table pages without the PageTable type: the kernel's own tables
    and constructor-less upper levels, found by walking ``init_mm`` and each
    process's tables from the PGD (NR_PAGETABLE does not count them)."""
    return ev.claimed == PageClass.KERNEL_PAGE_TABLE


def rule_hugetlb(w, ev, ctx):
    """hugetlbfs pages: the ``hugetlb`` page type (6.9+), before that the
    first tail's ``compound_dtor`` == ``HUGETLB_PAGE_DTOR`` (VMCOREINFO)."""
    mask = ctx.types.is_type(w.mapcount, "hugetlb")
    if ev.hugetlb_dtor is not None and w.dtor is not None:
        mask = mask | ((w.order > 0) & (w.dtor == ev.hugetlb_dtor))
    return mask


def rule_offline(w, ev, ctx):
    """Offline pages (virtio-mem, balloon inflation): the ``offline`` page type."""
    return ctx.types.is_type(w.mapcount, "offline") | ctx.types.is_type(w.mapcount, "guard")


def rule_movable_nonlru(w, ev, ctx):
    """zsmalloc and balloon pages: ``mapping & PAGE_MAPPING_FLAGS == PAGE_MAPPING_MOVABLE``
    (bit 1 only), or the ``zsmalloc`` page type (6.12+)."""
    return ((w.mapping & np.uint64(3)) == 2) | ctx.types.is_type(w.mapcount, "zsmalloc")


#: ``PP_MAGIC_MASK`` on x86-64: ``pp_magic`` without its two low bits and,
#: from 6.15, the pool's DMA index in bits 7 to 38 (``PP_DMA_INDEX_SHIFT`` is
#: 1 + __fls(0x40), ``PP_DMA_INDEX_BITS`` 32): an odd index sets bit 7
PP_MAGIC_MASK = 0xFFFFFF800000007C
#: ``PP_SIGNATURE``: 0x40 + POISON_POINTER_DELTA
PP_SIGNATURE = 0xDEAD000000000040


def rule_page_pool(w, ev, ctx):
    """page_pool pages (5.14+): ``pp_magic`` holds ``PP_SIGNATURE`` once
    ``PP_MAGIC_MASK`` is applied, as the kernel's own ``netmem_is_pp()``
    tests it.  The signature sits in the word that is ``lru.next`` on other
    pages; neither list poison value passes the mask."""
    if w.pp_magic is None:
        return np.zeros(w.nr, bool)
    return (w.pp_magic & np.uint64(PP_MAGIC_MASK)) == np.uint64(PP_SIGNATURE)


def rule_anon(w, ev, ctx):
    """Anonymous memory (and KSM): ``mapping & PAGE_MAPPING_ANON`` (bit 0).
    THP are compound: tails inherit from the head.  An order-0 anonymous
    page that no process maps is not user memory (``anon_mapped_nowhere``)."""
    return (w.mapping & np.uint64(1)).astype(bool) & ~anon_mapped_nowhere(w, ctx)


def anon_mapped_nowhere(w, ctx) -> np.ndarray:
    """Order-0 anonymous (not KSM) pages that no page table maps and that
    are not in the swap cache.

    Fact: an anonymous page keeps ``anon_vma | PAGE_MAPPING_ANON`` in
    ``mapping`` until it is freed, and ``_mapcount`` counts the page tables
    that map it (-1: none).  When its process exits or unmaps it, the unmap
    drops the mapping's reference; a page kept past that by another
    reference (``get_user_pages()``, a driver, splice) stays allocated,
    on the LRU, mapped nowhere: no process owns it, and whoever holds the
    reference must be found by the reference scan (a pipe buffer, a pinned
    buffer's page array) or it is orphaned.  Reclaim unmaps a page only once
    it is in the swap cache (``PG_swapcache`` with ``PG_swapbacked``), which
    owns it then.  A large folio's mapcounts live in its folio fields, so
    only order-0 pages are judged here."""
    if "head" not in ctx.pg:
        return np.zeros(w.nr, bool)
    anon = (w.mapping & np.uint64(3)) == np.uint64(1)
    swapcache = _flag(w, ctx, "swapcache") & _flag(w, ctx, "swapbacked")
    return anon & ~_flag(w, ctx, "head") & (w.mapcount == np.uint32(0xFFFFFFFF)) & ~swapcache


def rule_shmem(w, ev, ctx):
    """shmem/tmpfs: page-cache pages whose ``address_space`` has ``a_ops ==
    &shmem_aops`` (read once per distinct mapping, ``ShmemMappings``)."""
    return ev.shmem.mask(w.mapping)


def rule_file(w, ev, ctx):
    """Page cache: ``mapping`` points to an ``address_space`` (low bits clear)."""
    return (w.mapping != 0) & ((w.mapping & np.uint64(3)) == 0)


def rule_kernel_stack(w, ev, ctx):
    """Thread stacks: vmalloc'd (VMAP_STACK) by ``alloc_thread_stack_node``."""
    return ev.claimed == PageClass.KERNEL_STACK


def rule_vmalloc(w, ev, ctx):
    """vmalloc: pages listed in a ``vm_struct.pages[]`` of a busy vmap area."""
    return ev.claimed == PageClass.VMALLOC


def rule_percpu(w, ev, ctx):
    """Per-cpu chunks allocated after boot (``pcpu_get_vm_areas``); the
    first chunk is memblock memory and counts as reserved."""
    return ev.claimed == PageClass.PERCPU


def rule_page_ext(w, ev, ctx):
    """Tables of ``struct page_ext`` entries (page_owner records and other
    per-page extensions), found by walking ``mem_section``
    (``page_owner.page_ext_pfns``).  They come from ``alloc_pages_exact()``
    and the only pointer to them is biased by the section's first PFN, so
    no reference scan finds them."""
    return ev.claimed == PageClass.PAGE_EXT


def rule_device(w, ev, ctx):
    """ZONE_DEVICE pages, claimed from the dev_pagemaps
    (``walks.walk_device_pages``).  Whatever their flags and refcount say
    (an idle fsdax page keeps refcount 1), the page allocator never owns
    them, so they are neither kernel memory nor a leak candidate."""
    return ev.claimed == PageClass.DEVICE


def rule_page_frag(w, ev, ctx):
    """page_frag caches: per-CPU ``netdev_alloc_cache``/``napi_alloc_cache``
    and every task's ``task_frag``."""
    return ev.page_frag


def rule_nic_ring(w, ev, ctx):
    """Pages a NIC rx ring holds: found by the ring walkers (``rings/``), e.g.
    ``i40e_ring->rx_bi[i].page`` or a virtqueue descriptor's address."""
    return ev.nic_ring


def rule_large_kmalloc(w, ev, ctx):
    """Large kmalloc: marked by the ``large_kmalloc`` page type only from 6.15;
    before that it is an unmarked compound page."""
    return ctx.types.is_type(w.mapcount, "large_kmalloc")


def rule_zero_ref(w, ev, ctx):
    """Refcount 0 but on no free list: pages being freed or allocated."""
    return w.refcount == 0


RULES: tuple[tuple[PageClass, Rule], ...] = (
    (PageClass.DEVICE, rule_device),
    (PageClass.FREE, rule_free),
    (PageClass.FREE_PCP, rule_free_pcp),
    (PageClass.RESERVED, rule_reserved),
    (PageClass.SLAB, rule_slab),
    (PageClass.PAGE_TABLE, rule_page_table),
    (PageClass.KERNEL_PAGE_TABLE, rule_kernel_page_table),
    (PageClass.HUGETLB, rule_hugetlb),
    (PageClass.OFFLINE, rule_offline),
    (PageClass.MOVABLE_NONLRU, rule_movable_nonlru),
    (PageClass.PAGE_POOL, rule_page_pool),
    (PageClass.ANON, rule_anon),
    (PageClass.SHMEM, rule_shmem),
    (PageClass.FILE, rule_file),
    (PageClass.KERNEL_STACK, rule_kernel_stack),
    (PageClass.VMALLOC, rule_vmalloc),
    (PageClass.PERCPU, rule_percpu),
    (PageClass.PAGE_EXT, rule_page_ext),
    (PageClass.PAGE_FRAG, rule_page_frag),
    (PageClass.NIC_RING, rule_nic_ring),
    (PageClass.LARGE_KMALLOC, rule_large_kmalloc),
    (PageClass.ZERO_REF, rule_zero_ref),
)

#: Rules that are judged on the compound head; tails take the head's class.
#: (Device ranges, free blocks, pcp lists and vmalloc/percpu/stack pages are
#: listed page by page, and reserved is a per-page flag.)
_PER_PAGE = {PageClass.DEVICE, PageClass.FREE, PageClass.FREE_PCP, PageClass.RESERVED, PageClass.KERNEL_STACK,
             PageClass.VMALLOC, PageClass.PERCPU, PageClass.KERNEL_PAGE_TABLE, PageClass.PAGE_EXT}


#: Precedence of each class's rule (255 for UNCLAIMED): what ``claim`` compares.
RANK = np.full(256, 255, np.uint8)
for _i, (_klass, _) in enumerate(RULES):
    RANK[_klass] = _i


def claim(classes: np.ndarray, pfns: np.ndarray, klass: PageClass) -> None:
    """A walk found ``pfns`` in ``klass``: record it, unless a finding whose
    rule comes first is already there."""
    pfns = np.asarray(pfns, np.int64)
    pfns = pfns[(pfns >= 0) & (pfns < classes.size)]
    better = RANK[klass] < RANK[classes[pfns]]
    classes[pfns[better]] = klass


def claim_range(classes: np.ndarray, lo: int, hi: int, klass: PageClass) -> None:
    """``claim`` for the PFNs ``[lo, hi)``, a slice at a time (a device range
    can be terabytes: no array of its PFNs)."""
    for start in range(max(lo, 0), min(hi, classes.size), 1 << 20):
        span = classes[start:min(hi, classes.size, start + (1 << 20))]
        span[RANK[span] > RANK[klass]] = klass


#: PFNs a part of the pass over the memmap covers when it is split over
#: processes: a multiple of the largest compound page (a PUD-mapped folio, 1
#: GiB of 4 KiB pages, aligned to its size), so no tail is in another part
#: than its head
PART_PAGES = 1 << 18


def classify(prog: drgn.Program, m: Memmap, ev: Evidence,
             progress: Callable[[int, int], None] | None = None, chunk_pages: int = CHUNK_PAGES) -> np.ndarray:
    """One ``PageClass`` (uint8) per PFN, made in place from ``ev.classes``
    one memmap chunk at a time.  Records the compound heads and their orders
    in ``m.heads``/``m.orders`` on the way, and the damaged pages
    (``damage.Damage``) in ``ev.damaged``: those, and the tails of a damaged
    head, are ``DAMAGED``, and a damaged head is no head.

    With ``--jobs``, the memmap is read in parts of ``PART_PAGES`` by forked
    processes (``parallel.forked_map``), each sending back its classes,
    heads and damaged pages, merged in order."""
    ctx = Context(prog, PageTypes(prog), page_flag_bits(prog))
    damage = Damage.of(prog, m)
    classes = ev.classes
    jobs = jobs_of(prog)
    cuts = sorted({lo for s, e in m.ranges for lo in range(s - s % PART_PAGES, e, PART_PAGES)})
    parts = [(max(lo, 0), min(lo + PART_PAGES, m.nr)) for lo in cuts] if jobs > 1 and can_fork() else []
    if len(parts) <= 1:
        parts = [(0, m.nr)]
    heads, orders, damaged = [], [], []
    done = 0

    def part(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _classify_span(m, ev, ctx, damage, span, chunk_pages, progress if len(parts) == 1 else None)

    for (lo, hi), (cls, h, o, d) in zip(parts, forked_map(part, parts, jobs)):
        if not np.may_share_memory(cls, classes):  # a forked part's copy: its valid ranges only
            for start, end in ((max(s, lo), min(e, hi)) for s, e in m.ranges if s < hi and e > lo):
                classes[start:end] = cls[start - lo:end - lo]
        heads.append(h)
        orders.append(o)
        damaged.append(d)
        done += hi - lo
        if progress and len(parts) > 1:
            progress(min(done, m.valid_pages), m.valid_pages)
    prev = 0
    for start, end in m.ranges + [(m.nr, m.nr)]:
        hole = classes[prev:start]
        if hole.any():                  # written only where a walk claimed a PFN without a struct page
            hole[:] = PageClass.NO_PAGE
        prev = max(prev, end)
    m.heads = np.concatenate(heads) if heads else np.zeros(0, np.int64)
    m.orders = np.concatenate(orders) if orders else np.zeros(0, np.uint8)
    ev.damaged = np.concatenate(damaged) if damaged else np.zeros(0, np.int64)
    return classes


def _classify_span(m: Memmap, ev: Evidence, ctx: "Context", damage: Damage, span: tuple[int, int],
                   chunk_pages: int, progress: Callable[[int, int], None] | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``classify`` of the PFNs ``span``: their classes (written in
    ``ev.classes`` too), compound heads and orders, and damaged pages."""
    classes = ev.classes
    carry: dict[int, tuple[int, int]] = {}   # head PFN -> (end PFN, head verdict)
    heads, orders, damaged = [], [], []
    damaged_heads = np.zeros(0, np.int64)
    for w in m.chunks(progress, chunk_pages, span):
        lo, hi = int(w.pfn[0]), int(w.pfn[-1]) + 1
        carry = {h: v for h, v in carry.items() if v[0] > lo}
        cls, verdict = classify_pages(w, ChunkEvidence.of(ev, w), ctx, carry)
        bad = damage.damaged(w)
        if bad.any():
            damaged_heads = np.union1d(damaged_heads, w.pfn[bad & w.is_head])
            w.is_head &= ~bad
        if damaged_heads.size:
            bad |= w.is_tail & np.isin(w.head_pfn, damaged_heads)
        cls[bad] = PageClass.DAMAGED
        damaged.append(w.pfn[bad])
        classes[lo:hi] = cls
        h = np.flatnonzero(w.is_head)
        heads.append(w.pfn[h])
        orders.append(w.order[h])
        ends = w.pfn[h] + (1 << w.order[h].astype(np.int64))
        for i in np.flatnonzero(ends > hi).tolist():
            carry[int(w.pfn[h[i]])] = (int(ends[i]), int(verdict[h[i]]))
    join = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype)  # noqa: E731
    return (classes[span[0]:span[1]], join(heads, np.int64), join(orders, np.uint8), join(damaged, np.int64))


def classify_pages(w: PageWords, ev: ChunkEvidence, ctx: Context,
                   carry: dict[int, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Classes of one chunk of pages, and for each page the first head-judged
    rule it matches itself (UNCLAIMED if none): the verdict its tails in the
    next chunks inherit through ``carry``.

    A page takes the first rule that matches it: a per-page rule on its own
    words, a head-judged rule on its compound head's.  So each rule is
    judged once per page, and the answer is the earlier of two indexes: the
    first per-page rule the page matches, and the first head-judged rule
    its head matches (the head's verdict).  A tail whose head is in this
    chunk takes the head's; one whose head came earlier takes the verdict
    carried over; one whose head was never seen (unreadable) is judged on
    its own words."""
    n = w.nr
    lo = int(w.pfn[0])
    none = np.uint8(len(RULES))
    first_own = np.full(n, none, np.uint8)     # first per-page rule the page matches
    first_head = np.full(n, none, np.uint8)    # first head-judged rule its own words match
    for i, (klass, rule) in enumerate(RULES):
        first = first_own if klass in _PER_PAGE else first_head
        first[(first == none) & rule(w, ev, ctx)] = i
    follows = first_head.copy()                # the head-judged rule the page follows
    tail = w.is_tail
    local = tail & (w.head_pfn >= lo) & (w.head_pfn < lo + n)
    follows[local] = first_head[w.head_pfn[local] - lo]
    remote = tail & ~local
    if remote.any():
        for head in unique(w.head_pfn[remote]).tolist():
            if head in carry:
                verdict = carry[head][1]
                follows[remote & (w.head_pfn == head)] = none if verdict == UNCLAIMED else RANK[verdict]
    cls = _CLASS_OF_RULE[np.minimum(first_own, follows)]
    cls[~w.readable] = PageClass.UNREADABLE
    return cls, _VERDICT_OF_RULE[first_head]


#: PageClass of each rule index, and of "no rule" (the last entry)
_CLASS_OF_RULE = np.array([k for k, _ in RULES] + [PageClass.UNATTRIBUTED], np.uint8)
_VERDICT_OF_RULE = np.array([k for k, _ in RULES] + [UNCLAIMED], np.uint8)
