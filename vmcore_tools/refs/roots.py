"""The roots: the memory the page scan reads, one function per entry of
``registry.ROOTS`` (and the two reachability shares, ``REACH_ROOTS``).

Each root reads through the scan's small API (``engine.ScanEngine``:
``read``, ``add_reference``, ``exclude``, ``naming_only``,
``read_by_layout``, ``candidate_of``); what it reads is a kernel fact
stated in its registry entry and in the reader it calls.  A root that
counts nothing (its name starts with ``skip_``) names memory whose words
must not count where another root reads it.
"""

from __future__ import annotations

import drgn
import numpy as np
from drgn.helpers.linux.mm import follow_phys

from vmcore_tools.census.classes import PageClass
from vmcore_tools.core.features import has_symbol, image_symbol
from vmcore_tools.core.stages import record_damage
from vmcore_tools.kernel.bio_cache import cached_bios
from vmcore_tools.kernel.gic_its import its_level2_tables
from vmcore_tools.kernel.blk_mq import request_blocks
from vmcore_tools.kernel.iommu import iommu_tables
from vmcore_tools.kernel.lru import lru_list_heads
from vmcore_tools.kernel.kvfree_rcu import bulk_page_tails, cached_bulk_pages
from vmcore_tools.kernel.percpu_batches import percpu_batches
from vmcore_tools.kernel.stacks import cached_stack_pfns, dead_irq_stack_spans, live_stack_spans
from vmcore_tools.kernel.virtqueues import virtqueues
from vmcore_tools.mm.boot_memory import percpu_units
from vmcore_tools.mm.percpu import free_percpu_spans
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.mm.pageflags import page_flag_bits
from vmcore_tools.net.page_pool import dma_index_nodes
from vmcore_tools.refs.engine import ScanEngine
from vmcore_tools.refs.reader import MemoryContext, subtract_spans
from vmcore_tools.refs.references import PHYSICAL, SKB_FRAG, TABLE_ENTRY, Reference
from vmcore_tools.core.arrays import unique

#: region name of the NIC rx buffers, where only skb frags count (``matcher.frag_entries``)
RX_BUFFERS = "rx buffers"
#: Spans of the kernel image given back to the page allocator at boot: what
#: their image addresses show now belongs to whoever got those pages since.
#: x86's ``mem_encrypt_free_decrypted_mem()`` frees the unused tail of
#: ``.bss..decrypted``, which sits inside ``__bss_start..__bss_stop``.
FREED_IMAGE_SPANS = (("__start_bss_decrypted_unused", "__end_bss_decrypted"),)


# -- memory read whole ---------------------------------------------------------

def scan_image(ctx: ScanEngine) -> None:
    """Data of the kernel image that can hold pointers to allocations:
    ``_sdata.._edata``, ``__bss_start..__bss_stop`` and the
    ``__ro_after_init`` section (written during boot, in the rodata span:
    boot-time hash tables are found only there) -- minus the parts of
    the image the kernel frees at boot (``FREED_IMAGE_SPANS``)."""
    prog = ctx.prog
    freed = [(image_symbol(prog, lo), image_symbol(prog, hi))
             for lo, hi in FREED_IMAGE_SPANS if has_symbol(prog, lo) and has_symbol(prog, hi)]
    for lo, hi in (("_sdata", "_edata"), ("__bss_start", "__bss_stop"),
                   ("__start_ro_after_init", "__end_ro_after_init")):
        if has_symbol(prog, lo):
            for start, end in subtract_spans(image_symbol(prog, lo), image_symbol(prog, hi), freed):
                ctx.read.virt(start, end, "data")


def scan_percpu_first_chunk(ctx: ScanEngine) -> None:
    """Each CPU's unit of the first per-cpu chunk (memblock memory, so
    "reserved" in the census: ``boot_memory.percpu_units``), less what an
    earlier root excluded (dead interrupt stack frames, dead batch slots;
    what another root reads of those is dropped by the engine)."""
    for cpu, (base, end) in percpu_units(ctx.prog, ctx.memmap.page_shift).items():
        for lo, hi in subtract_spans(base, end, ctx.excluded):
            ctx.read.virt(lo, hi, f"per-cpu cpu{cpu}")


def scan_stacks(ctx: MemoryContext) -> None:
    """The live part of each task's stack (``stacks.live_stack_spans``)."""
    for lo, hi in live_stack_spans(ctx.prog, ctx.memmap.page_shift):
        ctx.read.virt(lo, hi, "stack")


def scan_slab(ctx: ScanEngine) -> None:
    ctx.read.pfns(ctx.census.pfns_of(PageClass.SLAB), "slab")


