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

* **node and zone bits** that name no node or zone: ``set_page_links()``
  writes the node and zone of the ``pglist_data`` whose zone set the page
  up, so the node has one (``NODE_DATA(nid)``) and the zone index is at
  most ``MAX_NR_ZONES`` -- equal to it for a reserved page no zone spans
  (``init_reserved_page()`` looks for the zone that spans the PFN and
  keeps the loop's end when none does: the firmware pages past the last
  zone of a QEMU guest have it).  Where the fields sit is the kernel's own table for
  ``%pGp``, ``pff[]`` in ``lib/vsprintf.c`` (5.12+: widths and shifts of
  section, node, zone, last cpupid, KASAN tag); a kernel without it gets
  no such test.

The largest compound page is a gigantic hugetlb page or a PUD-sized folio:
order ``2 * (PAGE_SHIFT - 3)`` (a page table level of ``PAGE_SIZE / 8``
entries), or the buddy allocator's largest order if that were larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import drgn
import numpy as np

from vmcore_tools.core.features import constant
from vmcore_tools.mm.memmap import Memmap, PageWords, max_buddy_order

#: the top bits every page type keeps: PAGE_TYPE_BASE (up to 6.11), the PGTY_ byte (6.12+)
TYPE_BASE = np.uint32(0xF0000000)


@dataclass
class FlagField:
    """A field kept in the top bits of ``page->flags``: its values are
    ``(flags >> shift) & mask``; ``valid[v]`` says whether ``v`` can be
    there."""

    shift: int
    mask: int
    valid: np.ndarray

    def bad(self, flags: np.ndarray) -> np.ndarray:
        return ~self.valid[(flags >> np.uint64(self.shift)) & np.uint64(self.mask)]


def flag_fields(prog: drgn.Program) -> list[FlagField]:
    """The node and zone fields of ``page->flags`` with the values a page
    can hold (a node with a ``pglist_data``, a zone up to ``MAX_NR_ZONES``),
    from the kernel's ``pff[]`` (``Damage``); none where the kernel has no such table or
    keeps a field out of the flags (width 0)."""
    try:
        table = {f.name.string_().decode(): (f.width.value_(), f.shift.value_(), f.mask.value_())
                 for f in prog["pff"]}
    except (KeyError, LookupError, AttributeError, drgn.FaultError):
        return []
    out = []
    node = table.get("node")
    if node and node[0]:
        valid = np.zeros(node[2] + 1, bool)
        try:
            data = prog["node_data"]
            for nid in range(min(len(data), valid.size)):
                valid[nid] = bool(data[nid].value_())
        except KeyError:
            valid[0] = True            # one node: contig_page_data
        out.append(FlagField(node[1], node[2], valid))
    zone = table.get("zone")
    zones = constant(prog, "__MAX_NR_ZONES")
    if zone and zone[0] and zones is not None:
        out.append(FlagField(zone[1], zone[2], np.arange(zone[2] + 1) <= zones))
    return out


class Damage:
    """The tests of ``damaged``, with this kernel's limits: the largest
    compound order, the top bits every page type keeps, and the node and
    zone fields of the flags."""

    def __init__(self, max_order: int, type_base: int = int(TYPE_BASE),
                 fields: list[FlagField] | None = None):
        self.max_order = max_order
        self.type_base = np.uint32(type_base)
        self.fields = fields or []

    @classmethod
    def of(cls, prog: drgn.Program, m: Memmap) -> "Damage":
        pud_order = 2 * (m.page_shift - 3)
        base = constant(prog, "PGTY_buddy")
        return cls(max(pud_order, max_buddy_order(prog)),
                   base << 24 if base is not None else int(TYPE_BASE), flag_fields(prog))

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
        bad = bad_tail | bad_head | (w.refcount < 0) | no_type
        for field in self.fields:
            bad |= field.bad(w.flags)
        return ok & bad


def pfn_runs(pfns: np.ndarray) -> list[list[int]]:
    """Sorted PFNs as runs: ``[first PFN, pages]``."""
    if not pfns.size:
        return []
    breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [pfns.size]))
    return [[int(pfns[s]), int(e - s)] for s, e in zip(starts.tolist(), ends.tolist())]
