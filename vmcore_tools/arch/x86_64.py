"""x86-64's page tables.

Facts: 4 or 5 levels (VMCOREINFO ``pgtable_l5_enabled``) of 512 entries of
8 bytes; bit 0 present; bit 7 (``_PAGE_PSE``) at the PUD and PMD levels maps
a huge page instead of pointing to a table; the address is bits 12-51,
masked with ``physical_mask`` (memory encryption takes bits off the top).
The root's upper half is the kernel's, its addresses sign-extended from the
top bit the levels resolve (canonical addresses).
"""

from __future__ import annotations

import drgn
import numpy as np

from vmcore_tools.arch.tables import TableFormat
from vmcore_tools.core.features import has_object, vmcoreinfo_numbers

PRESENT = np.uint64(1)
HUGE = np.uint64(0x80)


def table_format(prog: drgn.Program, page_shift: int) -> TableFormat:
    levels = 5 if vmcoreinfo_numbers(prog).get("pgtable_l5_enabled") else 4
    mask = np.uint64(0x000FFFFFFFFFF000)
    if has_object(prog, "physical_mask"):
        mask &= np.uint64(prog["physical_mask"].value_())
    shift = np.uint64(page_shift)

    def huge(e: np.ndarray, depth: int) -> np.ndarray:
        return (e & HUGE).astype(bool) if depth in (2, 3) else np.zeros(e.shape, bool)

    return TableFormat(
        levels=levels, page_shift=page_shift, root_entries=1 << (page_shift - 3), root_base=0,
        sign_extend_upper_half=True,
        page=lambda e: (e & PRESENT).astype(bool),
        table=lambda e, depth: (e & PRESENT).astype(bool) & ~huge(e, depth),
        block=lambda e, depth: (e & PRESENT).astype(bool) & huge(e, depth),
        pfn=lambda e: ((e & mask) >> shift).astype(np.int64),
        vmemmap_block=1 << (2 * page_shift - 3),       # vmemmap_populate_hugepages(): PMD blocks
        image_end_align=1 << (2 * page_shift - 3),     # cleanup_highmap() keeps the image's 2 MiB pages
    )
