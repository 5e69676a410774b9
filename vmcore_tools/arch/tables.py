"""A page-table format: what the walker (``mm.pagetables``) needs to know
of an architecture's tables, filled in by its module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TableFormat:
    """One architecture's page tables, as the walker reads them
    (``mm.pagetables``).  Levels count down from ``levels`` (the root) to 1
    (the last, whose entries map pages); arrays are of 64-bit entries."""

    levels: int
    page_shift: int
    #: entries of the kernel's root table (fewer than a page holds where the
    #: top level resolves fewer bits), and of every other table
    root_entries: int
    #: the virtual address of the kernel root's entry 0 (a private mm's
    #: root, such as ``efi_mm``'s, maps from 0), and whether the upper half
    #: of a full root is sign-extended (x86-64's canonical form)
    root_base: int
    sign_extend_upper_half: bool
    #: entry -> bool: pointing to a next-level table (``depth`` > 1);
    #: mapping a block (a huge page) at ``depth``; mapping a page (depth 1);
    #: and the PFN it names
    table: Callable[[np.ndarray, int], np.ndarray]
    block: Callable[[np.ndarray, int], np.ndarray]
    page: Callable[[np.ndarray], np.ndarray]
    pfn: Callable[[np.ndarray], np.ndarray]
    #: roots of kernel address spaces the image holds besides ``init_mm``'s
    #: (linker symbols), whose lower tables come from the page allocator
    image_roots: tuple[str, ...] = ()
    #: bytes of the memmap (``vmemmap``) one mapping maps with contiguous
    #: memory: a PMD block where the architecture maps it so, else a page
    vmemmap_block: int = 0
    #: the kernel image's mapping ends at ``_end`` rounded up to this many bytes
    image_end_align: int = 0

    @property
    def entries(self) -> int:
        """Entries of a table below the root: a page of 8-byte entries."""
        return 1 << (self.page_shift - 3)

    def span(self, depth: int) -> int:
        """Bytes one entry at ``depth`` maps."""
        return 1 << (self.page_shift + (self.page_shift - 3) * (depth - 1))

    def root_vas(self, kernel: bool = True) -> np.ndarray:
        """The virtual address each entry of a root table maps from: the
        kernel's, or a private mm's (``kernel=False``)."""
        n = self.root_entries
        base = self.root_base if kernel else 0
        vas = np.uint64(base) + np.arange(n, dtype=np.uint64) * np.uint64(self.span(self.levels))
        if self.sign_extend_upper_half:
            top = 64 - (self.page_shift + (self.page_shift - 3) * self.levels)
            high = np.uint64(((1 << top) - 1) << (64 - top))
            vas = np.where(np.arange(n) >= n // 2, vas | high, vas)
        return vas
