"""CMA areas: which of their pages ``cma_alloc()`` has handed out.

Fact (mm/cma.c, mm/cma.h): a contiguous memory area keeps a bitmap of its
allocations, one bit per ``1 << order_per_bit`` pages, set by
``cma_alloc()`` and cleared by ``cma_release()``.  The pages themselves go
back to the page allocator while free (``MIGRATE_CMA`` blocks, lent to
movable allocations, whose bit stays clear); ``alloc_contig_range()`` hands
an allocation out as order-0 pages of refcount 1, however many.  The areas
are ``cma_areas[0 .. cma_area_count)``; from 6.14 an area may span several
ranges (``cma->ranges[0 .. nranges)``, each with its own base, count and
bitmap), before that it is one (``base_pfn``, ``count``, ``bitmap``).
Kernels built without ``CONFIG_CMA`` (Debian's amd64 kernels among them)
have no ``cma_areas``.
"""

from __future__ import annotations

from dataclasses import dataclass

import drgn
import numpy as np

from vmcore_tools.core.features import has_member, has_object
from vmcore_tools.core.walk import damaged


@dataclass(frozen=True)
class CmaRange:
    name: str
    base_pfn: int
    count: int
    #: PFNs of the range that ``cma_alloc()`` has handed out, sorted
    allocated: np.ndarray


def cma_ranges(prog: drgn.Program) -> list[CmaRange]:
    """Every range of every CMA area, with the pages allocated from it."""
    if not has_object(prog, "cma_areas") or not has_object(prog, "cma_area_count"):
        return []
    out = []
    multi = has_member(prog, "struct cma", "ranges")
    named = has_member(prog, "struct cma", "name")
    for area in prog["cma_areas"][:prog["cma_area_count"].value_()]:
        name = area.name.string_().decode(errors="replace") if named else ""
        per_bit = 1 << area.order_per_bit.value_()
        ranges = area.ranges[:area.nranges.value_()] if multi else [area]
        for r in ranges:
            base, count = r.base_pfn.value_(), r.count.value_()
            if base + count > prog["max_pfn"].value_():
                damaged("the CMA areas (cma_areas)", f"area {name or '?'} at pfn {base} of {count} pages runs "
                        "past max_pfn: not read")
                continue
            bits = -(-count // per_bit)
            raw = np.frombuffer(prog.read(r.bitmap.value_(), -(-bits // 64) * 8), np.uint8)
            used = np.flatnonzero(np.unpackbits(raw, bitorder="little")[:bits])
            pfns = (base + (used[:, None] * per_bit + np.arange(per_bit)).reshape(-1)).astype(np.int64)
            out.append(CmaRange(name, base, count, pfns[pfns < base + count]))
    return out
