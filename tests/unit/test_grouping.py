"""The orphan report's vectorized helpers, on made-up arrays: runs of
contiguous pages, sampling by rank, membership by binary search, refcount
patterns.  They never build a per-orphan object, whatever the slice size."""

import numpy as np

from vmcore_tools.leaks.suspects import (BIAS_LIKE, SAMPLE, PATTERNS, even_sample, group_key, members_at, pfn_ranges,
                                         refcount_pattern, refcount_summary)
from vmcore_tools.leaks.candidates import in_sorted


def test_runs_are_the_same_whatever_the_slice():
    pfn = np.array([0, 1, 2, 5, 6, 9, 10, 11, 12, 20])
    every = np.ones(pfn.size, bool)
    for step in (1, 2, 3, 1 << 20):
        assert pfn_ranges(pfn, every, 0, step) == ([[0, 3], [5, 2], [9, 4], [20, 1]], 4)
    some = every.copy()
    some[1] = False                                   # 0 and 2 are no longer contiguous
    assert pfn_ranges(pfn, some, 0, 2) == ([[0, 1], [2, 1], [5, 2], [9, 4], [20, 1]], 5)
    assert pfn_ranges(np.array([4, 6, 8, 12]), np.ones(4, bool), 1, 1) == ([[4, 6], [12, 2]], 2)


def test_only_the_first_runs_are_listed_but_all_are_counted():
    pfn = np.arange(0, 200, 2)                        # 100 runs of one page
    listed, count = pfn_ranges(pfn, np.ones(pfn.size, bool), 0, 7)
    assert count == 100 and len(listed) == 32 and listed[-1] == [62, 1]


def test_members_by_rank_and_by_value():
    mask = np.zeros(100, bool)
    mask[[3, 7, 50, 99]] = True
    assert members_at(mask, np.array([0, 2, 3]), step=10).tolist() == [3, 50, 99]
    assert np.flatnonzero(in_sorted(np.arange(10), np.array([3, 7, 11]))).tolist() == [3, 7]
    assert even_sample(5).tolist() == [0, 1, 2, 3, 4] and even_sample(1000, 4).tolist() == [0, 333, 666, 999]


def test_refcount_patterns():
    got = refcount_pattern(np.array([1, 2, BIAS_LIKE - 1, BIAS_LIKE, 65535], np.int32))
    assert got.tolist() == [1, 2, 2, 0, 0] and got.dtype == np.uint8


def test_the_refcount_summary_is_the_same_whatever_the_slice():
    # 100 bias-like order-0 allocations, 3 of refcount 1 at order 1, 2 others at order 0
    pfn = np.arange(0, 210, 2)[:105]
    order = np.zeros(105, np.uint8)
    refcount = np.full(105, 65000, np.int32)
    refcount[::10] = 65533
    order[[5, 50, 90]], refcount[[5, 50, 90]] = 1, 1
    refcount[[7, 8]] = [3, 9]
    bias, fresh, other = (group_key(np.uint8(o), np.uint8(PATTERNS.index(p)))
                          for o, p in ((0, "bias"), (1, "fresh"), (0, "other")))
    for step in (1, 4, 1 << 18):
        s = refcount_summary(pfn, order, refcount, step)
        assert s.pattern.tolist() == refcount_pattern(refcount).tolist(), step
        assert s.ranges == {bias: (65000, 65533), fresh: (1, 1), other: (3, 9)}, step
        # the 100 bias-like ones are more than a sample: their refcounts are not kept
        assert SAMPLE < 100 and s.few == {10: 1, 100: 1, 180: 1, 14: 3, 16: 9}, step