def scan_kfence_objects(ctx: MemoryContext) -> None:
    """The objects KFENCE has in use, exactly (``kfence.KfencePool``): the
    pool is memblock memory ("reserved" in the census), which no other root
    reads, and its freed objects keep their last user's words.  Read as
    slab: a word counts only inside the object in use (``SlabObjects``);
    reachability traces them as objects (``objects.object_table``)."""
    pool = ctx.slab_objects.kfence
    if pool is None:
        return
    if pool.damaged:
        text = (f"KFENCE metadata (kfence_metadata) is damaged: {len(pool.damaged)} entries whose object "
                f"lies outside its page (first: object {pool.damaged[0]}), their objects not read")
        if not record_damage(text):
            ctx.problems.append(text)
    on_slab = ctx.census.classes[pool.pfns(ctx.memmap)] == PageClass.SLAB     # read by scan_slab already
    for _, lo, hi in pool.in_use(on_slab):
        ctx.read.virt(lo, hi, "slab")


def scan_vmalloc(ctx: MemoryContext) -> None:
    """vmalloc and later per-cpu chunks, less the cached stacks of exited
    tasks (``stacks.cached_stack_pfns``)."""
    c = ctx.census
    ctx.read.pfns(np.setdiff1d(c.pfns_of(PageClass.VMALLOC, PageClass.PERCPU),
                               cached_stack_pfns(ctx.prog, ctx.memmap)), "vmalloc")


def scan_kernel_pages(ctx: ScanEngine) -> None:
    ctx.read.pfns(ctx.census.pfns_of(PageClass.LARGE_KMALLOC, PageClass.PAGE_FRAG), "kernel pages")


def scan_rx_buffers(ctx: ScanEngine) -> None:
    ctx.read.pfns(ctx.census.pfns_of(PageClass.NIC_RING), RX_BUFFERS)


# -- memory whose words count in no root ---------------------------------------

def skip_dead_irq_stack_frames(ctx: ScanEngine) -> None:
    """The dead part of each CPU's interrupt stack -- all of it where the CPU
    is not in an interrupt, the part below its stack pointer where it is --
    is not read (``stacks.dead_irq_stack_spans``): by ``scan_percpu_first_chunk``
    where the stack is per-CPU data (x86-64), by ``scan_vmalloc`` where it is
    vmalloc'd (arm64), which reads its pages through the direct map."""
    for lo, hi in dead_irq_stack_spans(ctx.prog).values():
        ctx.exclude(direct_map_spans(ctx.prog, ctx.memmap, lo, hi))


def skip_kvfree_rcu_cache(ctx: ScanEngine) -> None:
    """The pages kvfree_rcu() keeps for reuse (``kvfree_rcu.cached_bulk_pages``)
    are not read past their list link, which names the next one, nor the
    pages it fills past their records (``kvfree_rcu.bulk_page_tails``)."""
    size = ctx.memmap.page_size
    ctx.exclude((va + 8, va + size) for va in cached_bulk_pages(ctx.prog))
    ctx.exclude(bulk_page_tails(ctx.prog, size))


def skip_free_percpu_areas(ctx: ScanEngine) -> None:
    """The free areas of every per-cpu chunk in every CPU's unit
    (``percpu.free_percpu_spans``) are not read: by ``scan_percpu_first_chunk``
    in the first chunk, by ``scan_vmalloc`` in later ones, which it reads
    through the direct map."""
    mapped: dict[int, int | None] = {}
    for lo, hi in free_percpu_spans(ctx.prog, ctx.memmap.page_shift):
        ctx.exclude(direct_map_spans(ctx.prog, ctx.memmap, lo, hi, mapped))


