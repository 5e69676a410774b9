"""Who owns a page: one rule per owner class, in one place.

The census (``census.py``) gathers the evidence: the decoded memmap
(``pages.py``) and the sets of PFNs found by walking kernel structures (free
lists, vmap areas, per-cpu chunks, page_frag caches).  This module turns that
evidence into one class per page.  Rules run in the order of ``RULES``; the
first that claims a page wins, so every page lands in exactly one class.
Compound pages are classified by their head and the tails inherit its class,
so a compound page counts as its full size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import drgn
import numpy as np

from .features import constant, has_member, vmcoreinfo_numbers
from .pages import PageArrays


class PageClass(IntEnum):
    NO_PAGE = 0          # PFN without a struct page (hole between sections)
    UNREADABLE = 1       # its struct page is missing from the dump
    FREE = 2
    FREE_PCP = 3
    RESERVED = 4
    SLAB = 5
    PAGE_TABLE = 6
    HUGETLB = 7
    OFFLINE = 8
    MOVABLE_NONLRU = 9   # zsmalloc, balloon (non-LRU movable)
    PAGE_POOL = 10
    ANON = 11
    FILE = 12
    SHMEM = 13
    KERNEL_STACK = 14
    VMALLOC = 15
    PERCPU = 16
    PAGE_FRAG = 17
    LARGE_KMALLOC = 18
    ZERO_REF = 19        # refcount 0 yet on no free list: in transit
    UNATTRIBUTED = 20    # allocated, no owner found: where a page-allocator leak lands
    NIC_RING = 21        # held by a NIC rx ring (rings/: i40e family, virtio_net, e1000e)
    KERNEL_PAGE_TABLE = 22  # page-table pages without the PageTable type (found by walking)

    @property
    def label(self) -> str:
        return self.name.lower()


#: Classes that are kernel memory (K in T = U + K + S + C + F).
KERNEL_CLASSES = (PageClass.RESERVED, PageClass.SLAB, PageClass.PAGE_TABLE,
                  PageClass.KERNEL_PAGE_TABLE, PageClass.HUGETLB,
                  PageClass.OFFLINE, PageClass.MOVABLE_NONLRU, PageClass.PAGE_POOL,
                  PageClass.KERNEL_STACK, PageClass.VMALLOC, PageClass.PERCPU,
                  PageClass.PAGE_FRAG, PageClass.NIC_RING, PageClass.LARGE_KMALLOC,
                  PageClass.ZERO_REF, PageClass.UNATTRIBUTED)


class PageTypes:
    """Page types stored in the ``_mapcount``/``page_type`` word.

    * 6.12+: the type is the top byte, ``enum pagetype`` (``PGTY_buddy`` =
      0xf0, ...) is in DWARF.
    * 4.18 to 6.11: ``page_type`` starts as -1 and a type clears one bit under
      ``PAGE_TYPE_BASE`` (0xf0000000); ``PageX`` is
      ``(page_type & (PAGE_TYPE_BASE | PG_x)) == PAGE_TYPE_BASE``.  VMCOREINFO
      exports ``PAGE_BUDDY_MAPCOUNT_VALUE`` (= ~PG_buddy) and
      ``PAGE_OFFLINE_MAPCOUNT_VALUE``.  ``PG_table`` is not exported: it is
      0x400 while ``PG_kmemcg`` (0x200) exists, i.e. before 5.11, whose
      ``struct page`` has ``mem_cgroup`` instead of ``memcg_data``; 0x200 after.
    """

    BASE = 0xF0000000

    def __init__(self, prog: drgn.Program):
        self.numbers = vmcoreinfo_numbers(prog)
        self.top_byte = constant(prog, "PGTY_buddy") is not None
        self.pgty = {name: constant(prog, f"PGTY_{name}")
                     for name in ("buddy", "offline", "table", "guard", "hugetlb", "slab",
                                  "zsmalloc", "large_kmalloc")}
        self.old_bits: dict[str, int] = {}
        if not self.top_byte:
            for name in ("buddy", "offline"):
                v = self.numbers.get(f"PAGE_{name.upper()}_MAPCOUNT_VALUE")
                if v is not None:
                    self.old_bits[name] = ~v & 0xFFFFFFFF
            self.old_bits["table"] = 0x200 if has_member(prog, "struct page", "memcg_data") else 0x400

    def is_type(self, mapcount: np.ndarray, name: str) -> np.ndarray:
        if self.top_byte:
            value = self.pgty.get(name)
            if value is None:
                return np.zeros(mapcount.shape, bool)
            return (mapcount >> np.uint32(24)) == np.uint32(value)
        bit = self.old_bits.get(name)
        if bit is None:
            return np.zeros(mapcount.shape, bool)
        mask = np.uint32(self.BASE | bit)
        return (mapcount & mask) == np.uint32(self.BASE)


@dataclass
class Evidence:
    """What the census found by walking kernel structures (PFN masks)."""

    free_buddy: np.ndarray        # bool per PFN: inside a free buddy block
    free_pcp: np.ndarray          # bool per PFN: on a per-CPU free list
    vmalloc: np.ndarray           # bool per PFN: in a vm_struct's pages[]
    kernel_stack: np.ndarray      # bool per PFN: pages of vmalloc'd thread stacks
    percpu: np.ndarray            # bool per PFN: populated per-cpu chunk pages
    page_frag: np.ndarray         # bool per PFN: page of a known page_frag cache
    nic_ring: np.ndarray | None = None  # bool per PFN: compound head held by a ring slot
    page_tables: np.ndarray | None = None  # bool per PFN: reached by walking page tables
    shmem_mappings: set[int] = field(default_factory=set)  # address_space of shmem files
    hugetlb_heads: np.ndarray | None = None


Rule = Callable[[PageArrays, Evidence, "Context"], np.ndarray]


@dataclass
class Context:
    prog: drgn.Program
    types: PageTypes
    pg: dict[str, int]  # PG_* bit numbers


def _flag(a: PageArrays, ctx: Context, name: str) -> np.ndarray:
    bit = ctx.pg.get(name)
    if bit is None:
        return np.zeros(a.nr, bool)
    return (a.flags & np.uint64(1 << bit)).astype(bool)


def rule_free(a, ev, ctx):
    """Free buddy blocks: PageBuddy marks the first page of a block, whose
    order is in ``page_private``; the census expands that to the whole block."""
    return ev.free_buddy


def rule_free_pcp(a, ev, ctx):
    """Free pages on per-CPU lists (``zone->per_cpu_pageset``): not PageBuddy,
    refcount 0, found by walking the lists."""
    return ev.free_pcp


def rule_reserved(a, ev, ctx):
    """``PG_reserved``: kernel image, memblock allocations, firmware holes."""
    return _flag(a, ctx, "reserved")


def rule_slab(a, ev, ctx):
    """Slab: ``PG_slab`` on the head page until 6.9, the ``slab`` page type
    from 6.10 (``PAGE_SLAB_MAPCOUNT_VALUE`` in VMCOREINFO).  Tail pages
    inherit from their head, so multi-page slabs count in full."""
    value = ctx.types.numbers.get("PAGE_SLAB_MAPCOUNT_VALUE")
    if value is not None:
        return (a.mapcount >> np.uint32(24)) == np.uint32((value >> 24) & 0xFF)
    return _flag(a, ctx, "slab")


def rule_page_table(a, ev, ctx):
    """Page tables: the ``table`` page type (4.18+; ``ptdesc`` from 6.5 is the
    same struct page)."""
    return ctx.types.is_type(a.mapcount, "table")


def rule_kernel_page_table(a, ev, ctx):
    """Page-table pages without the PageTable type: the kernel's own tables
    and constructor-less upper levels, found by walking ``init_mm`` and each
    process's tables from the PGD (NR_PAGETABLE does not count them)."""
    return ev.page_tables if ev.page_tables is not None else np.zeros(a.nr, bool)


