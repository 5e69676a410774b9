"""Boot memory: what the kernel took from memblock before the page allocator
ran, and which of it the dump still gives an extent for.

Fact: memblock memory stays ``PG_reserved`` for the kernel's life, and
x86-64 frees memblock's own record of its allocations after boot (no
``CONFIG_ARCH_KEEP_MEMBLOCK``), so a reserved page says nothing about who
took it.  A few allocations keep their extent in a global: the kernel image
(``_text`` to ``_end``), the memmap (the pages behind ``vmemmap``), the
swiotlb bounce buffers (``io_tlb_default_mem``), the KFENCE pool
(``kfence.py``) and the first per-cpu chunk (``pcpu_base_addr``, one unit
of ``pcpu_unit_size`` bytes per possible CPU).  Their pages are found by
the page tables (``follow_phys``), never by an architecture's constants.
"""

from __future__ import annotations

import drgn
import numpy as np
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.mm import follow_phys

from vmcore_tools.arch import table_format
from vmcore_tools.core.features import has_member, has_object, has_symbol, image_symbol
from vmcore_tools.mm.kfence import kfence_pool
from vmcore_tools.mm.memmap import Memmap


def boot_extents(prog: drgn.Program, memmap: Memmap) -> dict[str, np.ndarray]:
    """The PFNs of each boot allocation whose extent the dump gives, by name;
    an extent that cannot be read is left out."""
    out: dict[str, np.ndarray] = {}
    for name, find in (("kernel image", _image), ("memmap", _memmap), ("swiotlb", _swiotlb),
                       ("KFENCE pool", _kfence), ("per-cpu first chunk", _percpu)):
        try:
            pfns = find(prog, memmap)
        except (drgn.FaultError, LookupError, ValueError):
            continue
        if pfns.size:
            out[name] = pfns
    return out


def _mapped_pfns(prog: drgn.Program, start: int, end: int, step: int) -> np.ndarray:
    """The PFNs behind kernel virtual ``[start, end)``, found a ``step``-aligned
    block at a time through ``init_mm``'s page tables (a block of ``step``
    bytes maps contiguous memory)."""
    mm = prog["init_mm"].address_of_()
    shift = prog["PAGE_SHIFT"].value_()
    out = []
    lo = start
    while lo < end:
        hi = min(end, (lo // step + 1) * step)      # a step's mapping is contiguous: never cross one
        try:
            first = follow_phys(mm, lo).value_() >> shift
            out.append(np.arange(first, first + ((hi - 1) >> shift) - (lo >> shift) + 1, dtype=np.int64))
        except drgn.FaultError:
            pass
        lo = hi
    return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _image(prog: drgn.Program, memmap: Memmap) -> np.ndarray:
    if not (has_symbol(prog, "_text") and has_symbol(prog, "_end")):
        return np.zeros(0, np.int64)
    return _mapped_pfns(prog, image_symbol(prog, "_text"), image_symbol(prog, "_end"), memmap.page_size)


def _memmap(prog: drgn.Program, memmap: Memmap) -> np.ndarray:
    """The pages behind the struct pages of the valid PFN ranges (the holes between them have none)."""
    size = memmap.struct_size
    fmt = table_format(prog, memmap.page_shift)
    step = fmt.vmemmap_block if fmt is not None else memmap.page_size    # blocks as the architecture maps it
    parts = [_mapped_pfns(prog, memmap.memmap + lo * size, memmap.memmap + hi * size, step)
             for lo, hi in memmap.ranges]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _swiotlb(prog: drgn.Program, memmap: Memmap) -> np.ndarray:
    """``io_tlb_default_mem``: its pool's physical ``start`` and ``end``
    (``defpool`` from 6.6, the structure itself before)."""
    if not has_object(prog, "io_tlb_default_mem"):
        return np.zeros(0, np.int64)
    mem = prog["io_tlb_default_mem"]
    pool = mem.defpool if has_member(prog, "struct io_tlb_mem", "defpool") else mem
    shift = memmap.page_shift
    return np.arange(pool.start.value_() >> shift, pool.end.value_() >> shift, dtype=np.int64)


def _kfence(prog: drgn.Program, memmap: Memmap) -> np.ndarray:
    pool = kfence_pool(prog, memmap)
    return pool.pfns(memmap) if pool is not None else np.zeros(0, np.int64)


def percpu_units(prog: drgn.Program, page_shift: int) -> dict[int, tuple[int, int]]:
    """Each possible CPU's unit of the first per-cpu chunk, ``[start, end)``:
    ``__per_cpu_offset[cpu]`` plus the section start, up to the end of the
    first chunk's dynamic area.

    Facts: ``per_cpu_ptr()`` adds the offset modulo 2**64.  Up to 6.14
    the x86-64 section is linked at 0 and the offset is the unit's
    address; from 6.15 the section has its link address and the offset
    is the unit's address minus it, which wraps.  A unit is
    ``pcpu_unit_size`` bytes, but ``pcpu_embed_first_chunk()`` gives the
    tail of each one beyond the static, reserved and dynamic areas back
    to memblock at boot: those pages belong to whoever got them since (a
    slab page, a later boot allocation), so a unit ends where the first
    chunk's pages do -- ``pcpu_first_chunk->base_addr + nr_pages`` pages,
    as an offset from unit 0 (``pcpu_base_addr``)."""
    start = prog.symbol("__per_cpu_start").address if has_symbol(prog, "__per_cpu_start") else 0
    size = prog["pcpu_unit_size"].value_()
    if has_object(prog, "pcpu_first_chunk") and has_object(prog, "pcpu_base_addr"):
        first = prog["pcpu_first_chunk"]
        used = first.base_addr.value_() + (first.nr_pages.value_() << page_shift) - prog["pcpu_base_addr"].value_()
        if 0 < used < size:
            size = used
    out = {}
    for cpu in for_each_possible_cpu(prog):
        base = (prog["__per_cpu_offset"][cpu].value_() + start) & 0xFFFF_FFFF_FFFF_FFFF
        out[cpu] = (base, base + size)
    return out


def _percpu(prog: drgn.Program, memmap: Memmap) -> np.ndarray:
    units = percpu_units(prog, memmap.page_shift).values()
    return np.unique(np.concatenate([_mapped_pfns(prog, lo, hi, memmap.page_size) for lo, hi in units]
                                    or [np.zeros(0, np.int64)]))