def direct_map_spans(prog: drgn.Program, a: Memmap, lo: int, hi: int,
                     mapped: dict[int, int | None] | None = None) -> list[tuple[int, int]]:
    """``[lo, hi)`` as the direct map sees it: itself where it lies there,
    else each page's part at the direct-map address of the page the
    kernel's page tables map it to (a vmalloc'd stack's pages are
    scattered); what is not mapped is left out.  ``mapped`` keeps each
    page's physical address (None: not mapped) across calls."""
    if a.pfn_of_virt(lo) >= 0:
        return [(lo, hi)]
    init_mm, size, out = prog["init_mm"].address_of_(), a.page_size, []
    mapped = {} if mapped is None else mapped
    at = lo
    while at < hi:
        page, end = at - at % size, min(hi, (at // size + 1) * size)
        if page not in mapped:
            try:
                mapped[page] = follow_phys(init_mm, page).value_()
            except drgn.FaultError:
                mapped[page] = None
        phys = mapped[page]
        if phys is not None:
            out.append((a.direct_map + phys + at - page, a.direct_map + phys + end - page))
        at = end
    return out


def skip_percpu_batches(ctx: ScanEngine) -> None:
    """The slots past the count of every per-CPU batch are not read by
    ``scan_percpu_first_chunk``, and the free objects a batch keeps for
    reuse are not read as holders by ``scan_slab`` -- in a dump: on a
    live kernel an skb the cache held when read may be in use by the
    time its slab page is (``percpu_batches.percpu_batches``)."""
    batches = percpu_batches(ctx.prog)
    ctx.exclude(batches.dead_slots)
    if not ctx.prog.flags & drgn.ProgramFlags.IS_LIVE:
        ctx.naming_only(batches.free_objects)


def skip_page_pool_dma_index(ctx: ScanEngine) -> None:
    """The nodes of every page_pool's DMA index are not read as holders by
    ``scan_slab`` (``page_pool.dma_index_nodes``)."""
    ctx.naming_only(dma_index_nodes(ctx.prog))


def skip_cached_bios(ctx: ScanEngine) -> None:
    """The bios waiting in a bio_set's per-CPU cache are not read as
    holders by ``scan_slab`` (``bio_cache.cached_bios``)."""
    ctx.naming_only(cached_bios(ctx.prog))


def skip_lru_list_heads(ctx: ScanEngine) -> None:
    """The LRU's list heads in every lruvec do not count where the slab
    (or any) root reads them (``lru.lru_list_heads``)."""
    ctx.exclude(lru_list_heads(ctx.prog))


def skip_stale_sheaf_slots(ctx: ScanEngine) -> None:
    """The slots of every slab sheaf past its count do not count where the
    slab root reads them (``slab.SlabObjects.stale_sheaf_spans``)."""
    ctx.exclude(ctx.slab_objects.stale_sheaf_spans())


# -- memory read by its layout -------------------------------------------------

def scan_virtqueues(ctx: ScanEngine) -> None:
    """The buffers of every virtqueue, by the addresses in its descriptor
    tables (indirect tables followed); the ring's own pages are then not
    read as plain referenced pages."""
    a = ctx.memmap
    for vq in virtqueues(ctx.prog):
        ctx.read_by_layout(vq.pages)
        for addr, where in vq.buffers:
            pfn = addr >> a.page_shift
            if not 0 <= pfn < a.nr:
                continue
            head = int(ctx.candidate_of(np.array([pfn], np.int64))[0])
            if head >= 0:
                ctx.add_reference(Reference(head, PHYSICAL, vq.address, "virtqueue", f"{vq.name} {where}",
                                            value=addr))


def scan_blk_mq_requests(ctx: ScanEngine) -> None:
    """blk-mq's requests in use, by pointers only; their pages
    (``blk_mq.request_blocks``) are not read again as plain referenced
    pages."""
    blocks = request_blocks(ctx.prog)
    ctx.read_by_layout(blocks.pfns.tolist())
    for start, end in blocks.in_use:
        ctx.read.virt(start, end, "blk-mq requests")


def scan_iommu_tables(ctx: ScanEngine) -> None:
    """The page tables of the IOMMU's DMA-API domains, by their layout
    (``iommu.iommu_tables``): each table page is held by the entry above
    it (a top table by its domain's pointer, found like any other); the
    pages the leaves map are not held -- ``dma_map_*()`` takes no
    reference -- and the table pages are not read again as plain pages,
    whose entries would all count."""
    found = iommu_tables(ctx.prog, ctx.memmap)
    ctx.problems.extend(found.problems)
    ctx.result.iommu_domains_read = found.domains
    ctx.result.iommu_domains_not_read = len(found.problems)
    ctx.read_by_layout(found.tables)
    for pfn, (at, what) in found.tables.items():
        head = int(ctx.candidate_of(np.array([pfn], np.int64))[0]) if at else -1
        if head >= 0:
            ctx.add_reference(Reference(head, TABLE_ENTRY, at, "iommu", what, value=ctx.prog.read_u64(at)))


def scan_its_tables(ctx: ScanEngine) -> None:
    """The level-2 tables of the GICv3 ITS's indirect tables (arm64,
    ``gic_its.its_level2_tables``): each held by the level-1 entry that
    names it by its physical address with the valid bit, which no other
    root counts (bit 63 is set)."""
    for pfn, (at, entry, what) in its_level2_tables(ctx.prog, ctx.memmap).items():
        head = int(ctx.candidate_of(np.array([pfn], np.int64))[0])
        if head >= 0:
            ctx.add_reference(Reference(head, TABLE_ENTRY, at, "its", what, value=entry))


# -- the closure: what referenced pages hold -----------------------------------

def scan_referenced_pages(ctx: ScanEngine, heads: np.ndarray) -> None:
    """Every page of the referenced candidates ``heads``; physical
    addresses count in all but compound pages, skb frags alone in
    page_pool pages.

    Fact: a compound page is a CPU-side allocation (large kmalloc,
    kvmalloc, page_frag, THP): ``dma_alloc_attrs()`` refuses
    ``__GFP_COMP`` (6.2+; drivers did not pass it before), so no
    device reads a compound page as a descriptor ring, and a
    physical-looking number there is a counter or a size (a net
    device's statistics in its kvzalloc'd ``net_device``, packed
    table data).  Table entries still count: their whole-page shape
    is its own proof.  A page_pool page is an rx buffer: the device
    wrote frames into it, and the one structure it can carry that holds
    another page is an skb's ``skb_shared_info`` (an skb built around
    it, ``build_skb()``), so it is read as the rx buffers root reads.
    A block allocated without ``__GFP_COMP`` (``census.blocks``) is read
    whole, physical addresses counting: ``dma_alloc_coherent()``'s
    multi-page rings are such blocks."""
    a = ctx.memmap
    heads = heads[~np.isin(heads, ctx.by_layout)]
    rx = ctx.census.classes[heads] == PageClass.PAGE_POOL
    compound = ~rx & a.compound(heads)
    with ctx.counting(frozenset({SKB_FRAG})):
        ctx.read.pfns(a.pages_of(heads[rx]), RX_BUFFERS)
    with ctx.counting(ctx.counts - {PHYSICAL}):
        ctx.read.pfns(a.pages_of(heads[compound]), "referenced page")
    ctx.read.pfns(a.pages_of(heads[~rx & ~compound]), "referenced page")


def scan_memmap_links(ctx: ScanEngine, heads: np.ndarray) -> None:
    """The ``struct page`` of each referenced candidate in ``heads`` (its
    ``lru`` and ``private`` words name the next page of a list; an empty
    list head names the page itself, which holds nothing), except the
    candidates on the LRU -- and, transitively, of the candidates those
    name: a list is followed to its end here, a frontier of struct pages
    read together per step, not one closure round per page (a balloon's
    list holds every page it took, 256 K per GiB).

    Fact: a page with ``PG_lru`` is linked through ``page->lru`` into its
    lruvec's list, which holds no reference (the page's owners do: page
    tables, the page cache, a pin); only a page off the LRU can be on an
    owner's list through ``page->lru``.  Its LRU neighbours are not held
    by it."""
    a = ctx.memmap
    lru = page_flag_bits(ctx.prog).get("lru")
    per_page = a.struct_size // 8
    #: a bit per PFN: its struct page was read for links, in an earlier round too
    read = ctx.scratch.get("memmap links")
    if read is None:
        read = ctx.scratch["memmap links"] = np.zeros(-(-a.nr // 8), np.uint8)
    frontier = heads[~_bits_set(read, heads)]
    while frontier.size:
        _set_bits(read, frontier)
        words = a.struct_pages(frontier, 0, per_page * 8).view("<u8")
        if lru is not None:
            off_lru = (words[:, a.layout.flags // 8] >> np.uint64(lru) & np.uint64(1)) == 0
            frontier, words = frontier[off_lru], words[off_lru]
        words = words.reshape(-1)
        found = []
        for idx, hit, kind in ctx.match(words):
            if kind not in ctx.counts:
                continue
            keep = hit != frontier[idx // per_page]
            for i, head in zip(idx[keep].tolist(), hit[keep].tolist()):
                if head not in ctx.references:
                    found.append(head)
                pfn = int(frontier[i // per_page])
                ctx.add_reference(Reference(head, kind, a.memmap + pfn * a.struct_size + 8 * (i % per_page),
                                            "struct page", value=int(words[i])))
        frontier = unique(np.array(found, np.int64))
        frontier = frontier[~_bits_set(read, frontier)]


def _bits_set(bits: np.ndarray, pfns: np.ndarray) -> np.ndarray:
    """Whether the bit of each of ``pfns`` is set in ``bits`` (a bit per PFN)."""
    return (bits[pfns >> 3] & (np.uint8(1) << (pfns & 7).astype(np.uint8))) != 0


def _set_bits(bits: np.ndarray, pfns: np.ndarray) -> None:
    np.bitwise_or.at(bits, pfns >> 3, np.uint8(1) << (pfns & 7).astype(np.uint8))
