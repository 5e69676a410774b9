"""Conservative reference scan, kmemleak-style: does any kernel memory still
point at a page?

kmemleak cannot see pages taken straight from the page allocator.  We do
what it would do for them: read the memory the kernel can reach as 64-bit
words and look for words that name a candidate page.  *What* is read and
*how* a word counts there is the registry's (``registry.ROOTS``); who holds
pages without any such word is too (``registry.OWNERS``).  This module is
the engine: the vectorized matcher (``Matcher``: struct page pointers,
direct-map addresses, physical addresses, table entries), the readers the
registry names, and the transitive closure -- a candidate page that is
referenced is itself live memory, because it may hold the only pointer to
another one (a large kmalloc'd array of buffers, a DMA descriptor ring, the
next level of a page table).  The multi-page allocations one pointer holds
are ``runs.py``'s; what a reference is, ``references.py``'s.

A physical-looking number is as likely a timestamp or a hash, so physical
addresses count only in referenced pages: 64-byte aligned and not a round
number (``is_round``: a firmware table once held 64 MiB three times over
and hid a leaked page at PFN 16384), or as entries of a page shaped like a
hardware table (``table_entries``).

Stale values are the enemy of a leak detector, so memory that is not live
is not read: free slab objects (a hit in a slab page is confirmed as an
allocated object, ``slab.SlabObjects``), stack below the saved stack
pointer, and the cached stacks of dead tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import drgn
import numpy as np
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.percpu import per_cpu

from vmcore_tools.kernel.bio_cache import cached_bios
from vmcore_tools.kernel.blk_mq import request_blocks
from vmcore_tools.census.census import Census
from vmcore_tools.census.walks import all_tasks
from vmcore_tools.census.classes import PageClass
from vmcore_tools.mm.pageflags import page_flag_bits
from vmcore_tools.core.features import has_member, has_object, has_symbol
from vmcore_tools.kernel.iommu import iommu_tables
from vmcore_tools.kernel.lru import lru_list_heads
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.kernel.percpu_batches import percpu_batches
from vmcore_tools.refs.references import Reference, ScanResult
from vmcore_tools.net.page_pool import dma_index_nodes
from vmcore_tools.refs.runs import extend_cma_runs, extend_runs
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.refs.registry import OWNERS, PHYSICAL, ROOTS, SKB_FRAG, STRUCT_PAGE, TABLE_ENTRY, Owner, Root
from vmcore_tools.core.stages import run_stage
from vmcore_tools.kernel.virtqueues import virtqueues

#: Bytes read and scanned at a time.
CHUNK_BYTES = 1 << 20
#: References kept per page: enough to show where it is held.
MAX_REFS = 4
#: Physical addresses below this are not taken as references (small integers abound).
MIN_PHYS = 1 << 20
#: region name of the NIC rx buffers, where only skb frags count (``frag_entries``)
RX_BUFFERS = "rx buffers"
#: Spans of the kernel image given back to the page allocator at boot: what
#: their image addresses show now belongs to whoever got those pages since.
#: x86's ``mem_encrypt_free_decrypted_mem()`` frees the unused tail of
#: ``.bss..decrypted``, which sits inside ``__bss_start..__bss_stop``.
FREED_IMAGE_SPANS = (("__start_bss_decrypted_unused", "__end_bss_decrypted"),)


def is_round(words: np.ndarray, page_shift: int) -> np.ndarray:
    """Page-aligned numbers with at most two bits set: sizes and masks
    (``64 << 20``, ``0xc0000000``) are common in kernel and firmware data,
    while few pages start at such an address: 326 of the 32 M pages of
    128 GB."""
    aligned = (words & np.uint64((1 << page_shift) - 1)) == 0
    return aligned & (np.bitwise_count(words) <= 2)


#: bits 12-51 of a hardware table entry: the physical address of the next level or the page
ENTRY_ADDRESS = np.uint64(0x000FFFFFFFFFF000)
#: bits 52-58 of an entry: clear in every non-leaf entry of x86 page tables
#: (available to software, never set by the kernel there), Intel VT-d and
#: AMD IOMMU tables (which keep IR/IW and flags in bits 59-62)
ENTRY_RESERVED = np.uint64(0x07F0000000000000)


#: distinct low-12-bit flag sets the entries of one table page may show: a
#: table is built with one protection (x86 ``_PAGE_TABLE`` or
#: ``_KERNPG_TABLE``, VT-d ``READ | WRITE``), and the hardware adds a bit or
#: two (accessed, dirty); a hash table of ``hlist_nulls`` heads holds a
#: different odd marker in every slot
TABLE_FLAG_SETS = 8


def table_entries(words: np.ndarray, page_words: int) -> np.ndarray:
    """Which words are entries of a hardware-style table: a page whose every
    nonzero word is a present entry -- bit 0 set (x86 ``_PAGE_PRESENT``,
    VT-d read, AMD IOMMU ``PR``), an address in bits 12-51, bits 52-58
    clear -- and that has at least one.

    Fact: x86 page tables and the IOMMUs' second-level tables hold the next
    level as its physical address with flag bits in the low 12 bits (and a
    few high ones), at any of the 512 slots; the upper levels are plain
    pages (no PageTable type before 6.x for PUD/P4D/PGD, never for IOMMU
    tables) named only by such an entry.  The root is held by pointer
    (``mm->pgd``, an IOMMU domain's ``pgd``), so a referenced page shaped
    like a table makes its entries references.  The whole-page shape is
    what keeps timestamps and hashes out: one word outside it, and the page
    is not a table; and so do the flags, few per table (``TABLE_FLAG_SETS``):
    an empty ``hlist_nulls`` hash table (``(nulls << 1) | 1`` per bucket,
    TCP's listening hash from ``1 << 29``) is odd in every slot but counts
    in its low bits."""
    if not words.size or words.size % page_words:
        return np.zeros(words.size, bool)
    nonzero = words != 0
    entry = (((words & np.uint64(1)) != 0) & ((words & ENTRY_RESERVED) == 0)
             & ((words & ENTRY_ADDRESS) != 0))
    pages = (entry | ~nonzero).reshape(-1, page_words).all(axis=1) & \
        entry.reshape(-1, page_words).any(axis=1)
    flags = (words & np.uint64(0xFFF)).reshape(-1, page_words)
    for i in np.flatnonzero(pages):
        pages[i] = np.unique(flags[i][entry.reshape(-1, page_words)[i]]).size <= TABLE_FLAG_SETS
    return entry & np.repeat(pages, page_words)


class Matcher:
    """Maps 64-bit words to candidate pages, vectorized."""

    def __init__(self, a: Memmap, heads: np.ndarray):
        self.a = a
        heads = np.asarray(heads, np.int64)
        self.heads = heads if np.all(heads[1:] > heads[:-1]) else np.unique(heads)
        self.bits = _extent_bits(self.heads, a.order_of(self.heads), a.nr)
        self.memmap = np.uint64(a.memmap)
        self.memmap_end = np.uint64(a.memmap + a.nr * a.struct_size)
        self.direct = np.uint64(a.direct_map)
        self.direct_end = np.uint64(a.direct_map + (a.nr << a.page_shift))
        self.phys_end = np.uint64(a.nr << a.page_shift)

    def match(self, words: np.ndarray, physical: bool) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """(word indexes, candidate head PFNs, kind) for every hit in ``words``;
        with ``physical``, ``words`` are whole pages and their table entries
        count too (``table_entries``)."""
        a = self.a
        if physical:
            idx = np.flatnonzero(table_entries(words, (1 << a.page_shift) // 8))
            pfn = ((words[idx] & ENTRY_ADDRESS) >> np.uint64(a.page_shift)).astype(np.int64)
            inside = pfn < a.nr
            head = np.full(idx.size, -1, np.int64)
            head[inside] = self.candidate(pfn[inside])
            if (head >= 0).any():
                yield idx[head >= 0], head[head >= 0], "table entry"
        kinds = [("struct page", self.memmap, self.memmap_end, 0, self.memmap, np.uint64(a.struct_size)),
                 ("direct map", self.direct, self.direct_end, a.page_shift, self.direct, None)]
        if physical:
            kinds.append(("physical", np.uint64(MIN_PHYS), self.phys_end, a.page_shift, np.uint64(0), None))
        for kind, lo, hi, shift, base, div in kinds:
            sel = (words >= lo) & (words < hi)
            if kind == "physical":
                sel &= ((words & np.uint64(63)) == 0) & ~is_round(words, a.page_shift)
            idx = np.nonzero(sel)[0]
            if not idx.size:
                continue
            off = words[idx] - base
            pfn = (off // div if div is not None else off >> np.uint64(shift)).astype(np.int64)
            head = self.candidate(pfn)
            hit = head >= 0
            if hit.any():
                yield idx[hit], head[hit], kind

    def still_points(self, word: np.ndarray, kind: str, head: int) -> bool:
        """Whether one re-read word still references candidate ``head`` as ``kind``."""
        if kind == "table entry":
            pfn = (word & ENTRY_ADDRESS) >> np.uint64(self.a.page_shift)
            return bool(word[0] & np.uint64(1)) and int(self.candidate(pfn.astype(np.int64))[0]) == head
        return any(int(h[0]) == head for _, h, k in self.match(word, kind == "physical") if k == kind)

    def candidate(self, pfns: np.ndarray) -> np.ndarray:
        """The candidate (head PFN) each PFN lies in, -1 where none."""
        out = np.full(pfns.size, -1, np.int64)
        inside = ((self.bits[pfns >> 3] >> (pfns & 7).astype(np.uint8)) & 1).astype(bool)
        if inside.any():
            out[inside] = self.heads[np.searchsorted(self.heads, pfns[inside], side="right") - 1]
        return out


def pfn_bits(pfns: np.ndarray, nr: int) -> np.ndarray:
    """A bitmap of ``pfns`` over ``nr`` PFNs (1 bit per page, little-endian bits)."""
    mark = np.zeros(-(-nr // 8) * 8, bool)
    mark[pfns] = True
    return np.packbits(mark, bitorder="little")


def _extent_bits(heads: np.ndarray, orders: np.ndarray, nr: int, step: int = 1 << 18) -> np.ndarray:
    """A bitmap of the PFNs inside the allocations of ``orders`` at
    ``heads`` (sorted, disjoint; 1 bit per page), built a slice at a time:
    only the last allocation that starts before a slice can reach into it."""
    bits = np.zeros(-(-nr // step) * step // 8, np.uint8)
    for lo in range(0, nr, step):
        first = max(int(np.searchsorted(heads, lo)) - 1, 0)
        last = int(np.searchsorted(heads, lo + step))
        if first >= last:
            continue
        starts = heads[first:last]
        ends = starts + (np.int64(1) << orders[first:last].astype(np.int64))
        # +1 where an extent starts, -1 where one ends (bincount: np.add.at is slow)
        edges = (np.bincount(np.clip(starts - lo, 0, step), minlength=step + 1)
                 - np.bincount(np.clip(ends - lo, 0, step), minlength=step + 1))
        inside = np.cumsum(edges[:-1]) > 0
        bits[lo // 8:(lo + step) // 8] = np.packbits(inside, bitorder="little")
    return bits


class ReferenceScan:
    def __init__(self, census: Census, heads: np.ndarray,
                 progress: Callable[[str, int, int], None] | None = None,
                 refcounts: np.ndarray | None = None):
        self.census = census
        self.prog = census.prog
        self.a = a = census.memmap
        self.heads = heads
        self.matcher = Matcher(a, heads)
        #: unattributed order-0 candidates with refcount 1 (one bit per PFN): what an
        #: alloc_pages_exact() run is made of (a page_pool page is an allocation of its own)
        refcounts = census.refcounts(heads) if refcounts is None else refcounts
        self.singles = pfn_bits(heads[(a.order_of(heads) == 0) & (refcounts == 1)
                                      & (census.classes[heads] == PageClass.UNATTRIBUTED)], a.nr)
        self.result = ScanResult({})
        self.progress = progress
        self.slab_objects = SlabObjects(self.prog, a)
        #: bytes of a largest buddy block: bounds an skb frag's length and offset
        self.frag_limit = self.max_block << a.page_shift
        #: how words count in the root being read (registry.Root.counts)
        self.counts: frozenset[str] = frozenset()
        #: pages whose layout a root reads exactly (virtqueue rings): not read as plain pages
        self.known_layout: set[int] = set()
        #: a bit per PFN: its struct page was read for memmap links (scan_memmap_links)
        self.links_read: np.ndarray | None = None
        #: slab objects whose words name pages without holding them (skip_page_pool_dma_index,
        #: skip_cached_bios, skip_percpu_batches)
        self.naming_only: set[int] = set()
        #: [start, end) of memory whose words count in no root: not read where a
        #: root can leave it out, and dropped where it reads it (skip_idle_irq_stacks,
        #: skip_percpu_batches, skip_lru_list_heads)
        self.unread: list[tuple[int, int]] = []
        self._unread_spans: tuple[int, np.ndarray, np.ndarray] = (0, np.zeros(0, np.uint64), np.zeros(0, np.uint64))

    # -- reading -----------------------------------------------------------

    def scan_virt(self, start: int, end: int, region: str) -> None:
        """Scan ``[start, end)`` (kernel virtual addresses), 8-byte aligned."""
        start = (start + 7) & ~7
        for lo in range(start, end, CHUNK_BYTES):
            hi = min(end, lo + CHUNK_BYTES)
            try:
                data = self.prog.read(lo, (hi - lo) & ~7)
            except drgn.FaultError:
                if hi - lo > 4096:     # isolate the unreadable page(s)
                    page = 1 << self.a.page_shift
                    for sub in range(lo, hi, page):
                        self.scan_virt(sub, min(hi, sub + page), region)
                else:
                    self.result.problems.append(f"{region}: unreadable at {lo:#x}")
                continue
            self.scan_bytes(data, lo, region)

    def scan_bytes(self, data: bytes, base: int, region: str, own: int = -1) -> None:
        """Match the words of ``data`` (read at ``base``) the way the root
        being read counts them (``self.counts``); a word naming candidate
        ``own`` (the page the words belong to) does not hold it."""
        words = np.frombuffer(data, "<u8", len(data) // 8)
        self.result.bytes_scanned += len(data)
        refs, counts = self.result.references, self.counts
        physical = PHYSICAL in counts or TABLE_ENTRY in counts
        for idx, heads, kind in self.matcher.match(words, physical):
            if kind == STRUCT_PAGE and SKB_FRAG in counts and STRUCT_PAGE not in counts:
                keep = frag_entries(words, idx, self.frag_limit,
                                    (int(self.matcher.memmap), int(self.matcher.memmap_end)))
            else:
                keep = np.full(idx.size, kind in counts)
            keep &= heads != own
            if self.unread:
                keep &= ~self.in_unread(np.uint64(base) + idx.astype(np.uint64) * np.uint64(8))
            idx, heads = idx[keep], heads[keep]
            for i, head, value in zip(idx.tolist(), heads.tolist(), words[idx].tolist()):
                found = refs.setdefault(head, [])
                if len(found) >= MAX_REFS:
                    continue
                ref = Reference(head, kind, base + 8 * i, region, value=value)
                if region != "slab" or self.slab_object(ref):
                    found.append(ref)
                if not found:
                    del refs[head]

    def in_unread(self, addresses: np.ndarray) -> np.ndarray:
        """Whether each address lies in ``unread`` (merged and sorted once per change)."""
        n, lo, hi = self._unread_spans
        if n != len(self.unread):
            merged: list[list[int]] = []
            for a, b in sorted(self.unread):
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            lo, hi = (np.array([m[k] for m in merged], np.uint64) for k in (0, 1))
            self._unread_spans = (len(self.unread), lo, hi)
        i = np.searchsorted(lo, addresses, side="right") - 1
        return (i >= 0) & (addresses < hi[np.maximum(i, 0)])

    def scan_pfns(self, pfns: np.ndarray, region: str) -> None:
        """Scan pages by PFN through the direct map, contiguous runs at once."""
        if not pfns.size:
            return
        pfns = np.unique(pfns)
        breaks = np.nonzero(np.diff(pfns) != 1)[0] + 1
        done = 0
        for run in np.split(pfns, breaks):
            self.scan_virt(self.a.virt_of_pfn(int(run[0])), self.a.virt_of_pfn(int(run[-1]) + 1), region)
            done += run.size
            if self.progress:
                self.progress(f"scanning {region}", done, pfns.size)

    # -- what is scanned ---------------------------------------------------

    def run(self, without: frozenset[str] = frozenset()) -> ScanResult:
        """Read every root and ask every owner of the registry, then again
        for the pages found referenced until nothing new is found; entries
        named in ``without`` are left out (to test what each one holds)."""
        t0 = time.monotonic()
        roots = [r for r in ROOTS if r.name not in without]
        owners = [o for o in OWNERS if o.name not in without]

        def run_root(root: Root, *args) -> None:
            self.counts = root.counts
            run_stage(f"scan: {root.name}", lambda: getattr(self, root.read)(*args), None, self.result.problems)

        def run_owner(owner: Owner) -> None:
            run_stage(f"scan: {owner.name}", getattr(self, owner.find), None, self.result.problems)

        for root in roots:
            if not root.closure:
                run_root(root)
        for owner in owners:
            if not owner.closure:
                run_owner(owner)
        # The closure owners (runs, memmap links) judge a page by what else
        # is referenced -- a run takes in unreferenced pages only -- so they
        # are asked once the referenced pages' closure is complete, and the
        # closure is taken again from what they add, until neither adds.
        scanned: set[int] = set()
        while True:
            todo = np.array(sorted(h for h in self.result.references if h not in scanned), np.int64)
            if todo.size:
                scanned.update(todo.tolist())
                for root in roots:
                    if root.closure:
                        run_root(root, todo)
                continue
            known = len(self.result.references)
            for owner in owners:
                if owner.closure:
                    run_owner(owner)
            if len(self.result.references) == known:
                break
        if self.prog.flags & drgn.ProgramFlags.IS_LIVE:
            run_stage("scan: live re-check", self.drop_unstable, None, self.result.problems)
        self.result.seconds = time.monotonic() - t0
        return self.result

    # -- the roots (registry.ROOTS) ------------------------------------------

    def skip_page_pool_dma_index(self) -> None:
        """The nodes of every page_pool's DMA index are not read as
        holders by ``scan_slab`` (``page_pool.dma_index_nodes``)."""
        self.naming_only |= dma_index_nodes(self.prog)

    def skip_cached_bios(self) -> None:
        """The bios waiting in a bio_set's per-CPU cache are not read as
        holders by ``scan_slab`` (``bio_cache.cached_bios``)."""
        self.naming_only |= cached_bios(self.prog)

    def skip_idle_irq_stacks(self) -> None:
        """The interrupt stacks of the CPUs not in an interrupt are not read
        by ``scan_percpu_first_chunk`` (``idle_irq_stacks``)."""
        self.unread.extend(idle_irq_stacks(self.prog).values())

    def skip_percpu_batches(self) -> None:
        """The slots past the count of every per-CPU batch are not read by
        ``scan_percpu_first_chunk``, and the free objects a batch keeps for
        reuse are not read as holders by ``scan_slab`` -- in a dump: on a
        live kernel an skb the cache held when read may be in use by the
        time its slab page is (``percpu_batches.percpu_batches``)."""
        batches = percpu_batches(self.prog)
        self.unread.extend(batches.dead_slots)
        if not self.prog.flags & drgn.ProgramFlags.IS_LIVE:
            self.naming_only |= batches.free_objects

    def skip_lru_list_heads(self) -> None:
        """The LRU's list heads in every lruvec do not count where the slab
        (or any) root reads them (``lru.lru_list_heads``)."""
        self.unread.extend(lru_list_heads(self.prog))

    def scan_slab(self) -> None:
        self.scan_pfns(self.census.pfns_of(PageClass.SLAB), "slab")

    def scan_vmalloc(self) -> None:
        c = self.census
        self.scan_pfns(np.setdiff1d(c.pfns_of(PageClass.VMALLOC, PageClass.PERCPU), self.cached_stack_pfns()),
                       "vmalloc")

    def scan_kernel_pages(self) -> None:
        self.scan_pfns(self.census.pfns_of(PageClass.LARGE_KMALLOC, PageClass.PAGE_FRAG), "kernel pages")

    def scan_rx_buffers(self) -> None:
        self.scan_pfns(self.census.pfns_of(PageClass.NIC_RING), RX_BUFFERS)

    def scan_virtqueues(self) -> None:
        """The buffers of every virtqueue, by the addresses in its
        descriptor tables (indirect tables followed); the ring's own pages
        are then not read as plain referenced pages."""
        for vq in virtqueues(self.prog):
            self.known_layout.update(vq.pages)
            for addr, where in vq.buffers:
                pfn = addr >> self.a.page_shift
                if not 0 <= pfn < self.a.nr:
                    continue
                head = int(self.matcher.candidate(np.array([pfn], np.int64))[0])
                if head >= 0:
                    found = self.result.references.setdefault(head, [])
                    if len(found) < MAX_REFS:
                        found.append(Reference(head, PHYSICAL, vq.address, "virtqueue",
                                               f"{vq.name} {where}", value=addr))

    def scan_blk_mq_requests(self) -> None:
        """blk-mq's requests in use, by pointers only; their pages
        (``blk_mq.request_blocks``) are not read again as plain referenced
        pages."""
        blocks = request_blocks(self.prog)
        self.known_layout.update(blocks.pfns.tolist())
        for start, end in blocks.in_use:
            self.scan_virt(start, end, "blk-mq requests")

    def scan_iommu_tables(self) -> None:
        """The page tables of the IOMMU's DMA-API domains, by their layout
        (``iommu.iommu_tables``): each table page is held by the entry above
        it (a top table by its domain's pointer, found like any other); the
        pages the leaves map are not held -- ``dma_map_*()`` takes no
        reference -- and the table pages are not read again as plain pages,
        whose entries would all count."""
        found = iommu_tables(self.prog, self.a)
        self.result.problems.extend(found.problems)
        self.result.iommu_domains_read = found.domains
        self.result.iommu_domains_not_read = len(found.problems)
        self.known_layout.update(found.tables)
        for pfn, (at, what) in found.tables.items():
            head = int(self.matcher.candidate(np.array([pfn], np.int64))[0]) if at else -1
            if head >= 0:
                refs = self.result.references.setdefault(head, [])
                if len(refs) < MAX_REFS:
                    refs.append(Reference(head, TABLE_ENTRY, at, "iommu", what))

    def scan_referenced_pages(self, heads: np.ndarray) -> None:
        """Every page of the referenced candidates ``heads``; physical
        addresses count in the order-0 ones only, skb frags alone in
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
        it, ``build_skb()``), so it is read as the rx buffers root reads."""
        heads = heads[~np.isin(heads, np.fromiter(self.known_layout, np.int64, len(self.known_layout)))]
        rx = self.census.classes[heads] == PageClass.PAGE_POOL
        compound = ~rx & (self.a.order_of(heads) > 0)
        self.scan_pfns_counting(self.a.pages_of(heads[rx]), RX_BUFFERS, frozenset({SKB_FRAG}))
        self.scan_pfns_counting(self.a.pages_of(heads[compound]), "referenced page", self.counts - {PHYSICAL})
        self.scan_pfns(heads[~rx & ~compound], "referenced page")

    def scan_pfns_counting(self, pfns: np.ndarray, region: str, counts: frozenset[str]) -> None:
        """``scan_pfns`` with words counting as ``counts`` there."""
        kept, self.counts = self.counts, counts
        try:
            self.scan_pfns(pfns, region)
        finally:
            self.counts = kept

    def scan_memmap_links(self, heads: np.ndarray) -> None:
        """The ``struct page`` of each referenced candidate in ``heads``
        (its ``lru`` and ``private`` words name the next page of a list; an
        empty list head names the page itself, which holds nothing), except
        the candidates on the LRU -- and, transitively, of the candidates
        those name: a list is followed to its end here, a frontier of
        struct pages read together per step, not one closure round per
        page (a balloon's list holds every page it took, 256 K per GiB).

        Fact: a page with ``PG_lru`` is linked through ``page->lru`` into its
        lruvec's list, which holds no reference (the page's owners do: page
        tables, the page cache, a pin); only a page off the LRU can be on an
        owner's list through ``page->lru``.  Its LRU neighbours are not held
        by it."""
        a, refs = self.a, self.result.references
        lru = page_flag_bits(self.prog).get("lru")
        per_page = a.struct_size // 8
        frontier = heads[~self._links_read(heads)]
        while frontier.size:
            self._links_read(frontier, mark=True)
            words = a.struct_pages(frontier, 0, per_page * 8).view("<u8")
            if lru is not None:
                off_lru = (words[:, a.layout.flags // 8] >> np.uint64(lru) & np.uint64(1)) == 0
                frontier, words = frontier[off_lru], words[off_lru]
            words = words.reshape(-1)
            found = []
            self.result.bytes_scanned += words.size * 8
            for idx, hit, kind in self.matcher.match(words, False):
                if kind not in self.counts:
                    continue
                keep = hit != frontier[idx // per_page]
                for i, head in zip(idx[keep].tolist(), hit[keep].tolist()):
                    known = refs.setdefault(head, [])
                    if not known:
                        found.append(head)
                    if len(known) < MAX_REFS:
                        pfn = int(frontier[i // per_page])
                        known.append(Reference(head, kind, a.memmap + pfn * a.struct_size + 8 * (i % per_page),
                                               "struct page", value=int(words[i])))
            frontier = np.unique(np.array(found, np.int64))
            frontier = frontier[~self._links_read(frontier)]

    def _links_read(self, pfns: np.ndarray, mark: bool = False) -> np.ndarray:
        """Whether the struct page of each of ``pfns`` was read for links
        (a bit per PFN); with ``mark``, record that it now is."""
        if self.links_read is None:
            self.links_read = np.zeros(-(-self.a.nr // 8), np.uint8)
        byte, bit = pfns >> 3, (np.uint8(1) << (pfns & 7).astype(np.uint8))
        if mark:
            np.bitwise_or.at(self.links_read, byte, bit)
        return (self.links_read[byte] & bit) != 0

    def drop_unstable(self) -> None:
        """Live kernel: re-read every referring word and drop the references
        that no longer point at their page.  Reading ``/proc/kcore`` itself
        copies kernel memory (the memmap included) through a bounce buffer
        that is a slab object while the read lasts, so a copy of a stale
        pointer can be seen once; the re-read (which finds the buffer zeroed
        and reused) does not see it again."""
        for head, refs in list(self.result.references.items()):
            keep = []
            for ref in refs:
                if ref.region in ("page tables", "run", "panic"):
                    keep.append(ref)
                    continue
                try:
                    word = np.array([self.prog.read_u64(ref.address)], np.uint64)
                except drgn.FaultError:
                    continue
                if self.matcher.still_points(word, ref.kind, head):
                    keep.append(ref)
            if keep:
                self.result.references[head] = keep
            else:
                del self.result.references[head]
                self.result.problems.append(f"pfn {head}: its only references changed while read (live)")

    def vmcoreinfo_dropped_at_panic(self) -> None:
        """A kdump-captured kernel: ``crash_save_vmcoreinfo()`` switched
        ``vmcoreinfo_data`` to ``vmcoreinfo_data_safecopy`` during the panic,
        dropping the only pointer to the page ``crash_save_vmcoreinfo_init()``
        had allocated.  That page (its text starts with ``OSRELEASE=``) was
        orphaned by the crash itself, not by a leak.  It came from
        ``get_zeroed_page()``: order 0, refcount 1, so only such candidates
        are read (not a leak of bias-like rx pages, however large)."""
        prog = self.prog
        if not has_object(prog, "vmcoreinfo_data_safecopy"):
            return
        safe = prog["vmcoreinfo_data_safecopy"].value_()
        if not safe or safe != prog["vmcoreinfo_data"].value_():
            return
        singles = np.flatnonzero(np.unpackbits(self.singles, bitorder="little")[:self.a.nr])
        for head in singles.tolist():
            if head in self.result.references:
                continue
            try:
                text = prog.read(self.a.virt_of_pfn(head), 10)
            except drgn.FaultError:
                continue
            if text == b"OSRELEASE=":
                self.result.references[head] = [Reference(
                    head, "kernel fact", safe, "panic",
                    "pre-crash vmcoreinfo buffer, replaced by its safe copy at panic")]

    def kernel_mappings(self) -> None:
        """Candidates mapped by a leaf of ``init_mm`` outside the direct map
        -- a 4K leaf, or any page of a huge one (the vmemmap of hot-added
        memory) -- and outside the kernel image's own mapping: the image's freed gaps
        (init memory, section padding) may still be mapped there on older
        kernels, as aliases of pages reused since.  That mapping is made of
        whole PMDs (x86's ``cleanup_highmap()`` keeps ``_text`` up to
        ``_brk_end`` rounded up to a PMD), so it also covers the free memory
        after ``_end`` in its last PMD: pages the buddy allocator hands to
        anyone (a leaked rx page too), still mapped there as 4K leaves once
        ``set_memory_*()`` split that PMD."""
        walk = self.census.page_tables
        # a huge leaf maps every page of its block, one address apart
        pages = walk.kernel_huge_pages
        starts = np.repeat(np.cumsum(pages) - pages, pages)
        within = np.arange(int(pages.sum()), dtype=np.int64) - starts
        pfns = np.concatenate([walk.kernel_leaf_pfns, np.repeat(walk.kernel_huge_pfns, pages) + within])
        vas = np.concatenate([walk.kernel_leaf_vas, np.repeat(walk.kernel_huge_vas, pages)
                              + (within << self.a.page_shift).astype(np.uint64)])
        image = np.zeros(vas.size, bool)
        if has_symbol(self.prog, "_text"):
            pmd = 1 << (self.a.page_shift + 9)          # 512 entries per table
            end = -(-self.prog.symbol("_end").address // pmd) * pmd
            image = (vas >= np.uint64(self.prog.symbol("_text").address)) & (vas < np.uint64(end))
        cand = self.matcher.candidate(pfns)
        hit = np.flatnonzero((cand >= 0) & ~image)
        heads = cand[hit]
        heads, first = np.unique(heads, return_index=True)     # one mapping per page is enough
        for head, va in zip(heads.tolist(), vas[hit[first]].tolist()):
            self.result.references.setdefault(head, []).append(
                Reference(head, "kernel mapping", va, "page tables", f"mapped at {va:#x}"))

    def extend_runs(self) -> None:
        """The allocation runs' owner (``runs.extend_runs``)."""
        extend_runs(self)

    def extend_cma_runs(self) -> None:
        """The CMA allocations' owner (``runs.extend_cma_runs``)."""
        extend_cma_runs(self)

    @property
    def max_block(self) -> int:
        """Pages in the largest buddy block: one per order of ``zone.free_area``."""
        return 1 << (self.prog.type("struct zone").member("free_area").type.length - 1)

    def scan_image(self) -> None:
        """Data of the kernel image that can hold pointers to allocations:
        ``_sdata.._edata``, ``__bss_start..__bss_stop`` and the
        ``__ro_after_init`` section (written during boot, in the rodata span:
        boot-time hash tables are found only there) -- minus the parts of
        the image the kernel frees at boot (``FREED_IMAGE_SPANS``)."""
        prog = self.prog
        freed = [(prog.symbol(lo).address, prog.symbol(hi).address)
                 for lo, hi in FREED_IMAGE_SPANS if has_symbol(prog, lo) and has_symbol(prog, hi)]
        for lo, hi in (("_sdata", "_edata"), ("__bss_start", "__bss_stop"),
                       ("__start_ro_after_init", "__end_ro_after_init")):
            if has_symbol(prog, lo):
                for start, end in _subtract(prog.symbol(lo).address, prog.symbol(hi).address, freed):
                    self.scan_virt(start, end, "data")

    def scan_percpu_first_chunk(self) -> None:
        """Each CPU's unit of the first per-cpu chunk (memblock memory, so
        "reserved" in the census): ``__per_cpu_offset[cpu]`` plus the
        section start, up to the end of the first chunk's dynamic area.

        Facts: ``per_cpu_ptr()`` adds the offset modulo 2**64.  Up to 6.14
        the x86-64 section is linked at 0 and the offset is the unit's
        address; from 6.15 the section has its link address and the offset
        is the unit's address minus it, which wraps.  A unit is
        ``pcpu_unit_size`` bytes, but ``pcpu_embed_first_chunk()`` gives the
        tail of each one beyond the static, reserved and dynamic areas back
        to the page allocator at boot: those pages belong to whoever got
        them since (a slab page, say), so only the part the first chunk
        maps is read -- up to ``pcpu_first_chunk->base_addr + nr_pages``
        pages, as an offset from unit 0 (``pcpu_base_addr``) -- less what
        an earlier root marked ``unread`` (idle interrupt stacks, dead batch
        slots; what it does read of ``unread`` is dropped in ``scan_bytes``)."""
        prog = self.prog
        start = prog.symbol("__per_cpu_start").address if has_symbol(prog, "__per_cpu_start") else 0
        size = prog["pcpu_unit_size"].value_()
        if has_object(prog, "pcpu_first_chunk") and has_object(prog, "pcpu_base_addr"):
            first = prog["pcpu_first_chunk"]
            used = (first.base_addr.value_() + (first.nr_pages.value_() << self.a.page_shift)
                    - prog["pcpu_base_addr"].value_())
            if 0 < used < size:
                size = used
        for cpu in for_each_possible_cpu(prog):
            base = (prog["__per_cpu_offset"][cpu].value_() + start) & 0xFFFF_FFFF_FFFF_FFFF
            for lo, hi in _subtract(base, base + size, self.unread):
                self.scan_virt(lo, hi, f"per-cpu cpu{cpu}")

    def scan_stacks(self) -> None:
        """Each task's stack from its saved stack pointer (``thread.sp``) to
        the top: the part below is dead frames, full of stale pointers.  A
        task that was running has no saved SP we trust: all of its stack."""
        prog = self.prog
        size = self.thread_size()
        has_sp = has_member(prog, "struct thread_struct", "sp")
        for task in all_tasks(prog):
            base = task.stack.value_()
            if not base:
                continue
            lo = base
            running = task.on_cpu.value_() if has_member(prog, "struct task_struct", "on_cpu") else 1
            if has_sp and not running:
                sp = task.thread.sp.value_()
                if base <= sp < base + size:
                    lo = sp
            self.scan_virt(lo, base + size, "stack")

    def thread_size(self) -> int:
        """Bytes of a task stack (``THREAD_SIZE``; 4 pages where DWARF lacks the macro)."""
        prog = self.prog
        return prog["THREAD_SIZE"].value_() if has_object(prog, "THREAD_SIZE") else 4 << self.a.page_shift

    def cached_stack_pfns(self) -> np.ndarray:
        """Pages of the per-CPU ``cached_stacks``: stacks of exited tasks kept
        for reuse, still vmalloc'd but full of dead frames."""
        prog, a = self.prog, self.a
        if not has_object(prog, "cached_stacks"):
            return np.zeros(0, np.int64)
        stack_pages = self.thread_size() >> a.page_shift
        out = []
        for cpu in for_each_possible_cpu(prog):
            for slot in per_cpu(prog["cached_stacks"], cpu):
                # the slot's pointer is read once: on a live kernel fork takes
                # the stack (the slot becomes NULL) and exit puts one back
                vm = slot.read_()
                try:
                    if not vm:
                        continue
                    pages, nr = vm.pages.value_(), vm.nr_pages.value_()
                    if not pages or not 0 < nr <= stack_pages:
                        continue
                    ptrs = np.frombuffer(prog.read(pages, 8 * nr), "<u8")
                except drgn.FaultError:         # a stack freed while we read it
                    continue
                out.append(a.pfns_of_page_ptrs(ptrs))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def slab_object(self, ref: Reference) -> bool:
        """Whether a hit in a slab page is in an allocated object (naming it);
        a free object's words are stale."""
        try:
            obj = self.slab_objects(ref.address)
        except (drgn.FaultError, ValueError) as e:
            ref.where = f"slab page (object not identified: {e})"
            return True
        if obj is None or obj.allocated is False or obj.address in self.naming_only:
            return False
        ref.where = f"slab {obj.cache} object {obj.address:#x}+{ref.address - obj.address:#x}"
        ref.holder = obj.address
        return True


def idle_irq_stacks(prog: drgn.Program) -> dict[int, tuple[int, int]]:
    """``[start, end)`` of each CPU's interrupt stack that the CPU is not
    on; a CPU on it, or a kernel that does not say, is left out.

    Fact: x86-64 runs hard and soft interrupts on a per-CPU stack,
    ``irq_stack_backing_store`` (IRQ_STACK_SIZE, a static per-CPU
    variable, so inside the first chunk), and records whether the CPU is
    on it: ``hardirq_stack_inuse`` (5.15+; a member of ``pcpu_hot`` 6.2
    to 6.14), or ``irq_count`` up to 5.14 (-1 when not).  A CPU that is
    not in an interrupt has nothing live there: what the last one left
    (the pages of a bio it completed, say) is stale."""
    if not has_object(prog, "irq_stack_backing_store"):
        return {}
    if has_object(prog, "hardirq_stack_inuse"):
        def in_use(cpu: int) -> bool:
            return bool(per_cpu(prog["hardirq_stack_inuse"], cpu))
    elif has_object(prog, "pcpu_hot") and has_member(prog, "struct pcpu_hot", "hardirq_stack_inuse"):
        def in_use(cpu: int) -> bool:
            return bool(per_cpu(prog["pcpu_hot"], cpu).hardirq_stack_inuse)
    elif has_object(prog, "irq_count"):
        def in_use(cpu: int) -> bool:
            return per_cpu(prog["irq_count"], cpu).value_() & 0xFFFF_FFFF != 0xFFFF_FFFF
    else:
        return {}
    out = {}
    for cpu in for_each_possible_cpu(prog):
        if not in_use(cpu):
            stack = per_cpu(prog["irq_stack_backing_store"], cpu)
            out[cpu] = (stack.address_, stack.address_ + drgn.sizeof(stack))
    return out


def _subtract(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` without the ``holes``."""
    out, at = [], start
    for lo, hi in sorted(h for h in holes if h[0] < end and h[1] > start):
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
    if at < end:
        out.append((at, end))
    return out


def frag_entries(words: np.ndarray, idx: np.ndarray, limit: int, memmap: tuple[int, int]) -> np.ndarray:
    """Which ``struct page`` pointers at ``words[idx]`` look like an
    ``skb_frag_t``: the next word holds its two 32-bit fields, length and
    offset (their order changed across versions; ``bio_vec`` 5.4+,
    ``netmem`` 6.8+), both below ``limit`` (the bytes of a largest buddy
    block), not both 0; and the word before is not itself a ``struct
    page`` pointer (``memmap``: the memmap's address range), since frags
    lie 16 bytes apart: before a frag's page pointer is the previous frag's
    length and offset, or, before ``frags[0]``, ``destructor_arg``.

    Why rx buffers get this filter: ``dev_alloc_pages()`` does not clear
    a page, so a buffer holds received frames and whatever the page held
    before.  On the page_owner sample core three planted leaks were
    "referenced" from arrays of ``struct page`` pointers in rx buffers:
    stale data of an earlier owner, such as a freed task stack.  The
    only kernel structure an rx buffer carries that can hold the last
    reference to another page is the ``skb_shared_info`` of an skb built
    on it (``build_skb``), whose ``frags[]`` list the pages of a frame
    spanning several buffers."""
    cap = np.uint64(limit)
    after = np.minimum(idx + 1, words.size - 1)
    nxt = words[after]
    low, high = nxt & np.uint64(0xFFFFFFFF), nxt >> np.uint64(32)
    prev = words[np.maximum(idx - 1, 0)]
    after_a_page = (idx > 0) & (prev >= np.uint64(memmap[0])) & (prev < np.uint64(memmap[1]))
    return (idx + 1 < words.size) & (low < cap) & (high < cap) & (nxt != 0) & ~after_a_page


def scan_references(census: Census, heads: np.ndarray,
                    progress: Callable[[str, int, int], None] | None = None,
                    refcounts: np.ndarray | None = None) -> ScanResult:
    """References to the compound heads ``heads`` anywhere in live kernel
    memory; ``refcounts``, the heads' ``_refcount``, where the caller has
    read them already (on a compressed dump, reading them is a pass over
    the memmap)."""
    return ReferenceScan(census, heads, progress, refcounts).run()
