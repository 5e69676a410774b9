"""Compound orders and candidate extents on a made-up memmap geometry: the
lookups the orphan report runs over millions of candidates, checked against
a plain per-PFN answer (both of ``Memmap.order_of``'s search directions,
and ``_extent_bits`` at slice sizes that cut allocations)."""

import numpy as np

from vmcore_tools.mm.memmap import Memmap, pfn_dtype
from vmcore_tools.refs.matcher import _extent_bits

NR = 1 << 14


def geometry(heads: np.ndarray, orders: np.ndarray) -> Memmap:
    return Memmap(prog=None, layout=None, ranges=[(0, NR)], nr=NR, memmap=0xFFFFEA0000000000, struct_size=64,
                  direct_map=0xFFFF888000000000, page_shift=12, heads=heads, orders=orders)


def compound(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint compound pages: order 1 to 9, aligned, as the buddy allocator hands them out."""
    heads, orders, pfn = [], [], 0
    while pfn < NR - 512:
        order = int(rng.integers(1, 10))
        pfn = -(-pfn // (1 << order)) * (1 << order) + int(rng.integers(0, 4)) * (1 << order)
        heads.append(pfn)
        orders.append(order)
        pfn += 1 << order
    return np.array(heads, np.int64), np.array(orders, np.uint8)


def test_order_of_answers_the_same_both_ways():
    rng = np.random.default_rng(7)
    heads, orders = compound(rng)
    m = geometry(heads, orders)
    known = dict(zip(heads.tolist(), orders.tolist()))
    for size in (1, 10, heads.size // 2, heads.size * 4, NR):
        pfns = np.unique(rng.integers(0, NR, size))
        pfns = np.unique(np.concatenate([pfns, heads[: size // 2]]))   # sorted, many of them heads
        want = np.array([known.get(p, 0) for p in pfns.tolist()], np.uint8)
        assert np.array_equal(m.order_of(pfns), want)                  # sorted: heads searched in pfns
        assert np.array_equal(m.order_of(pfns.astype(pfn_dtype(m.nr))), want)   # in the memmap's PFN type
        shuffled = rng.permutation(pfns)
        assert np.array_equal(m.order_of(shuffled), want[np.argsort(np.argsort(shuffled))])
    assert m.order_of(int(heads[3])) == int(orders[3]) and m.order_of(int(heads[3]) + 1) == 0


def test_extent_bits_cover_exactly_the_allocations():
    rng = np.random.default_rng(11)
    heads, orders = compound(rng)
    singles = np.setdiff1d(rng.integers(0, NR, 300), np.concatenate(
        [np.arange(h, h + (1 << int(o))) for h, o in zip(heads.tolist(), orders.tolist())]))
    starts = np.concatenate([heads, singles])
    sizes = np.concatenate([orders, np.zeros(singles.size, np.uint8)])
    order = np.argsort(starts)
    starts, sizes = starts[order], sizes[order]
    want = np.zeros(NR, bool)
    for s, o in zip(starts.tolist(), sizes.tolist()):
        want[s:s + (1 << o)] = True
    def order_of(pfns):
        return sizes[np.searchsorted(starts, pfns)]
    for dtype in (np.int64, np.uint32):                 # the heads as the memmap's PFN type keeps them
        for step in (64, 1000 * 8, 1 << 12, 1 << 18):     # slices that cut allocations, and one for all
            bits = _extent_bits(starts.astype(dtype), order_of, NR, step)
            assert np.array_equal(np.unpackbits(bits, bitorder="little")[:NR].astype(bool), want), (dtype, step)


def test_compact_keeps_the_selected_values_in_place():
    from vmcore_tools.leaks.candidates import compact
    rng = np.random.default_rng(3)
    for size, step in ((0, 8), (1, 8), (1000, 7), (1 << 16, 1 << 10), (5000, 1 << 18)):
        values = rng.integers(0, 1 << 40, size)
        keep = rng.random(size) < 0.6
        want = values[keep].copy()
        got = compact(values, keep, step)
        assert np.array_equal(got, want) and (got.base is values or got.size == 0 or got.base is values.base)


def test_a_block_without_gfp_comp_is_one_allocation_once_added():
    """census.blocks: an unattributed order-0 page followed by zero_ref
    pages heads the largest aligned power of two they fill; once added, the
    memmap takes it for one allocation (and not for a compound page)."""
    from vmcore_tools.census.blocks import claim_blocks
    from vmcore_tools.census.classes import PageClass
    m = geometry(np.array([64], np.int64), np.array([2], np.uint8))     # one compound page at 64
    classes = np.full(NR, PageClass.FREE, np.uint8)
    classes[64:68] = PageClass.ZERO_REF          # a compound page of refcount 0: not a block's tail
    classes[63] = PageClass.UNATTRIBUTED
    classes[16] = PageClass.UNATTRIBUTED         # order-2 block: 17..19 in transit
    classes[17:20] = PageClass.ZERO_REF
    classes[40] = PageClass.UNATTRIBUTED         # aligned to 8, three zero_ref pages after: order 2
    classes[41:44] = PageClass.ZERO_REF
    classes[45] = PageClass.UNATTRIBUTED         # odd: no block, its zero_ref neighbour stays
    classes[46] = PageClass.ZERO_REF
    classes[96] = PageClass.SLAB                 # not unattributed: no block
    classes[97] = PageClass.ZERO_REF
    assert claim_blocks(m, classes, largest=1024) == 2
    assert m.blocks.tolist() == [16, 40]
    assert m.order_of(np.array([16, 40, 45, 64])).tolist() == [2, 2, 0, 2]
    assert m.heads_of(np.array([19, 43, 46, 66])).tolist() == [16, 40, 46, 64]
    assert m.compound(np.array([16, 40, 64])).tolist() == [False, False, True]
    assert (classes[16:20] == PageClass.UNATTRIBUTED).all() and (classes[40:44] == PageClass.UNATTRIBUTED).all()
    assert classes[46] == PageClass.ZERO_REF and classes[97] == PageClass.ZERO_REF
    assert m.pages_of(np.array([40])).tolist() == [40, 41, 42, 43]
