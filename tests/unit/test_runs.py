"""The run rule (``runs.extend_runs``) on a made-up memmap: which
unreferenced order-0 pages after a page held by its start address are
taken as the tail of its ``alloc_pages_exact()`` run, and which pages end
the run because they are allocations of their own."""

from types import SimpleNamespace

import numpy as np

from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.refs.references import Reference
from vmcore_tools.refs.references import DIRECT_MAP, STRUCT_PAGE, TABLE_ENTRY
from vmcore_tools.refs.runs import extend_runs

NR = 1 << 10
DIRECT = 0xFFFF888000000000
HEAD = 64           # 64-aligned: a block of up to 64 pages may start here
SKB = 0xFFFF888100008000   # an skb: its word at +0xc8 is taken for its head pointer


def run_rule(held: dict[int, list[Reference]], singles: list[int],
             once_cache: frozenset[int] = frozenset()) -> dict[int, list[Reference]]:
    """References after the rule, for candidates ``singles`` (order 0,
    refcount 1) of which ``held`` are referenced, and ``once_cache`` have
    flags that say they were page cache or anonymous memory."""
    a = Memmap(prog=None, layout=None, ranges=[(0, NR)], nr=NR, memmap=0xFFFFEA0000000000, struct_size=64,
               direct_map=DIRECT, page_shift=12, heads=np.zeros(0, np.int64), orders=np.zeros(0, np.uint8))
    references = dict(held)
    # the part of the scan's API the rule uses (engine.ScanEngine), over the made-up memmap
    scan = SimpleNamespace(memmap=a, references=references, is_single=set(singles).__contains__,
                           single_pfns=lambda: np.array(sorted(singles), np.int64),
                           were_user_or_cache=lambda pfns: np.isin(pfns, sorted(once_cache)),
                           max_block=1 << 10, page_owners=None,
                           is_skb_head=lambda ref: ref.holder == SKB,
                           hold=lambda ref: references.setdefault(ref.target, []).append(ref))
    extend_runs(scan)
    return references


def by(kind: str, pfn: int, region: str = "slab", holder: int = 0xFFFF888100000000) -> list[Reference]:
    """A reference to ``pfn`` from a word of the object at ``holder``."""
    value = DIRECT + (pfn << 12) if kind == DIRECT_MAP else pfn << 12 | 3
    return [Reference(pfn, kind, holder + 0xc8, region, "", value, holder if region == "slab" else 0)]


def test_a_heap_held_start_takes_in_the_unreferenced_pages_after_it():
    refs = run_rule({HEAD: by(DIRECT_MAP, HEAD)}, [HEAD, HEAD + 1, HEAD + 2])
    assert {HEAD + 1, HEAD + 2} <= set(refs)
    assert refs[HEAD + 1][0].region == "run"


def test_a_single_unreferenced_page_after_a_heap_held_start_stays_a_candidate():
    refs = run_rule({HEAD: by(DIRECT_MAP, HEAD)}, [HEAD, HEAD + 1])
    assert HEAD + 1 not in refs


def test_an_inner_page_held_by_its_address_does_not_end_the_run():
    """vring.used, say: a pointer to a page boundary inside the buffer,
    kept in the object that holds the buffer's start."""
    refs = run_rule({HEAD: by(DIRECT_MAP, HEAD), HEAD + 2: by(DIRECT_MAP, HEAD + 2)},
                    [HEAD, HEAD + 1, HEAD + 2, HEAD + 3])
    assert {HEAD + 1, HEAD + 3} <= set(refs)


def test_a_page_held_by_its_struct_page_or_a_table_entry_ends_the_run():
    """A one-page buffer, its unreferenced neighbour, then a page on a
    page->lru list (or a table's level or mapped page), then another
    unreferenced page: two unreferenced pages in the window, but the page
    between them is an allocation of its own, so neither is a tail."""
    for kind in (STRUCT_PAGE, TABLE_ENTRY):
        held = {HEAD: by(DIRECT_MAP, HEAD), HEAD + 2: by(kind, HEAD + 2, "referenced page")}
        refs = run_rule(held, [HEAD, HEAD + 1, HEAD + 2, HEAD + 3])
        assert HEAD + 1 not in refs and HEAD + 3 not in refs, kind


def test_inner_pages_each_held_at_their_start_by_other_objects_end_the_run():
    """A row of pages, each the head of its own skb (skb->head holds its
    first byte), then two never-used leaked pages: the skbs hold
    allocations of their own, so the leaked pages are no buffer's tail."""
    row = range(HEAD, HEAD + 32)
    held = {p: by(DIRECT_MAP, p, holder=0xFFFF888200000000 + 0x100 * i) for i, p in enumerate(row)}
    refs = run_rule(held, [*row, HEAD + 32, HEAD + 33])
    assert HEAD + 32 not in refs and HEAD + 33 not in refs
    # the same row held from a stack (no object known) still reads as one buffer
    held = {p: by(DIRECT_MAP, p, "stack") for p in row}
    assert {HEAD + 32, HEAD + 33} <= set(run_rule(held, [*row, HEAD + 32, HEAD + 33]))


def test_a_page_that_was_page_cache_ends_the_run_and_starts_none():
    """split_page() leaves no flag, and no driver sets the page cache's:
    pages after a held start whose flags say they were page cache (a
    released shmem page a leaked reference kept) are no part of its run,
    and such a page starts no run either."""
    refs = run_rule({HEAD: by(DIRECT_MAP, HEAD)}, [HEAD, HEAD + 1, HEAD + 2, HEAD + 3],
                    frozenset({HEAD + 1}))
    assert not {HEAD + 1, HEAD + 2, HEAD + 3} & set(refs)
    refs = run_rule({HEAD: by(DIRECT_MAP, HEAD)}, [HEAD, HEAD + 1, HEAD + 2], frozenset({HEAD}))
    assert not {HEAD + 1, HEAD + 2} & set(refs)


def test_a_page_an_skb_heads_is_an_allocation_of_its_own():
    """An skb gives its head back alone: the page it heads starts no run,
    and ends one it lies in."""
    refs = run_rule({HEAD: by(DIRECT_MAP, HEAD, holder=SKB)}, [HEAD, HEAD + 1, HEAD + 2])
    assert HEAD + 1 not in refs and HEAD + 2 not in refs
    refs = run_rule({HEAD: by(DIRECT_MAP, HEAD), HEAD + 3: by(DIRECT_MAP, HEAD + 3, holder=SKB)},
                    [HEAD, HEAD + 1, HEAD + 2, HEAD + 3, HEAD + 4, HEAD + 5])
    assert {HEAD + 1, HEAD + 2} <= set(refs) and HEAD + 4 not in refs and HEAD + 5 not in refs
