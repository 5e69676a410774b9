"""Damaged struct pages: states no kernel writes.

A crash dump comes from a damaged kernel, and a stray write over the memmap
leaves ``struct page``s that no rule should class as if they were real: they
are counted as ``damaged`` (``PageClass.DAMAGED``) and listed as PFN ranges,
never as slab, anon or a leak candidate.  Each test below is a state the
kernel never leaves a page in, with its limits read from the dump:

* a **tail** (``compound_head`` bit 0) whose head lies outside the memmap,
  after the tail, or farther before it than the largest compound page
  reaches: ``prep_compound_tail()`` points every tail at its own head;
* a tail with a **refcount**: tails are set to 0 (``prep_compound_tail()``,
  ``set_page_count(p, 0)``) and every reference is taken on the head;
* a **head** (``PG_head``) that is also a tail, whose order is above the
  largest compound page the kernel makes, or that is not aligned to its
  order: buddy blocks and gigantic pages are naturally aligned;
* a **negative refcount**: ``page_ref_*`` never takes a page below zero
  (the kernel's own ``VM_BUG_ON_PAGE(page_ref_count(page) <= 0)`` on get);
* a ``_mapcount`` **below -1 that is no page type**: a type keeps the
  type base in its top bits (``PAGE_TYPE_BASE``, 0xf0000000, up to 6.11;
  the ``PGTY_*`` byte, 0xf0 and up, from 6.12).

The largest compound page is a gigantic hugetlb page or a PUD-sized folio:
order ``2 * (PAGE_SHIFT - 3)`` (a page table level of ``PAGE_SIZE / 8``
entries), or the buddy allocator's largest order if that were larger.
"""

from __future__ import annotations

import drgn
import numpy as np

from vmcore_tools.core.features import constant
from vmcore_tools.mm.memmap import Memmap, PageWords, max_buddy_order

#: the top bits every page type keeps: PAGE_TYPE_BASE (up to 6.11), the PGTY_ byte (6.12+)
TYPE_BASE = np.uint32(0xF0000000)


class Damage:
    """The tests of ``damaged``, with this kernel's limits: the largest
    compound order, and the top bits every page type keeps."""

    def __init__(self, max_order: int, type_base: int = int(TYPE_BASE)):
        self.max_order = max_order
        self.type_base = np.uint32(type_base)

    @classmethod
    def of(cls, prog: drgn.Program, m: Memmap) -> "Damage":
        pud_order = 2 * (m.page_shift - 3)
        base = constant(prog, "PGTY_buddy")
        return cls(max(pud_order, max_buddy_order(prog)),
                   base << 24 if base is not None else int(TYPE_BASE))

    def damaged(self, w: PageWords) -> np.ndarray:
        """Which readable pages of ``w`` hold a state no kernel writes."""
        ok = w.readable
        tail_bit = (w.compound_head & np.uint64(1)) != 0
        reach = np.int64(1) << np.int64(self.max_order)
        bad_tail = tail_bit & ((w.head_pfn >= w.pfn) | (w.head_pfn < w.pfn - reach) | (w.refcount != 0))
        order = w.order.astype(np.int64)
        misaligned = (w.pfn & ((np.int64(1) << np.minimum(order, 62)) - 1)) != 0
        bad_head = w.is_head & (tail_bit | (order > self.max_order) | misaligned)
        signed = w.mapcount.view(np.int32)
        no_type = (signed < -1) & ((w.mapcount & self.type_base) != self.type_base)
        return ok & (bad_tail | bad_head | (w.refcount < 0) | no_type)


def pfn_runs(pfns: np.ndarray) -> list[list[int]]:
    """Sorted PFNs as runs: ``[first PFN, pages]``."""
    if not pfns.size:
        return []
    breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [pfns.size]))
    return [[int(pfns[s]), int(e - s)] for s, e in zip(starts.tolist(), ends.tolist())]
