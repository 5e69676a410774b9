"""The states no kernel writes (``census.damage.Damage``), one page each,
beside pages a kernel does leave that way: a made-up chunk of struct pages."""

from __future__ import annotations

import numpy as np

from vmcore_tools.census.damage import Damage, pfn_runs
from vmcore_tools.mm.memmap import PageWords

MEMMAP = 0xFFFFEA0000000000


def chunk(pages: list[dict]) -> PageWords:
    """PageWords of PFNs 1024.. with the given fields (defaults: a plain order-0 page)."""
    n = len(pages)
    col = {k: [p.get(k, d) for p in pages] for k, d in
           (("flags", 0), ("refcount", 1), ("mapcount", 0xFFFFFFFF), ("head", 0), ("order", 0), ("is_head", False))}
    pfn = np.arange(1024, 1024 + n, dtype=np.int64)
    head = np.array(col["head"], np.uint64)
    head_pfn = np.where(head & np.uint64(1), ((head & ~np.uint64(1)) - np.uint64(MEMMAP)) // np.uint64(64),
                        pfn.astype(np.uint64)).astype(np.int64)
    return PageWords(pfn=pfn, readable=np.ones(n, bool), flags=np.array(col["flags"], np.uint64),
                     refcount=np.array(col["refcount"], np.int32), mapcount=np.array(col["mapcount"], np.uint32),
                     mapping=np.zeros(n, np.uint64), compound_head=head, private=np.zeros(n, np.uint64),
                     pp_magic=None, order=np.array(col["order"], np.uint8), dtor=None, head_pfn=head_pfn,
                     is_head=np.array(col["is_head"], bool))


def tail_of(pfn: int) -> int:
    return MEMMAP + 64 * pfn | 1


def test_pages_a_kernel_leaves_are_not_damaged():
    w = chunk([{"is_head": True, "order": 2, "refcount": 3},          # an order-2 head at 1024
               {"head": tail_of(1024), "refcount": 0},                 # its tails
               {"head": tail_of(1024), "refcount": 0, "mapcount": 0},
               {"head": tail_of(1024), "refcount": 0},
               {"refcount": 0, "mapcount": 0xFFFFFF7F},                # a buddy page (old type encoding)
               {"refcount": 0, "mapcount": 0xF0000000 | 3},            # a type byte with data (6.12+)
               {"refcount": 65535 * 4},                                # an rx buffer's bias
               {"refcount": 0}])                                       # zero_ref
    assert not Damage(18).damaged(w).any()


def test_each_state_no_kernel_writes():
    w = chunk([{"head": MEMMAP - 64 | 1, "refcount": 0},               # a tail whose head is outside the memmap
               {"head": tail_of(1030), "refcount": 0},                 # ... after it
               {"head": tail_of(1024), "refcount": 5},                 # a tail with a refcount
               {"is_head": True, "order": 1},                          # a head at an odd PFN (1027)
               {"is_head": True, "order": 30},                         # an order above the largest
               {"is_head": True, "head": tail_of(1024)},               # a head that is a tail
               {"refcount": -3},                                       # a negative refcount
               {"mapcount": 0x12345678 | 0x80000000},                  # below -1 and no page type
               {}])                                                    # and a plain page
    assert Damage(18).damaged(w).tolist() == [True] * 8 + [False]


def test_runs():
    assert pfn_runs(np.array([3, 4, 5, 9, 11, 12], np.int64)) == [[3, 3], [9, 1], [11, 2]]
    assert pfn_runs(np.zeros(0, np.int64)) == []
