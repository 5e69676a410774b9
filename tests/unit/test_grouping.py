"""The orphan report's vectorized helpers, on made-up arrays: runs of
contiguous pages, sampling by rank, membership by binary search, refcount
patterns.  They never build a per-orphan object, whatever the slice size."""

import numpy as np

from vmcore_tools.leaks.suspects import BIAS_LIKE, even_sample, members_at, pfn_ranges, refcount_pattern
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
