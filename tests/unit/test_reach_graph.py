"""Reachability's pure logic: which object a word names (interior and
tagged pointers count, one past the end does not) and the closure over
object edges."""

from __future__ import annotations

import sys

import numpy as np

from vmcore_tools.refs.objects import KIND_BITS, ObjectGraph, ObjectTable


BASE = 0x800


def table() -> ObjectTable:
    start = np.array([0x1000, 0x1100, 0x2000], np.uint64)        # a 256-byte node, a 64-byte object, ...
    kinds = np.array([0, 1, 2], np.uint64)
    keys = ((start - np.uint64(BASE)) << np.uint64(KIND_BITS)) | kinds
    return ObjectTable(keys, BASE, ["c", "c", "d"], np.array([0x100, 0x40, 0x80], np.uint64))


def test_the_table_gives_back_each_object_and_its_slot():
    t = table()
    assert [t.start_of(i) for i in range(3)] == [0x1000, 0x1100, 0x2000]
    assert [t.end_of(i) for i in range(3)] == [0x1100, 0x1140, 0x2080]
    assert t.starts(1).tolist() == [0x1100, 0x2000]
    assert t.index_range(0x1000, 0x2000) == (0, 2) and t.index_range(0, 0x1001) == (0, 1)
    assert t.kind_counts(step=2).tolist() == [1, 1, 1]


def test_interior_and_tagged_pointers_reach_their_object():
    t = table()
    words = np.array([0x1000, 0x1000 | 2, 0x1000 + 0x18 | 0xC, 0x1100 + 0x10 | 1, 0x2000 + 0x7F], np.uint64)
    assert t.find(words).tolist() == [0, 0, 0, 1, 2]


def test_words_outside_every_object_name_none():
    t = table()
    # before, one past the end, gaps, below the base, far above
    words = np.array([0xFFF, 0x1140, 0x2080, 0x1F00, 0, 0x7FF, 1 << 60], np.uint64)
    assert t.find(words).tolist() == [-1] * 7


def closure(rooted: np.ndarray, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return ObjectGraph(rooted.size, edges).reached(rooted)


def test_closure_follows_chains_and_leaves_unreached_cycles():
    rooted = np.zeros(6, bool)
    rooted[0] = True
    # 0 -> 1 -> 2 -> 0 (a cycle with the root), 3 <-> 4 (a cycle nothing reaches), 5 alone
    edges = [(np.array([0, 1, 2, 3], np.int32), np.array([1, 2, 0, 4], np.int32)),
             (np.array([4], np.int32), np.array([3], np.int32))]
    assert closure(rooted, edges).tolist() == [True, True, True, False, False, False]


def test_closure_of_a_long_list_reaches_its_end():
    n = 10_000
    rooted = np.zeros(n, bool)
    rooted[0] = True
    src = np.arange(n - 1, dtype=np.int32)
    assert closure(rooted, [(src[::-1].copy(), (src + 1)[::-1].copy())]).all()


def python_calls_of_a_chain(n: int) -> int:
    """The Python and C calls the profiler sees while the closure follows
    a chain of ``n`` objects from its first (and reaches its end)."""
    rooted = np.zeros(n, bool)
    rooted[0] = True
    src = np.arange(n - 1, dtype=np.int32)
    edges = [(src, src + 1)]
    closure(np.ones(1, bool), [])       # scipy imported before counting
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        reached = closure(rooted, edges)
    finally:
        sys.setprofile(None)
    assert reached.all()
    return calls


def test_a_deep_chain_costs_no_python_round_per_link():
    """The closure's Python-level work does not grow with the depth of the
    graph: a chain of 2 M objects (the shape of one long kernel list, whose
    old frontier-per-round search cost one Python iteration per link) costs
    the same calls as a chain of 2,000, a few hundred."""
    deep, shallow = python_calls_of_a_chain(2_000_000), python_calls_of_a_chain(2_000)
    assert deep == shallow, (deep, shallow)
    assert deep < 1000, deep


def test_closure_with_no_edges_and_no_roots():
    assert closure(np.zeros(3, bool), []).tolist() == [False, False, False]
    assert closure(np.array([False, True]), []).tolist() == [False, True]


def test_holders_of_one_shape_are_one_group_in_the_text():
    """A hundred lost records of one cache and layout read as one line with
    their pages; a holder alone keeps its own sentence."""
    from vmcore_tools.leaks.reachability import HiddenHolder, ReachabilityReport, reachability_text
    same = [HiddenHolder(0x1000 + 0x80 * i, "vmct_obj", 128, [500 + i], 1, "1 struct page pointer(s)")
            for i in range(100)]
    alone = HiddenHolder(0x9000, "kmalloc-192", 192, [7, 8], 2, "2 struct page pointer(s)", text="2 pages ...")
    text = reachability_text(ReachabilityReport(10_000, 9_899, [], [*same, alone], 1 << 20, 1 << 20, 1.0))
    assert "100 page(s) held only by 100 unreachable vmct_obj objects, each (1 struct page pointer(s)), " \
           "at 0x1000 0x1080 0x1100 0x1180 ..." in text
    assert "pfns: 500 501 502" in text and "HELD ONLY BY UNREACHABLE MEMORY: 2 pages ..." in text
    assert text.count("HELD ONLY BY UNREACHABLE MEMORY") == 2
