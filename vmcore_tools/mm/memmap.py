"""Bulk ``struct page`` reading, in bounded chunks.

Millions of pages cannot go through one drgn ``Object`` each.  We read the
memmap one valid PFN range at a time (drgn's ``for_each_valid_page_range``
walks ``mem_section``), ``CHUNK_PAGES`` at a time, and cut the words the
classifier needs out of the raw bytes with offsets taken from the DWARF
``struct page``.  A chunk that cannot be read (a filtered dump, a hole) is
marked unreadable, never guessed.

Nothing keeps the whole decoded memmap: ``Memmap.chunks()`` hands out one
decoded chunk at a time (the census classifies it and drops it), and
``Memmap.read()`` decodes just the pages a report asks about.  What the
census learns on the way that later questions need -- the compound heads
and their orders -- is kept sparse in ``Memmap.heads``/``Memmap.orders``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import drgn
import numpy as np
from drgn.helpers.linux.mm import for_each_valid_page_range, pfn_to_page, pfn_to_virt

from vmcore_tools.core.features import has_member, has_object, vmcoreinfo_numbers
from vmcore_tools.core.arrays import unique

#: Pages decoded per read: 32768 pages * 64 bytes = 2 MiB of memmap.
CHUNK_PAGES = 1 << 15


@dataclass
class PageLayout:
    """Where each word the classifier reads sits in ``struct page``."""

    size: int
    flags: int
    refcount: int
    mapcount: int          # _mapcount / page_type share this word
    mapping: int
    compound_head: int
    private: int
    pp_magic: int | None   # page_pool signature word (5.14+)
    #: how the compound order of a head is stored: (byte offset from the
    #: head's struct page, mask) -- page[1].compound_order before 6.3, then
    #: folio._folio_order, then the low byte of folio._flags_1 (6.6+).
    order_offset: int
    #: page[1].compound_dtor (up to 6.2): tells hugetlb from other compound pages
    dtor_offset: int | None
    head_bit: int          # PG_head

    @classmethod
    def from_program(cls, prog: drgn.Program) -> "PageLayout":
        page = prog.type("struct page")
        head_member = "compound_info" if page.has_member("compound_info") else "compound_head"
        if page.has_member("compound_order"):
            order_offset = page.size + drgn.offsetof(page, "compound_order")
        elif has_member(prog, "struct folio", "_folio_order"):
            order_offset = drgn.offsetof(prog.type("struct folio"), "_folio_order")
        else:
            order_offset = drgn.offsetof(prog.type("struct folio"), "_flags_1")
        return cls(
            size=page.size,
            flags=drgn.offsetof(page, "flags"),
            refcount=drgn.offsetof(page, "_refcount"),
            mapcount=drgn.offsetof(page, "_mapcount"),
            mapping=drgn.offsetof(page, "mapping"),
            compound_head=drgn.offsetof(page, head_member),
            private=drgn.offsetof(page, "private"),
            pp_magic=drgn.offsetof(page, "pp_magic") if page.has_member("pp_magic") else None,
            order_offset=order_offset,
            dtor_offset=(page.size + drgn.offsetof(page, "compound_dtor")
                         if page.has_member("compound_dtor") else None),
            head_bit=prog.constant("PG_head").value_(),
        )


@dataclass
class PageWords:
    """Decoded ``struct page`` words of some pages: a chunk ``[lo, hi)`` of
    the memmap, or the PFNs a report asked about (``pfn``)."""

    pfn: np.ndarray          # int64 PFN of each entry
    readable: np.ndarray     # bool: its struct page could be read
    flags: np.ndarray        # uint64
    refcount: np.ndarray     # int32
    mapcount: np.ndarray     # uint32 (also page_type)
    mapping: np.ndarray      # uint64
    compound_head: np.ndarray  # uint64 (head address | 1 on tails)
    private: np.ndarray      # uint64
    pp_magic: np.ndarray | None
    order: np.ndarray        # uint8: compound order of heads, 0 elsewhere
    dtor: np.ndarray | None  # uint8: page[1].compound_dtor of heads, where the kernel has it
    head_pfn: np.ndarray     # int64: PFN of each page's compound head (itself when not a tail)
    is_head: np.ndarray      # bool: PG_head

    @property
    def nr(self) -> int:
        return self.pfn.size

    @property
    def is_tail(self) -> np.ndarray:
        return self.head_pfn != self.pfn


def pfn_dtype(nr: int) -> np.dtype:
    """The narrowest type that holds every PFN below ``nr``, for arrays of
    millions of them (the candidates, the orphans): ``uint32`` up to 2^32
    PFNs (16 TiB of 4 KiB pages), ``int64`` beyond.  What reads such an
    array widens a slice of it to ``int64`` before any arithmetic on it
    (``pfn << page_shift`` wraps at 4 GiB in 32 bits)."""
    return np.dtype(np.uint32) if nr <= 1 << 32 else np.dtype(np.int64)


def as_pfns(pfns: np.ndarray | int, nr: int) -> np.ndarray:
    """``pfns`` as they are if of ``pfn_dtype(nr)``, else as int64 (no copy
    of an array that is either already)."""
    p = np.asarray(pfns)
    return p if p.dtype == pfn_dtype(nr) else np.asarray(p, np.int64)


@dataclass
class Memmap:
    """The ``struct page`` array: where it is, how to read it, and the PFN
    and address conversions every walker needs."""

    prog: drgn.Program
    layout: PageLayout
    ranges: list[tuple[int, int]]   # valid PFN ranges [start, end)
    nr: int                  # PFNs 0 .. nr-1 (max_pfn)
    memmap: int              # address of struct page for PFN 0 (vmemmap)
    struct_size: int         # sizeof(struct page)
    direct_map: int          # virtual address of PFN 0 in the kernel's direct map
    page_shift: int
    #: compound heads (sorted PFNs) and their orders, filled in by the census pass
    heads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    orders: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    #: the heads among ``heads`` of multi-page blocks that are no compound
    #: page (allocated without ``__GFP_COMP``: ``census.blocks``)
    blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    #: valid PFN ranges past the kernel's ``max_pfn`` (``from_program``): left out
    beyond: list[tuple[int, int]] = field(default_factory=list)
    #: why ``mem_section`` could not be walked, where it could not (``whole_vmemmap``)
    sections_damaged: str = ""

    @classmethod
    def from_program(cls, prog: drgn.Program) -> "Memmap":
        """The memmap of ``prog``'s kernel, over its valid PFN ranges
        (``valid_ranges``), or the whole virtual memmap up to ``max_pfn``
        where ``mem_section`` is damaged (``whole_vmemmap``)."""
        damaged = ""
        try:
            ranges, beyond = valid_ranges(prog)
        except drgn.FaultError as e:
            ranges, beyond, damaged = whole_vmemmap(prog, e), [], str(e)
        return cls(prog, PageLayout.from_program(prog), [(s, e) for s, e, _ in ranges],
                   max(end for _, end, _ in ranges), ranges[0][2], prog.type("struct page").size,
                   pfn_to_virt(prog, 0).value_(), prog["PAGE_SHIFT"].value_(), beyond=beyond,
                   sections_damaged=damaged)

    @property
    def page_size(self) -> int:
        """Bytes of a page (``PAGE_SIZE``)."""
        return 1 << self.page_shift

    @property
    def valid_pages(self) -> int:
        return sum(e - s for s, e in self.ranges)

    # -- conversions ----------------------------------------------------------

    def pfn_of_page_ptr(self, addr: int) -> int:
        """PFN of a ``struct page *`` (-1 if it is not in the memmap)."""
        pfn = (addr - self.memmap) // self.struct_size
        return pfn if 0 <= pfn < self.nr and addr >= self.memmap else -1

    def pfn_of_virt(self, addr: int) -> int:
        """PFN of a direct-map address (-1 outside the direct map)."""
        pfn = (addr - self.direct_map) >> self.page_shift
        return pfn if 0 <= pfn < self.nr and addr >= self.direct_map else -1

    def phys_of_virt(self, addr: int) -> int:
        """Physical address of a direct-map address (-1 outside the direct map)."""
        pfn = self.pfn_of_virt(addr)
        return -1 if pfn < 0 else (pfn << self.page_shift) | (addr & ((1 << self.page_shift) - 1))

    def pfns_of_page_ptrs(self, ptrs: np.ndarray) -> np.ndarray:
        """Vectorized ``pfn_of_page_ptr`` over uint64 pointers (-1 where invalid)."""
        return self._pfns((ptrs.astype(np.uint64) - np.uint64(self.memmap)) // np.uint64(self.struct_size),
                          ptrs >= self.memmap)

    def pfns_of_virts(self, addrs: np.ndarray) -> np.ndarray:
        """Vectorized ``pfn_of_virt`` over uint64 addresses (-1 where invalid)."""
        return self._pfns((addrs.astype(np.uint64) - np.uint64(self.direct_map)) >> np.uint64(self.page_shift),
                          addrs >= self.direct_map)

    def _pfns(self, pfns: np.ndarray, above: np.ndarray) -> np.ndarray:
        ok = above & (pfns < np.uint64(self.nr))
        return np.where(ok, pfns, np.uint64(0)).astype(np.int64) * ok - (~ok)

    def virt_of_pfn(self, pfn: int) -> int:
        return self.direct_map + (pfn << self.page_shift)

    def virts_of_pfns(self, pfns: np.ndarray) -> np.ndarray:
        """Vectorized ``virt_of_pfn``: the direct-map address of each PFN (uint64)."""
        return np.uint64(self.direct_map) + (np.asarray(pfns).astype(np.uint64) << np.uint64(self.page_shift))

    # -- compound pages (known after the census pass) ---------------------------

    def order_of(self, pfns: np.ndarray | int) -> np.ndarray | int:
        """Compound order of each PFN that is a compound head, 0 elsewhere.
        Strictly increasing ``pfns`` (candidate lists, millions long) are
        searched for the compound heads, not the other way round: no index
        array as long as ``pfns``."""
        p = np.atleast_1d(as_pfns(pfns, self.nr))
        out = np.zeros(p.size, np.uint8)
        if self.heads.size and p.size:
            if p.size > self.heads.size and bool(np.all(p[1:] > p[:-1])):
                # the few heads in the PFNs' own type: no int64 copy of the PFNs
                i = np.minimum(np.searchsorted(p, self.heads.astype(p.dtype)), p.size - 1)
                hit = p[i] == self.heads
                out[i[hit]] = self.orders[hit]
            else:
                i = np.minimum(np.searchsorted(self.heads, p), self.heads.size - 1)
                hit = self.heads[i] == p
                out[hit] = self.orders[i[hit]]
        return int(out[0]) if np.ndim(pfns) == 0 else out

    def add_blocks(self, heads: np.ndarray, orders: np.ndarray) -> None:
        """Blocks of ``1 << orders`` pages at ``heads`` that are one
        allocation but no compound page (``census.blocks``): from here on
        ``order_of``, ``heads_of`` and ``pages_of`` take each for one
        allocation, as they take a compound page."""
        all_heads = np.concatenate([self.heads, np.asarray(heads, np.int64)])
        by_pfn = np.argsort(all_heads, kind="stable")
        self.heads = all_heads[by_pfn]
        self.orders = np.concatenate([self.orders, np.asarray(orders, np.uint8)])[by_pfn]
        self.blocks = np.union1d(self.blocks, heads)

    def compound(self, pfns: np.ndarray) -> np.ndarray:
        """Whether each of ``pfns`` heads a compound page (not a block
        allocated without ``__GFP_COMP``)."""
        pfns = np.asarray(pfns, np.int64)
        return (self.order_of(pfns) > 0) & ~np.isin(pfns, self.blocks)

    def heads_of(self, pfns: np.ndarray) -> np.ndarray:
        """PFN of the compound head of each PFN (itself outside a compound page)."""
        p = np.asarray(pfns, np.int64)
        if not self.heads.size:
            return p.copy()
        i = np.searchsorted(self.heads, p, side="right") - 1
        j = np.maximum(i, 0)
        inside = (i >= 0) & (p < self.heads[j] + (1 << self.orders[j].astype(np.int64)))
        return np.where(inside, self.heads[j], p)

    def head_of(self, pfn: int) -> int:
        return int(self.heads_of(np.array([pfn]))[0])

    def pages_of(self, heads: np.ndarray) -> np.ndarray:
        """Every PFN of the allocations that start at ``heads`` (each
        ``1 << order`` pages long), in the order of ``heads``."""
        heads = np.asarray(heads, np.int64)
        sizes = np.int64(1) << self.order_of(heads).astype(np.int64)
        starts = np.repeat(heads, sizes)
        offsets = np.arange(starts.size, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return starts + offsets

    # -- reading -------------------------------------------------------------

    def chunks(self, progress: Callable[[int, int], None] | None = None,
               chunk_pages: int = CHUNK_PAGES, span: tuple[int, int] | None = None) -> Iterator[PageWords]:
        """Every valid ``struct page`` (of the PFNs ``span``), decoded ``chunk_pages`` at a time."""
        total, done = self.valid_pages, 0
        first, last = span or (0, self.nr)
        for start, end in ((max(s, first), min(e, last)) for s, e in self.ranges):
            for lo in range(start, end, chunk_pages):
                hi = min(end, lo + chunk_pages)
                # one page more, for the order of a head at hi - 1 (kept in page[1])
                yield self._decode(lo, hi)
                done += hi - lo
                if progress:
                    progress(done, total)

    def read(self, pfns: np.ndarray) -> PageWords:
        """Decoded words of the given PFNs (sorted and unique on return), read
        in windows of the memmap that cover many of them at once."""
        pfns = unique(np.asarray(pfns, np.int64))
        pfns = pfns[(pfns >= 0) & (pfns < self.nr)]
        parts = [self._decode(int(p[0]), int(p[-1]) + 1, p) for p in np.split(pfns, self._windows(pfns)) if p.size]
        if not parts:
            return self._decode(0, 0)
        return PageWords(**{f: (None if getattr(parts[0], f) is None
                                else np.concatenate([getattr(p, f) for p in parts]))
                            for f in PageWords.__dataclass_fields__})

    def refcounts(self, pfns: np.ndarray) -> np.ndarray:
        """``_refcount`` of each PFN (int32, in the order given)."""
        off = self.layout.refcount
        return self.struct_pages(pfns, off, off + 4).view("<i4").reshape(-1)

    def struct_pages(self, pfns: np.ndarray, lo_byte: int = 0, hi_byte: int | None = None,
                     step: int = 1 << 18) -> np.ndarray:
        """Bytes ``[lo_byte, hi_byte)`` of the ``struct page`` of each PFN (in
        the order given; zeros where unreadable), shape (n, width), read a
        memmap window at a time; PFNs far apart (a page of struct pages or
        more) are read apart."""
        pfns = as_pfns(pfns, self.nr)
        hi_byte = self.struct_size if hi_byte is None else hi_byte
        out = np.zeros((pfns.size, hi_byte - lo_byte), np.uint8)
        # sorted PFNs (candidate lists, millions long) are read in place, a slice
        # at a time, widened to int64: no index arrays as long as the list
        ordered = bool(np.all(pfns[1:] >= pfns[:-1]))
        order = None if ordered else np.argsort(pfns, kind="stable")
        for start in range(0, pfns.size, step):
            idx = np.arange(start, min(start + step, pfns.size)) if ordered else order[start:start + step]
            wide = pfns[idx].astype(np.int64)
            cuts = self._windows(wide)
            for part, p in zip(np.split(idx, cuts), np.split(wide, cuts)):
                if not part.size:
                    continue
                lo, hi = int(p[0]), int(p[-1]) + 1
                raw, _ = self._read(lo, hi)
                out[part] = raw[p - lo, lo_byte:hi_byte]
        return out

    def _windows(self, ordered: np.ndarray) -> np.ndarray:
        """Where to cut sorted PFNs into memmap windows that are each read
        in one go: at every ``CHUNK_PAGES`` boundary, and between PFNs a
        page of struct pages or more apart (so far-apart pages do not read
        the memmap between them)."""
        apart = max(1, self.page_size // self.struct_size)
        return np.flatnonzero((np.diff(ordered // CHUNK_PAGES) != 0) | (np.diff(ordered) > apart)) + 1

    def _read(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw struct pages ``[lo, hi)`` (bytes, shape (n, size)) and which were readable."""
        size = self.struct_size
        try:
            data = self.prog.read(self.memmap + lo * size, (hi - lo) * size)
            return np.frombuffer(data, np.uint8).reshape(hi - lo, size), np.ones(hi - lo, bool)
        except drgn.FaultError:
            pass
        if hi - lo <= 64:
            # a filtered dump lacks whole memmap pages: 64 struct pages per 4 KiB
            return np.zeros((hi - lo, size), np.uint8), np.zeros(hi - lo, bool)
        mid = lo + (hi - lo) // 2
        (r1, ok1), (r2, ok2) = self._read(lo, mid), self._read(mid, hi)
        return np.concatenate([r1, r2]), np.concatenate([ok1, ok2])

    def _head_pfns(self, pfn: np.ndarray, info: np.ndarray) -> np.ndarray:
        """The head PFN of each tail page ``pfn`` from its ``compound_head``
        word (bit 0 set), -1 where it points outside the memmap.

        Fact: the word is the head's ``struct page`` address | 1, except
        from 7.x with HugeTLB vmemmap optimization and a power-of-two
        ``struct page`` (``compound_info_has_mask()``), where it is ``mask |
        1`` with ``mask = GENMASK(63, order + log2(sizeof(struct page)))``,
        and the head is the tail's own address ANDed with the mask.  The two
        never meet: a mask is ``-2**shift``, and no ``struct page`` address
        (the vmemmap region) is."""
        mask = info & ~np.uint64(1)
        neg = ~mask + np.uint64(1)
        is_mask = (mask != 0) & ((neg & (neg - np.uint64(1))) == 0)
        own = np.uint64(self.memmap) + pfn.astype(np.uint64) * np.uint64(self.struct_size)
        addr = np.where(is_mask, own & mask, mask)
        hp = np.full(pfn.size, -1, np.int64)
        ok = addr >= np.uint64(self.memmap)
        hp[ok] = ((addr[ok] - np.uint64(self.memmap)) // np.uint64(self.struct_size)).astype(np.int64)
        return hp

    def _decode(self, lo: int, hi: int, pick: np.ndarray | None = None) -> PageWords:
        """Decode ``[lo, hi)``, or only the PFNs ``pick`` in it."""
        L, size = self.layout, self.struct_size
        raw, readable = self._read(lo, hi) if hi > lo else (np.zeros((0, size), np.uint8), np.zeros(0, bool))
        idx = np.arange(hi - lo) if pick is None else (pick - lo)

        def field_(off: int, dtype: str) -> np.ndarray:
            width = np.dtype(dtype).itemsize
            if off % width or size % width:
                return raw[idx, off:off + width].copy().view(dtype).reshape(-1)
            # the struct pages as words of the field's width: one strided
            # column, copied (a whole chunk) or gathered (picked PFNs)
            column = raw.view(dtype)[:, off // width]
            return column.copy() if pick is None else column[idx]

        flags = field_(L.flags, "<u8")
        head = field_(L.compound_head, "<u8")
        ok = readable[idx]
        pfn = idx.astype(np.int64) + lo
        is_head = ok & ((flags >> np.uint64(L.head_bit)) & np.uint64(1)).astype(bool)
        # The order sits in page[1] (or the folio spanning it), a byte at a
        # fixed offset from the head's struct page; a head at hi - 1 needs
        # one struct page past the window.
        order = np.zeros(idx.size, np.uint8)
        dtor = np.zeros(idx.size, np.uint8) if L.dtor_offset is not None else None
        inner = is_head & (idx + 1 < hi - lo)
        flat = raw.reshape(-1)
        order[inner] = flat[idx[inner] * size + L.order_offset]
        if dtor is not None:
            dtor[inner] = flat[idx[inner] * size + L.dtor_offset]
        last = np.flatnonzero(is_head & ~inner)
        if last.size:
            try:
                after = self.prog.read(self.memmap + (hi - 1) * size, 2 * size)
                order[last] = after[L.order_offset]
                if dtor is not None:
                    dtor[last] = after[L.dtor_offset]
            except drgn.FaultError:
                pass
        tail = ok & (head & np.uint64(1)).astype(bool)
        head_pfn = pfn.copy()
        hp = self._head_pfns(pfn[tail], head[tail])
        inside = (hp >= 0) & (hp < self.nr)
        head_pfn[np.flatnonzero(tail)[inside]] = hp[inside]
        return PageWords(
            pfn=pfn, readable=ok, flags=flags, refcount=field_(L.refcount, "<i4"),
            mapcount=field_(L.mapcount, "<u4"), mapping=field_(L.mapping, "<u8"), compound_head=head,
            private=field_(L.private, "<u8"),
            pp_magic=field_(L.pp_magic, "<u8") if L.pp_magic is not None else None,
            order=order, dtor=dtor, head_pfn=head_pfn, is_head=is_head)


def valid_ranges(prog: drgn.Program) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """The valid PFN ranges of ``mem_section`` (start, end, memmap address),
    up to ``max_pfn``, and the ranges past it.

    Fact: ``max_pfn`` is the end of the highest memory the kernel has,
    hot-added memory and ZONE_DEVICE ranges included (x86-64's
    ``arch_add_memory()`` raises it), and a present section starts below
    it.  A section present past it (rounded up to a whole section) is a
    damaged ``mem_section`` entry: it is left out, so one stray bit cannot
    size every per-PFN array by the top of the physical address space."""
    ranges = [(start, end, mem_map.value_()) for start, end, mem_map in for_each_valid_page_range(prog)]
    if not ranges:
        raise ValueError("no valid page ranges found in mem_section")
    limit = _sections_end(prog)
    beyond = [(s, e) for s, e, _ in ranges if s >= limit]
    ranges = [(s, min(e, limit), mm) for s, e, mm in ranges if s < limit]
    if not ranges:
        raise ValueError(f"no valid page range below max_pfn in mem_section (first at pfn {beyond[0][0]})")
    return ranges, beyond


def whole_vmemmap(prog: drgn.Program, fault: drgn.FaultError) -> list[tuple[int, int, int]]:
    """One range from PFN 0 up to ``max_pfn`` (rounded up to a section),
    its memmap at ``vmemmap``: what is left to read where a pointer of
    ``mem_section`` leads nowhere.

    Fact: with ``CONFIG_SPARSEMEM_VMEMMAP`` (every x86-64 and arm64
    distribution kernel) ``pfn_to_page()`` is ``vmemmap + pfn`` and needs no
    ``mem_section``: the struct pages of every present section are mapped
    there, and a hole's are not mapped at all, so they read as unreadable,
    never as pages.  drgn finds ``vmemmap`` through ``mem_section`` where
    the kernel does not export it; x86-64 keeps it in ``vmemmap_base``
    (``CONFIG_RANDOMIZE_MEMORY``).  Without either, ``fault`` is raised
    again."""
    # probe the struct page of the lowest PFN with memory (RAM starts at 1
    # GiB on arm64's virt machine: PFN 0 has no struct page there)
    first = prog["min_low_pfn"].value_() if has_object(prog, "min_low_pfn") else 0
    size = prog.type("struct page").size
    base = None
    for find in (lambda: prog["vmemmap_base"].value_(), lambda: pfn_to_page(prog, 0).value_()):
        try:
            base = find()
            prog.read(base + first * size, 1)
            break
        except (KeyError, LookupError, drgn.FaultError):
            base = None
    if base is None:
        raise fault
    bits = vmcoreinfo_numbers(prog).get("MAX_PHYSMEM_BITS", 52)   # the architecture's physical address width
    return [(0, min(_sections_end(prog), 1 << (bits - prog["PAGE_SHIFT"].value_())), base)]


def _sections_end(prog: drgn.Program) -> int:
    """``max_pfn`` rounded up to a whole memory section (``SECTION_SIZE_BITS``
    from VMCOREINFO); no bound where the kernel has no ``max_pfn``."""
    if not has_object(prog, "max_pfn"):
        return 1 << 62
    end = prog["max_pfn"].value_()
    bits = vmcoreinfo_numbers(prog).get("SECTION_SIZE_BITS")
    if bits is None:
        return end
    per = 1 << (bits - prog["PAGE_SHIFT"].value_())
    return -(-end // per) * per


def max_block_pages(prog: drgn.Program) -> int:
    """Pages in the largest block the buddy allocator hands out: one order
    per entry of ``zone.free_area`` (``MAX_ORDER`` up to 6.3, then
    ``NR_PAGE_ORDERS``), read from the type, not a constant."""
    return 1 << max_buddy_order(prog)


def max_buddy_order(prog: drgn.Program) -> int:
    """The largest order the buddy allocator hands out (``max_block_pages``'s)."""
    return prog.type("struct zone").member("free_area").type.length - 1
