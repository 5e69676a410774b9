"""The owners: holders of pages that no scanned word points at, one
function per entry of ``registry.OWNERS`` (the allocation runs are
``runs.py``'s).  An owner claims a page through the scan's ``hold``."""

from __future__ import annotations

import drgn
import numpy as np

from vmcore_tools.arch import table_format
from vmcore_tools.core.features import has_object, has_symbol, image_symbol
from vmcore_tools.kernel.fdt import fdt_neighbours
from vmcore_tools.refs.engine import ScanEngine
from vmcore_tools.refs.references import Reference


def kernel_mappings(ctx: ScanEngine) -> None:
    """Candidates mapped by a leaf of ``init_mm`` outside the direct map
    -- a 4K leaf, or any page of a huge one (the vmemmap of hot-added
    memory) -- and outside the kernel image's own mapping: the image's freed gaps
    (init memory, section padding) may still be mapped there on older
    kernels, as aliases of pages reused since.  Where that mapping is made
    of whole PMDs (x86's ``cleanup_highmap()`` keeps ``_text`` up to
    ``_brk_end`` rounded up to a PMD: ``TableFormat.image_end_align``), it
    also covers the free memory after ``_end`` in its last PMD: pages the
    buddy allocator hands to anyone (a leaked rx page too), still mapped
    there as 4K leaves once ``set_memory_*()`` split that PMD; arm64 maps
    the image to ``_end`` rounded up to a page.  arm64 6.1 maps the FDT in
    whole blocks too, and the pages beside it there are no more held
    (``fdt.fdt_neighbours``).

    The pages mapped inside the vmemmap are ``struct page`` arrays (the
    memmap of hot-added memory, ``vmemmap_alloc_block()``: 2 MiB blocks
    without ``__GFP_COMP``, one allocation each, ``census.blocks``): their
    words are the fields of the pages they describe -- a free page's list
    links, stale ``private`` and ``mapping`` values -- not pointers their
    owner keeps.  They are read by their layout (the memmap links root
    reads the struct pages of the held pages), not as plain pages."""
    prog, a = ctx.prog, ctx.memmap
    vas, pfns = ctx.census.page_tables.kernel_pages(a.page_shift)
    incidental = fdt_neighbours(prog, vas, pfns, a.page_shift)
    if has_symbol(prog, "_text"):
        fmt = table_format(prog, a.page_shift)
        align = fmt.image_end_align if fmt is not None else a.page_size
        end = -(-image_symbol(prog, "_end") // align) * align
        incidental |= (vas >= np.uint64(image_symbol(prog, "_text"))) & (vas < np.uint64(end))
    cand = ctx.candidate_of(pfns)
    hit = np.flatnonzero((cand >= 0) & ~incidental)
    heads = cand[hit]
    heads, first = np.unique(heads, return_index=True)     # one mapping per page is enough
    va = vas[hit[first]]
    memmap_end = a.memmap + a.nr * a.struct_size
    ctx.read_by_layout(heads[(va >= np.uint64(a.memmap)) & (va < np.uint64(memmap_end))].tolist())
    for head, at in zip(heads.tolist(), va.tolist()):
        ctx.hold(Reference(head, "kernel mapping", at, "page tables", f"mapped at {at:#x}"))


def vmcoreinfo_dropped_at_panic(ctx: ScanEngine) -> None:
    """A kdump-captured kernel: ``crash_save_vmcoreinfo()`` switched
    ``vmcoreinfo_data`` to ``vmcoreinfo_data_safecopy`` during the panic,
    dropping the only pointer to the page ``crash_save_vmcoreinfo_init()``
    had allocated.  That page (its text starts with ``OSRELEASE=``) was
    orphaned by the crash itself, not by a leak.  It came from
    ``get_zeroed_page()``: order 0, refcount 1, so only such candidates
    are read (not a leak of bias-like rx pages, however large)."""
    prog = ctx.prog
    if not has_object(prog, "vmcoreinfo_data_safecopy"):
        return
    safe = prog["vmcoreinfo_data_safecopy"].value_()
    if not safe or safe != prog["vmcoreinfo_data"].value_():
        return
    for head in ctx.single_pfns().tolist():
        if head in ctx.references:
            continue
        try:
            text = prog.read(ctx.memmap.virt_of_pfn(head), 10)
        except drgn.FaultError:
            continue
        if text == b"OSRELEASE=":
            ctx.hold(Reference(head, "kernel fact", safe, "panic",
                               "pre-crash vmcoreinfo buffer, replaced by its safe copy at panic"))
