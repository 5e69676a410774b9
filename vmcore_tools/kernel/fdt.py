"""The flattened device tree's mapping: which pages it maps by accident.

Fact (arm64, ``fixmap_remap_fdt()`` in arch/arm64/mm/mmu.c): the kernel
maps the FDT the bootloader left in RAM at the fixmap's FDT slots, and 6.1
maps whole ``SWAPPER_BLOCK_SIZE`` blocks there (a PMD: 2 MiB with 4 KiB
pages), from the block the FDT starts in to the one it ends in, and keeps
that mapping.  ``initial_boot_params`` is the FDT's address in it, and
``fdt_totalsize()`` (big-endian, at offset 4 of the header) its length.
memblock reserves the FDT's own pages; the rest of those blocks is RAM the
buddy allocator hands to anyone -- a leaked rx page too -- mapped there
read-only because it shares the FDT's block, not because anyone keeps it.
Later kernels map the FDT page by page, and then nothing is mapped beside it.
"""

from __future__ import annotations

import drgn
import numpy as np

from vmcore_tools.core.features import has_object


def fdt_neighbours(prog: drgn.Program, vas: np.ndarray, pfns: np.ndarray, page_shift: int) -> np.ndarray:
    """Which of the kernel's leaf mappings (``vas`` -> ``pfns``) map a page
    beside the FDT in its block mapping: the same virtual-to-physical
    offset as the FDT's own pages, within a block of it, outside its
    ``[initial_boot_params, + totalsize)``.  All False without an FDT."""
    out = np.zeros(vas.size, bool)
    if not has_object(prog, "initial_boot_params"):
        return out
    start = prog["initial_boot_params"].value_()
    if not start:
        return out
    try:
        size = int.from_bytes(prog.read(start + 4, 4), "big")
    except drgn.FaultError:
        return out
    block = 1 << (2 * page_shift - 3)       # a PMD: what one table page of leaves maps
    first = np.uint64(start >> page_shift << page_shift)
    own = np.flatnonzero(vas == first)
    if not own.size or size > block * 64:   # no leaf maps it, or no FDT header there
        return out
    offset = np.int64(pfns[own[0]]) - np.int64(int(first) >> page_shift)
    end = min(-(-(start + size) // block) * block, (1 << 64) - 1)
    near = (vas >= np.uint64(start // block * block)) & (vas < np.uint64(end))
    linear = (pfns.astype(np.int64) - (vas >> np.uint64(page_shift)).astype(np.int64)) == offset
    fdt = (vas >= first) & (vas < np.uint64(start + size))
    return near & linear & ~fdt
