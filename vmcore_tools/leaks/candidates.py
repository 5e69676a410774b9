"""Candidates: the allocations the reference scan checks -- unattributed
and page_pool pages, one per allocation -- and those it found nobody
referencing (``Orphans``), kept as arrays whatever the size of the leak."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vmcore_tools.census.census import Census, census as run_census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.mm.memmap import pfn_dtype
from vmcore_tools.refs.reader import Progress
from vmcore_tools.refs.references import Reference
from vmcore_tools.refs.scan import scan_references


@dataclass
class Orphans:
    """Every orphaned allocation, as arrays sorted by PFN.  The refcounts
    themselves are not kept (4 bytes an allocation): their pattern is, and
    each group's range (``suspects.refcount_summary``); ``Census.refcounts``
    reads them again where a list needs them."""

    pfn: np.ndarray          # head PFN (memmap.pfn_dtype)
    order: np.ndarray        # uint8
    pattern: np.ndarray      # uint8: the refcount's pattern, index into suspects.PATTERNS
    suspect: np.ndarray      # int16: index into OrphanReport.suspects
    #: (lowest, highest) refcount of the allocations of each group key (``suspects.group_key``)
    refcount_ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: PFN: refcount, of the allocations of the groups small enough to be read whole
    few_refcounts: dict[int, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        """Pages of all the allocations, counted order by order (no array of
        sizes: at the seed's scale that was 16 bytes an allocation)."""
        return sum(int(np.count_nonzero(self.order == o)) << o for o in range(int(self.order.max(initial=0)) + 1))

    def __len__(self) -> int:
        return int(self.pfn.size)


#: Classes whose pages are leak candidates: no walk found their owner, or
#: only their origin is known (page_pool: see ``candidate_heads``).
CANDIDATE_CLASSES = (PageClass.UNATTRIBUTED, PageClass.PAGE_POOL)


def candidate_heads(c: Census) -> np.ndarray:
    """Unattributed and page_pool order-0 pages and compound heads: one per
    allocation, the tails left out a slice of the class array at a time
    (when most of memory is leaked, an array of every unattributed page and
    its head is tens of bytes per page).

    Fact: a page_pool page keeps its pool's signature (``pp_magic``, 5.14
    to 7.3 at least) from the moment the pool allocates it to the moment
    the pool frees it.  The pool holds it only while it waits in
    the pool's alloc cache or ptr_ring, arrays of page pointers in the
    pool's own memory (slab or kvmalloc'd); handed out, it is held by
    whoever took it (a driver's rx ring, an skb's frags, an XDP frame).  A
    page taken and never given back is what a pool's "N inflight" at
    shutdown counts: marked, and held by nobody.  So the mark says where a
    page came from, not that anyone holds it."""
    return c.pfns_of(*CANDIDATE_CLASSES, keep=lambda un: c.memmap.heads_of(un) == un, step=1 << 18,
                     dtype=pfn_dtype(c.memmap.nr))


def confirm_live(c: Census, heads: np.ndarray, references: dict[int, list[Reference]],
                  progress: Progress | None) -> tuple[np.ndarray, int]:
    """A running kernel changes while it is read: a page allocated after the
    memmap was read can be stored into memory the scan took for free, and
    look orphaned.  A leaked page stays put, so a second census and scan
    must agree: an orphan of the first pass that the second finds referenced
    gets the second pass's references; one that is no longer an unattributed
    allocation of the same order is dropped.  Returns the heads kept and how
    many were dropped."""
    again = run_census(c.prog, progress)
    heads2 = candidate_heads(again)
    scan2 = scan_references(again, heads2, progress)
    unreferenced = heads[~in_sorted(heads, np.fromiter(references, np.int64, len(references)))]
    same = np.isin(unreferenced, heads2) & (again.memmap.order_of(unreferenced) == c.memmap.order_of(unreferenced))
    for h in unreferenced[same].tolist():
        if h in scan2.references:
            references[h] = scan2.references[h]
    return np.setdiff1d(heads, unreferenced[~same]), int((~same).sum())


def in_sorted(sorted_values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Which of ``sorted_values`` (sorted, unique) are in ``wanted``: a bool
    per value, by binary search of the few wanted ones."""
    out = np.zeros(sorted_values.size, bool)
    if sorted_values.size and wanted.size and wanted.dtype != sorted_values.dtype:
        # searched in the values' own type (else numpy widens them all, per call)
        info = np.iinfo(sorted_values.dtype)
        wanted = wanted[(wanted >= info.min) & (wanted <= info.max)].astype(sorted_values.dtype)
    if sorted_values.size and wanted.size:
        i = np.minimum(np.searchsorted(sorted_values, wanted), sorted_values.size - 1)
        out[i[sorted_values[i] == wanted]] = True
    return out


def compact(values: np.ndarray, keep: np.ndarray, step: int = 1 << 18) -> np.ndarray:
    """``values[keep]``, moved to the front of ``values`` itself a slice at a
    time (a slice's kept values never land past where it starts), and
    returned as a view of it: no second array as long as the first."""
    end = 0
    for lo in range(0, values.size, step):
        part = values[lo:lo + step][keep[lo:lo + step]]
        values[end:end + part.size] = part
        end += part.size
    return values[:end]