def rule_hugetlb(a, ev, ctx):
    """hugetlbfs pages: the ``hugetlb`` page type (6.9+), before that the
    first tail's ``compound_dtor`` == ``HUGETLB_PAGE_DTOR``."""
    mask = ctx.types.is_type(a.mapcount, "hugetlb")
    if ev.hugetlb_heads is not None:
        mask = mask | ev.hugetlb_heads
    return mask


def rule_offline(a, ev, ctx):
    """Offline pages (virtio-mem, balloon inflation): the ``offline`` page type."""
    return ctx.types.is_type(a.mapcount, "offline") | ctx.types.is_type(a.mapcount, "guard")


def rule_movable_nonlru(a, ev, ctx):
    """zsmalloc and balloon pages: ``mapping & PAGE_MAPPING_FLAGS == PAGE_MAPPING_MOVABLE``
    (bit 1 only), or the ``zsmalloc`` page type (6.12+)."""
    return ((a.mapping & np.uint64(3)) == 2) | ctx.types.is_type(a.mapcount, "zsmalloc")


def rule_page_pool(a, ev, ctx):
    """page_pool pages (5.14+): ``pp_magic`` holds ``PP_SIGNATURE`` (0x40 +
    POISON_POINTER_DELTA, 0xdead000000000000 on x86-64) once its low bits
    (and, from 6.15, the DMA index bits) are masked."""
    if a.pp_magic is None:
        return np.zeros(a.nr, bool)
    return (a.pp_magic & np.uint64(0xFFFF0000000000FC)) == np.uint64(0xDEAD000000000040)


