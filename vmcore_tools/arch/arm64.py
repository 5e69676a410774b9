"""arm64's page tables (4 KiB and 16 KiB granules).

Facts (the Arm ARM's VMSAv8-64 descriptors, ``arch/arm64/include/asm/pgtable-hwdef.h``):

* bits[1:0] of an entry: ``x0`` invalid; ``11`` a table at every level but
  the last, a page at the last; ``01`` a block (a huge page) where the
  granule allows one: PMD and PUD with 4 KiB pages, PMD alone with 16 KiB.
* the output address is bits [47:PAGE_SHIFT]: physical addresses below
  256 TiB.  With 52-bit addresses (LPA2, which Debian's 6.12 kernels use
  for virtual addresses on a CPU that has it) bits [49:48] and [9:8] would
  carry more, which no memory here reaches.
* a table holds ``PAGE_SIZE / 8`` entries, each level resolving
  ``PAGE_SHIFT - 3`` bits of the address; the root resolves what is left of
  the ``VA_BITS`` the kernel runs with (``64 - TCR_EL1_T1SZ``, VMCOREINFO),
  so it may hold fewer entries (2 with 16 KiB pages and 48 bits).
* the kernel's root (``swapper_pg_dir``, TTBR1) maps the top ``2^VA_BITS``
  bytes of the address space; a process's (TTBR0) the bottom ones.
* ``vmemmap_populate()`` maps the memmap with PMD blocks with 4 KiB pages
  only, with base pages otherwise (``vmemmap_populate_basepages()``).
* with KPTI the CPU runs user mode on ``tramp_pg_dir`` (in the image),
  which maps the exception entry trampoline through lower tables of its
  own, allocated at boot (``map_entry_trampoline()``): only its entries
  name them.
"""

from __future__ import annotations

import drgn
import numpy as np

from vmcore_tools.arch.tables import TableFormat
from vmcore_tools.core.features import vmcoreinfo_numbers

VALID = np.uint64(1)
TABLE_BIT = np.uint64(2)
ADDRESS = np.uint64(0x0000FFFFFFFFFFFF)


def va_bits(prog: drgn.Program) -> int:
    """The virtual address bits the kernel runs with."""
    numbers = vmcoreinfo_numbers(prog)
    if "TCR_EL1_T1SZ" in numbers:
        return 64 - numbers["TCR_EL1_T1SZ"]
    return numbers["VA_BITS"]


def table_format(prog: drgn.Program, page_shift: int) -> TableFormat:
    va = va_bits(prog)
    per_level = page_shift - 3
    levels = -(-(va - page_shift) // per_level)
    root_bits = (va - page_shift) - (levels - 1) * per_level
    block_depths = (2, 3) if page_shift == 12 else (2,)
    mask = ADDRESS & ~np.uint64((1 << page_shift) - 1)
    shift = np.uint64(page_shift)

    def valid(e: np.ndarray) -> np.ndarray:
        return (e & VALID).astype(bool)

    def table(e: np.ndarray, depth: int) -> np.ndarray:
        return valid(e) & (e & TABLE_BIT).astype(bool) if depth > 1 else np.zeros(e.shape, bool)

    def block(e: np.ndarray, depth: int) -> np.ndarray:
        if depth not in block_depths:
            return np.zeros(e.shape, bool)
        return valid(e) & ~(e & TABLE_BIT).astype(bool)

    return TableFormat(
        levels=levels, page_shift=page_shift, root_entries=1 << root_bits,
        root_base=(1 << 64) - (1 << va), sign_extend_upper_half=False,
        table=table, block=block, page=lambda e: valid(e) & (e & TABLE_BIT).astype(bool),
        pfn=lambda e: ((e & mask) >> shift).astype(np.int64),
        image_roots=("tramp_pg_dir",),
        vmemmap_block=(1 << (2 * page_shift - 3)) if page_shift == 12 else 1 << page_shift,
        image_end_align=1 << page_shift,                # map_kernel(): its segments, to PAGE_ALIGN(_end)
    )
