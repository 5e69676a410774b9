"""The matcher: which 64-bit words name a candidate page, and how.

A word can name a candidate by its ``struct page`` address, by a direct-map
address inside it, by its physical address, or as a hardware-style table
entry; which of these count where is the registry's (``registry.ROOTS``).
Everything here is vectorized: a chunk of words in, the hits out.

A physical-looking number is as likely a timestamp or a hash, so physical
addresses count only in referenced pages: 64-byte aligned and not a round
number (``is_round``: a firmware table once held 64 MiB three times over
and hid a leaked page at PFN 16384), or as entries of a page shaped like a
hardware table (``table_entries``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from vmcore_tools.mm.memmap import Memmap, as_pfns
from vmcore_tools.core.arrays import unique


#: Physical addresses below this are not taken as references (small integers abound).
MIN_PHYS = 1 << 20


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
        pages[i] = unique(flags[i][entry.reshape(-1, page_words)[i]]).size <= TABLE_FLAG_SETS
    return entry & np.repeat(pages, page_words)


class Matcher:
    """Maps 64-bit words to candidate pages, vectorized."""

    def __init__(self, a: Memmap, heads: np.ndarray):
        self.a = a
        heads = as_pfns(heads, a.nr)
        #: the candidates' heads, in the memmap's PFN type (``memmap.pfn_dtype``)
        self.heads = heads if np.all(heads[1:] > heads[:-1]) else unique(heads)
        self.bits = _extent_bits(self.heads, a.order_of, a.nr)
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

    def still_points(self, word: np.ndarray, kind: str, head: int, first: int) -> bool:
        """Whether one re-read word still references candidate ``head`` as
        ``kind``; ``first`` is the word as the scan read it.  A table entry
        still does while it names the candidate with every flag bit it had
        set: the valid bit is its table format's own (bit 0, present, in x86
        and IOMMU tables; bit 63 in a GICv3 ITS level-1 table)."""
        if kind == "table entry":
            pfn = (word & ENTRY_ADDRESS) >> np.uint64(self.a.page_shift)
            flags = np.uint64(first) & ~ENTRY_ADDRESS
            return bool((word[0] & flags) == flags) and int(self.candidate(pfn.astype(np.int64))[0]) == head
        return any(int(h[0]) == head for _, h, k in self.match(word, kind == "physical") if k == kind)

    def candidate(self, pfns: np.ndarray) -> np.ndarray:
        """The candidate (head PFN) each PFN lies in, -1 where none."""
        out = np.full(pfns.size, -1, np.int64)
        inside = ((self.bits[pfns >> 3] >> (pfns & 7).astype(np.uint8)) & 1).astype(bool)
        if inside.any():
            # searched in the heads' own type (in range: inside the bitmap)
            at = np.searchsorted(self.heads, pfns[inside].astype(self.heads.dtype), side="right") - 1
            out[inside] = self.heads[at]
        return out


def set_pfn_bits(bits: np.ndarray, pfns: np.ndarray, step: int = 1 << 18) -> None:
    """Set the bits of the sorted ``pfns`` in the bitmap ``bits`` (1 bit per
    page, little-endian bits), a slice of them at a time (a few bytes per
    PFN of the slice, not of them all).  Only the bytes of set bits are
    written: where ``bits`` is fresh ``np.zeros`` memory, the rest stays
    the untouched zero memory it maps, which costs no RAM, so a hole in the
    physical address space costs none (``census.no_pages``)."""
    for lo in range(0, pfns.size, step):
        p = np.asarray(pfns[lo:lo + step], np.int64)
        byte = p >> 3
        first = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        # |=: the first byte of a slice may hold bits of the one before
        bits[byte[first]] |= np.bitwise_or.reduceat(np.left_shift(1, p & 7).astype(np.uint8), first)


def bit_pfns(bits: np.ndarray, nr: int) -> np.ndarray:
    """The PFNs set in ``bits`` (``set_pfn_bits``), read through its nonzero
    bytes only."""
    nonzero = np.flatnonzero(bits)
    set_ = np.unpackbits(bits[nonzero], bitorder="little").reshape(-1, 8).astype(bool)
    pfns = (nonzero[:, None] * 8 + np.arange(8))[set_]
    return pfns[pfns < nr]


def _extent_bits(heads: np.ndarray, order_of: Callable[[np.ndarray], np.ndarray], nr: int,
                 step: int = 1 << 18) -> np.ndarray:
    """A bitmap of the PFNs inside the allocations at ``heads`` (sorted,
    disjoint; 1 bit per page; ``order_of`` gives their orders), built a
    slice at a time, each slice's heads widened to int64: only the last
    allocation that starts before a slice can reach into it."""
    bits = np.zeros(-(-nr // step) * step // 8, np.uint8)
    for lo in range(0, nr, step):
        first = max(int(np.searchsorted(heads, lo)) - 1, 0)
        last = int(np.searchsorted(heads, lo + step))
        if first >= last:
            continue
        starts = heads[first:last].astype(np.int64)
        ends = starts + (np.int64(1) << order_of(starts).astype(np.int64))
        # +1 where an extent starts, -1 where one ends (bincount: np.add.at is slow)
        edges = (np.bincount(np.clip(starts - lo, 0, step), minlength=step + 1)
                 - np.bincount(np.clip(ends - lo, 0, step), minlength=step + 1))
        inside = np.cumsum(edges[:-1]) > 0
        bits[lo // 8:(lo + step) // 8] = np.packbits(inside, bitorder="little")
    return bits


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