def rule_anon(a, ev, ctx):
    """Anonymous memory (and KSM): ``mapping & PAGE_MAPPING_ANON`` (bit 0).
    THP are compound: tails inherit from the head."""
    return (a.mapping & np.uint64(1)).astype(bool)


def rule_shmem(a, ev, ctx):
    """shmem/tmpfs: page-cache pages whose ``address_space`` has ``a_ops ==
    &shmem_aops`` (checked once per distinct mapping by the census)."""
    if not ev.shmem_mappings:
        return np.zeros(a.nr, bool)
    return np.isin(a.mapping, np.fromiter(ev.shmem_mappings, np.uint64))


def rule_file(a, ev, ctx):
    """Page cache: ``mapping`` points to an ``address_space`` (low bits clear)."""
    return (a.mapping != 0) & ((a.mapping & np.uint64(3)) == 0)


def rule_kernel_stack(a, ev, ctx):
    """Thread stacks: vmalloc'd (VMAP_STACK) by ``alloc_thread_stack_node``."""
    return ev.kernel_stack


def rule_vmalloc(a, ev, ctx):
    """vmalloc: pages listed in a ``vm_struct.pages[]`` of a busy vmap area."""
    return ev.vmalloc


def rule_percpu(a, ev, ctx):
    """Per-cpu chunks allocated after boot (``pcpu_get_vm_areas``); the
    first chunk is memblock memory and counts as reserved."""
    return ev.percpu


def rule_page_frag(a, ev, ctx):
    """page_frag caches: per-CPU ``netdev_alloc_cache``/``napi_alloc_cache``
    and every task's ``task_frag``."""
    return ev.page_frag


def rule_nic_ring(a, ev, ctx):
    """Pages a NIC rx ring holds: found by the ring walkers (``rings/``), e.g.
    ``i40e_ring->rx_bi[i].page`` or a virtqueue descriptor's address."""
    return ev.nic_ring if ev.nic_ring is not None else np.zeros(a.nr, bool)


def rule_large_kmalloc(a, ev, ctx):
    """Large kmalloc: marked by the ``large_kmalloc`` page type only from 6.15;
    before that it is an unmarked compound page."""
    return ctx.types.is_type(a.mapcount, "large_kmalloc")


def rule_zero_ref(a, ev, ctx):
    """Refcount 0 but on no free list: pages being freed or allocated."""
    return a.refcount == 0


RULES: tuple[tuple[PageClass, Rule], ...] = (
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
    (PageClass.PAGE_FRAG, rule_page_frag),
    (PageClass.NIC_RING, rule_nic_ring),
    (PageClass.LARGE_KMALLOC, rule_large_kmalloc),
    (PageClass.ZERO_REF, rule_zero_ref),
)

#: Rules that are judged on the compound head; tails take the head's class.
#: (Free blocks, pcp lists and vmalloc/percpu/stack pages are listed page by
#: page, and reserved is a per-page flag.)
_PER_PAGE = {PageClass.FREE, PageClass.FREE_PCP, PageClass.RESERVED, PageClass.KERNEL_STACK,
             PageClass.VMALLOC, PageClass.PERCPU, PageClass.KERNEL_PAGE_TABLE}


def page_flag_bits(prog: drgn.Program) -> dict[str, int]:
    """``PG_*`` bit numbers from ``enum pageflags`` in DWARF."""
    out = {}
    for name in ("reserved", "slab", "head", "lru", "swapbacked", "swapcache", "private"):
        value = constant(prog, f"PG_{name}")
        if value is not None:
            out[name] = value
    return out


def classify(prog: drgn.Program, a: PageArrays, ev: Evidence) -> np.ndarray:
    """One ``PageClass`` (uint8) per PFN."""
    ctx = Context(prog, PageTypes(prog), page_flag_bits(prog))
    cls = np.full(a.nr, PageClass.UNATTRIBUTED, np.uint8)
    cls[~a.valid] = PageClass.NO_PAGE
    cls[a.valid & ~a.readable] = PageClass.UNREADABLE
    todo = a.valid & a.readable
    head = a.head_pfn()
    is_tail = head != np.arange(a.nr)
    for klass, rule in RULES:
        mask = rule(a, ev, ctx)
        if klass not in _PER_PAGE:
            mask = mask & ~is_tail
            # a tail follows its head's verdict
            mask = mask | (is_tail & mask[head])
        hit = todo & mask
        cls[hit] = klass
        todo &= ~hit
    return cls
