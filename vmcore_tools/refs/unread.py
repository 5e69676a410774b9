"""Boot memory the reference scan did not read, in bytes, by what it is.

The scan reads memory by what allocated it (``registry.ROOTS``).  Reserved
pages (memblock memory and the image) have no allocation map: it reads the
parts whose extent and use it knows (the image's data, the first per-cpu
chunk, the KFENCE objects in use) and not the rest.  A page whose only
pointer lies in memory not read looks orphaned, so the verdict says how much
that is (``verdict.coverage``), and of what (``boot_memory.boot_extents``).
"""

from __future__ import annotations

import drgn
from drgn.helpers.linux.mm import follow_phys
import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.core.features import has_symbol, image_symbol
from vmcore_tools.mm.boot_memory import boot_extents
from vmcore_tools.refs.reader import in_spans, merged_spans

#: extents the scan leaves unread on purpose, and why
BY_DESIGN = {
    "kernel image": "its text and read-only data: built before any page was allocated",
    "memmap": "struct pages: read only for referenced pages, by memmap links",
    "swiotlb": "bounce buffers: device data",
    "KFENCE pool": "guard pages and free objects",
    "per-cpu first chunk": "dead interrupt stack frames and batch slots",
}
OTHER = "other boot allocations"


def boot_memory_not_read(census: Census, spans: list[list[int]]) -> dict[str, int]:
    """Bytes of reserved pages no byte of which was read, per boot extent
    (``OTHER`` for the pages of none); ``spans`` are the scan's reads
    (``MemoryReader.spans``): direct-map addresses, and image addresses
    (the image is physically contiguous: a page's PFN is that of ``_text``
    plus its offset)."""
    prog, a = census.prog, census.memmap
    reserved = census.pfns_of(PageClass.RESERVED)
    if not reserved.size:
        return {}
    lo, hi = merged_spans([tuple(s) for s in spans])
    pfn_lo, pfn_hi = [], []
    direct_end = a.direct_map + (a.nr << a.page_shift)
    in_direct = (lo >= np.uint64(a.direct_map)) & (lo < np.uint64(direct_end))
    pfn_lo.append((lo[in_direct] - np.uint64(a.direct_map)) >> np.uint64(a.page_shift))
    pfn_hi.append((hi[in_direct] - np.uint64(a.direct_map) + np.uint64(a.page_size - 1)) >> np.uint64(a.page_shift))
    if has_symbol(prog, "_text") and has_symbol(prog, "_end"):
        text, end = image_symbol(prog, "_text"), image_symbol(prog, "_end")
        try:
            first = follow_phys(prog["init_mm"].address_of_(), text).value_() >> a.page_shift
        except drgn.FaultError:
            first = None
        if first is not None:
            in_image = (lo >= np.uint64(text)) & (lo < np.uint64(end))
            pfn_lo.append(np.uint64(first) + ((lo[in_image] - np.uint64(text)) >> np.uint64(a.page_shift)))
            pfn_hi.append(np.uint64(first) + ((hi[in_image] - np.uint64(text) + np.uint64(a.page_size - 1))
                                              >> np.uint64(a.page_shift)))
    plo, phi = merged_spans(list(zip(np.concatenate(pfn_lo).tolist(), np.concatenate(pfn_hi).tolist())))
    read = in_spans(reserved.astype(np.uint64), plo, phi)
    left = reserved[~read]
    out: dict[str, int] = {}
    for name, pfns in boot_extents(prog, a).items():
        mine = np.isin(left, pfns, assume_unique=True)
        if mine.any():
            out[name] = int(mine.sum()) * a.page_size
            left = left[~mine]
    if left.size:
        out[OTHER] = int(left.size) * a.page_size
    return out
