"""Bulk ``struct page`` reading: the whole memmap as numpy arrays.

Millions of pages cannot go through one drgn ``Object`` each.  We read the
memmap one valid PFN range at a time (drgn's ``for_each_valid_page_range``
walks ``mem_section``), in bounded chunks, and cut the words the classifier
needs out of the raw bytes with offsets taken from the DWARF ``struct page``.
A chunk that cannot be read (a filtered dump, a hole) is marked unreadable,
never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import drgn
import numpy as np
from drgn.helpers.linux.mm import for_each_valid_page_range, pfn_to_virt

from .features import has_member

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
        )


@dataclass
class PageArrays:
    """Decoded memmap: one entry per PFN in ``[0, max_pfn)``."""

    base_pfn: int
    valid: np.ndarray        # bool: the PFN has a struct page (section present)
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
    memmap: int              # address of struct page for PFN 0
    page_size: int           # sizeof(struct page)
    direct_map: int          # virtual address of PFN 0 in the kernel's direct map
    page_shift: int

    @property
    def nr(self) -> int:
        return self.flags.size

    def pfn_of_page_ptr(self, addr: int) -> int:
        """PFN of a ``struct page *`` (-1 if it is not in the memmap)."""
        pfn = (addr - self.memmap) // self.page_size
        return pfn if 0 <= pfn < self.nr and addr >= self.memmap else -1

    def pfn_of_virt(self, addr: int) -> int:
        """PFN of a direct-map address (-1 outside the direct map)."""
        pfn = (addr - self.direct_map) >> self.page_shift
        return pfn if 0 <= pfn < self.nr and addr >= self.direct_map else -1

    def pfns_of_page_ptrs(self, ptrs: np.ndarray) -> np.ndarray:
        """Vectorized ``pfn_of_page_ptr`` over uint64 pointers (-1 where invalid)."""
        return self._pfns((ptrs.astype(np.uint64) - np.uint64(self.memmap)) // np.uint64(self.page_size),
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

    def head_of(self, pfn: int) -> int:
        """PFN of the compound head of ``pfn`` (itself when not a tail)."""
        ch = int(self.compound_head[pfn])
        return (ch - 1 - self.memmap) // self.page_size if ch & 1 else pfn

    def head_pfn(self) -> np.ndarray:
        """PFN of each page's compound head (itself when not a tail)."""
        pfns = np.arange(self.nr, dtype=np.int64)
        tail = (self.compound_head & 1).astype(bool) & self.readable
        size = self.page_size
        heads = ((self.compound_head[tail] - 1 - np.uint64(self.memmap)) // np.uint64(size)).astype(np.int64)
        ok = (heads >= 0) & (heads < self.nr)
        out = pfns.copy()
        idx = np.nonzero(tail)[0]
        out[idx[ok]] = heads[ok]
        return out


def read_pages(prog: drgn.Program, progress: Callable[[int, int], None] | None = None,
               chunk_pages: int = CHUNK_PAGES) -> PageArrays:
    """Read and decode every valid ``struct page``.

    ``progress(done, total)`` is called after each chunk.
    """
    layout = PageLayout.from_program(prog)
    ranges = [(start, end, mem_map.value_()) for start, end, mem_map in for_each_valid_page_range(prog)]
    if not ranges:
        raise ValueError("no valid page ranges found in mem_section")
    max_pfn = max(end for _, end, _ in ranges)
    memmap = ranges[0][2]
    n = max_pfn
    arrays = PageArrays(
        base_pfn=0,
        valid=np.zeros(n, bool), readable=np.zeros(n, bool),
        flags=np.zeros(n, np.uint64), refcount=np.zeros(n, np.int32),
        mapcount=np.zeros(n, np.uint32), mapping=np.zeros(n, np.uint64),
        compound_head=np.zeros(n, np.uint64), private=np.zeros(n, np.uint64),
        pp_magic=np.zeros(n, np.uint64) if layout.pp_magic is not None else None,
        order=np.zeros(n, np.uint8),
        dtor=np.zeros(n, np.uint8) if layout.dtor_offset is not None else None,
        memmap=memmap, page_size=layout.size,
        direct_map=pfn_to_virt(prog, 0).value_(), page_shift=prog["PAGE_SHIFT"].value_(),
    )
    total = sum(end - start for start, end, _ in ranges)
    done = 0
    for start, end, mm in ranges:
        arrays.valid[start:end] = True
        for lo in range(start, end, chunk_pages):
            hi = min(end, lo + chunk_pages)
            _decode_chunk(prog, layout, arrays, mm, lo, hi)
            done += hi - lo
            if progress:
                progress(done, total)
    _decode_orders(prog, layout, arrays)
    return arrays


def _read_chunk(prog: drgn.Program, addr: int, size: int) -> bytes | None:
    try:
        return prog.read(addr, size)
    except drgn.FaultError:
        return None


def _decode_chunk(prog: drgn.Program, layout: PageLayout, a: PageArrays, mm: int,
                  lo: int, hi: int) -> None:
    size = layout.size
    data = _read_chunk(prog, mm + lo * size, (hi - lo) * size)
    if data is None:
        # Split until the unreadable part is isolated (a filtered dump may
        # lack single memmap pages): 64 struct pages per 4 KiB of memmap.
        if hi - lo > 64:
            mid = lo + (hi - lo) // 2
            _decode_chunk(prog, layout, a, mm, lo, mid)
            _decode_chunk(prog, layout, a, mm, mid, hi)
        return
    raw = np.frombuffer(data, np.uint8).reshape(hi - lo, size)

    def field(off: int, dtype: str) -> np.ndarray:
        width = np.dtype(dtype).itemsize
        return raw[:, off:off + width].copy().view(dtype).reshape(-1)

    a.readable[lo:hi] = True
    a.flags[lo:hi] = field(layout.flags, "<u8")
    a.refcount[lo:hi] = field(layout.refcount, "<i4")
    a.mapcount[lo:hi] = field(layout.mapcount, "<u4")
    a.mapping[lo:hi] = field(layout.mapping, "<u8")
    a.compound_head[lo:hi] = field(layout.compound_head, "<u8")
    a.private[lo:hi] = field(layout.private, "<u8")
    if a.pp_magic is not None and layout.pp_magic is not None:
        a.pp_magic[lo:hi] = field(layout.pp_magic, "<u8")


def head_flag_mask(prog: drgn.Program) -> int:
    return 1 << prog.constant("PG_head").value_()


def _decode_orders(prog: drgn.Program, layout: PageLayout, a: PageArrays) -> None:
    """Compound order (and destructor) of every head page, read from the page after it."""
    heads = np.nonzero((a.flags & np.uint64(head_flag_mask(prog))).astype(bool) & a.readable)[0]
    # The order byte lives in the first tail's struct page (page[1]) or the
    # folio that spans it, right after the head in the memmap: read windows
    # of the memmap that cover many heads at once.
    size = layout.size
    for lo, hi in _spans(heads, size):
        data = _read_chunk(prog, a.memmap + lo * size, (hi - lo) * size)
        if data is None:
            continue
        raw = np.frombuffer(data, np.uint8)
        sel = heads[(heads >= lo) & (heads + 1 < hi)]
        a.order[sel] = raw[(sel - lo) * size + layout.order_offset]
        if a.dtor is not None and layout.dtor_offset is not None:
            a.dtor[sel] = raw[(sel - lo) * size + layout.dtor_offset]


def _spans(heads: np.ndarray, size: int, max_pages: int = CHUNK_PAGES) -> Iterator[tuple[int, int]]:
    """Contiguous PFN windows covering each head and the page after it."""
    if heads.size == 0:
        return
    lo = int(heads[0])
    hi = lo + 2
    for h in heads[1:]:
        h = int(h)
        if h + 2 - lo <= max_pages:
            hi = h + 2
        else:
            yield lo, hi
            lo, hi = h, h + 2
    yield lo, hi
