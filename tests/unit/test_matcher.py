"""The reference scan's word matcher on a small, made-up memmap: which
64-bit words count as references to which candidate pages."""

import numpy as np

from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.refs.matcher import Matcher, bit_pfns, is_round, set_pfn_bits

NR = 1 << 15
MEMMAP, STRUCT_PAGE, DIRECT = 0xFFFFEA0000000000, 64, 0xFFFF888000000000


def memmap() -> Memmap:
    """Geometry only (no program to read): PFN 16390 is an order-1 head."""
    return Memmap(prog=None, layout=None, ranges=[(0, NR)], nr=NR, memmap=MEMMAP, struct_size=STRUCT_PAGE,
                  direct_map=DIRECT, page_shift=12, heads=np.array([16390], np.int64),
                  orders=np.array([1], np.uint8))


def hits(words: list[int], physical: bool) -> list[tuple[int, int, str]]:
    m = Matcher(memmap(), np.array([16384, 16390, 20001]))
    w = np.array(words, np.uint64)
    return sorted((int(i), int(h), kind) for idx, heads, kind in m.match(w, physical)
                  for i, h in zip(idx, heads))


def test_each_kind_of_reference_names_the_head():
    words = [MEMMAP + 16384 * STRUCT_PAGE + 8,     # inside its struct page
             DIRECT + (16391 << 12) + 100,        # inside the tail of an order-1 page
             (20001 << 12) + 0x40,                # a DMA address, 64-byte aligned
             (20001 << 12) + 0x42,                # not aligned: not an address we take
             DIRECT + (16386 << 12),              # not a candidate
             0x1234]
    assert hits(words, physical=True) == [(0, 16384, "struct page"), (1, 16390, "direct map"),
                                          (2, 20001, "physical")]
    assert hits(words, physical=False) == [(0, 16384, "struct page"), (1, 16390, "direct map")]


def test_round_numbers_are_not_physical_addresses():
    # 0x4000000 is PFN 16384's physical address and also "64 MiB"; 16390's is 0x4006000 (3 bits)
    words = [16384 << 12, (16384 << 12) + 0x40, 16390 << 12, DIRECT + (16384 << 12)]
    assert hits(words, physical=True) == [(1, 16384, "physical"), (2, 16390, "physical"),
                                          (3, 16384, "direct map")]
    assert is_round(np.array([64 << 20, 0xC0000000, 0x4006000, 0x4000040], np.uint64), 12).tolist() == \
        [True, True, False, False]


def test_compound_heads_and_orders_from_the_sparse_list():
    m = memmap()
    assert m.order_of(np.array([16389, 16390, 16391])).tolist() == [0, 1, 0]
    assert m.order_of(16390) == 1
    assert m.heads_of(np.array([16389, 16390, 16391, 16392])).tolist() == [16389, 16390, 16390, 16392]


def test_only_frag_shaped_page_pointers_count_in_rx_buffers():
    """In an rx buffer a struct page pointer counts only as an skb frag:
    followed by its length and offset (two 32-bit fields), not by another
    pointer (a stale array of page pointers) or by nothing, and not right
    after another page pointer (frags lie 16 bytes apart)."""
    from vmcore_tools.refs.matcher import frag_entries
    page = MEMMAP + 16384 * STRUCT_PAGE
    words = np.array([page, (64 << 32) | 1500,     # bio_vec: bv_len 1500, bv_offset 64
                      page, page + STRUCT_PAGE,      # a pointer after a pointer
                      page, 0,                      # nothing after it
                      page, 0xFFFF0000_00000010,    # a field beyond any block
                      page + STRUCT_PAGE, page, 0x1_00000001,   # the end of a stale pointer array
                      page, (0 << 32) | 4096,       # a second frag, after the first's fields
                      page], np.uint64)             # the last word: nothing after it
    memmap = (MEMMAP, MEMMAP + NR * STRUCT_PAGE)
    mask = frag_entries(words, np.array([0, 2, 4, 6, 9, 11, 13]), 4 << 20, memmap)
    assert mask.tolist() == [True, False, False, False, False, True, False]


def test_table_entries_need_a_whole_table_shaped_page():
    """Physical addresses with flag bits count only in a page whose every
    nonzero word is such an entry: x86 (0x67), VT-d (0x3) and AMD IOMMU
    (IR/IW in bits 61-62) entries; one timestamp-like word, and the page is
    not a table; nor is an hlist_nulls hash table, odd in every slot with a
    counter in its low bits."""
    from vmcore_tools.refs.matcher import table_entries
    page = np.zeros(512, np.uint64)
    page[[3, 77, 509]] = [(16384 << 12) | 0x67, (16390 << 12) | 0x3, (20001 << 12) | 0x6000000000000601]
    other = page.copy()
    other[100] = 0x17A3B4C5D6E7F001          # bit 0 set, but bits 52-58 too
    empty = np.zeros(512, np.uint64)
    nulls = (((np.uint64(1) << np.uint64(29)) + np.arange(512, dtype=np.uint64)) << np.uint64(1)) | np.uint64(1)
    got = table_entries(np.concatenate([page, other, empty, nulls]), 512)
    assert np.flatnonzero(got).tolist() == [3, 77, 509]
    hit = hits_in_table(page)
    assert hit == [(3, 16384, "table entry"), (77, 16390, "table entry"), (509, 20001, "table entry")]


def hits_in_table(words: np.ndarray) -> list[tuple[int, int, str]]:
    m = Matcher(memmap(), np.array([16384, 16390, 20001]))
    return sorted((int(i), int(h), kind) for idx, heads, kind in m.match(words, True)
                  for i, h in zip(idx, heads) if kind == "table entry")


def test_a_bitmap_built_a_slice_at_a_time_has_every_pfn():
    # slices of 5 PFNs: bytes shared by two slices (PFNs 8-15 here) keep the bits of both
    pfns = np.array([0, 3, 7, 9, 10, 12, 14, 15, 16, 40, 41, 47, 1000], np.int64)
    for step in (1, 5, 1 << 18):
        bits = np.zeros(-(-(1024 + 8) // 8), np.uint8)
        set_pfn_bits(bits, pfns, step)
        assert bit_pfns(bits, 1024 + 8).tolist() == pfns.tolist(), step
