"""core.arrays.unique gives what np.unique gives, by sorting."""

from __future__ import annotations

import numpy as np

from vmcore_tools.core.arrays import unique


def test_unique_is_numpys_unique():
    rng = np.random.default_rng(7)
    cases = [np.zeros(0, np.int64), np.array([5], np.int64), np.array([3, 3, 3], np.uint8),
             rng.integers(0, 50, 10_000), rng.integers(0, 1 << 40, 10_000).astype(np.uint64),
             np.sort(rng.integers(0, 1000, 5_000)), rng.integers(-9, 9, (40, 7))]
    for values in cases:
        got, want = unique(values), np.unique(values)
        assert got.dtype == want.dtype and got.tolist() == want.tolist()
