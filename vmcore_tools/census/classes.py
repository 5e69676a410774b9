"""The census's classes: who a page can belong to, one byte per page."""

from __future__ import annotations

from collections.abc import Callable

from enum import IntEnum

import numpy as np


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
    PAGE_EXT = 23        # page_ext tables: page_owner records and other per-page extensions
    DEVICE = 24          # ZONE_DEVICE: a dev_pagemap's pages (pmem, device-private), not RAM
    DAMAGED = 25         # its struct page holds a state no kernel writes (census/damage.py): not classed

    @property
    def label(self) -> str:
        return self.name.lower()


#: Classes that are kernel memory (K in T = U + K + S + C + F).
KERNEL_CLASSES = (PageClass.RESERVED, PageClass.SLAB, PageClass.PAGE_TABLE,
                  PageClass.KERNEL_PAGE_TABLE, PageClass.HUGETLB,
                  PageClass.OFFLINE, PageClass.MOVABLE_NONLRU, PageClass.PAGE_POOL,
                  PageClass.KERNEL_STACK, PageClass.VMALLOC, PageClass.PERCPU,
                  PageClass.PAGE_FRAG, PageClass.NIC_RING, PageClass.LARGE_KMALLOC,
                  PageClass.ZERO_REF, PageClass.UNATTRIBUTED, PageClass.PAGE_EXT)


#: The class array's value for a page no walk has claimed (before ``classify``).
UNCLAIMED = 255


def class_counts(classes: np.ndarray, step: int = 1 << 18) -> np.ndarray:
    """Pages per class value (256 counters), a slice at a time: ``np.bincount``
    widens its input to 8-byte integers, which on the whole array would cost
    8 bytes per page."""
    out = np.zeros(256, np.int64)
    for lo in range(0, classes.size, step):
        out += np.bincount(classes[lo:lo + step], minlength=256)
    return out


def pfns_in(classes: np.ndarray, *klasses: PageClass, keep: Callable[[np.ndarray], np.ndarray] | None = None,
            step: int = 1 << 20, dtype: np.dtype = np.dtype(np.int64)) -> np.ndarray:
    """PFNs whose class is any of ``klasses`` (of those, the ones ``keep``
    says yes to), found a slice at a time (no page-sized temporary), as
    ``dtype`` (``memmap.pfn_dtype`` for the long lists)."""
    wanted = np.array(klasses, np.uint8)
    out = np.empty(int(class_counts(classes)[wanted].sum()), dtype)   # filled, not concatenated
    end = 0
    for lo in range(0, classes.size, step):
        found = lo + np.flatnonzero(np.isin(classes[lo:lo + step], wanted))
        found = found if keep is None else found[keep(found)]
        out[end:end + found.size] = found
        end += found.size
    return out[:end]
