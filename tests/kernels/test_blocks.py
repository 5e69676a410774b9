"""Multi-page blocks allocated without __GFP_COMP (census/blocks.py), and
pages lost right after held buffers, as vmct_blocks plants them on every
line: a block is one allocation everywhere -- a pointer into its last page
holds it, the words of its pages 1..n hold what they name, its tail pages
count with its class -- and a page lost right after a held buffer is
orphaned, or at worst in the inferred tier, never silently held."""

from __future__ import annotations

import numpy as np
import pytest

from vmcore_tools import orphans
from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.page import explain_page
from vmcore_tools.refs.references import ALLOCATION_RUN
from vmcore_tools.refs.scan import scan_references

from ..conftest import KERNELS, lines, sample_core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module", params=lines(KERNELS))
def blocks(request):
    core = sample_core("i40e-leak", request.param)
    return core, orphans(core.program())


def owned(core, kind: str) -> list[int]:
    return [o["pfn"] for o in core.manifest["owned"] if o["kind"] == kind]


def test_a_block_known_by_a_pointer_into_its_last_page_is_held(blocks):
    """An order-2 and an order-3 block (__get_free_pages(): the first page
    has a reference, the others refcount 0), known only by a pointer 16
    bytes below the end: each is one allocation of its order, held from the
    driver's kmalloc'd state, its tail pages unattributed like its head --
    and without the block's extent the head is orphaned."""
    core, r = blocks
    c, a = r.census, r.census.memmap
    heads = np.array(sorted(owned(core, "block-end")), np.int64)
    assert heads.size == 2
    assert sorted(a.order_of(heads).tolist()) == [2, 3]
    assert np.isin(heads, a.blocks).all() and not a.compound(heads).any()
    assert (c.refcounts(heads) == 1).all()
    held = {x.pfn: x.references for x in r.referenced}
    for head in heads.tolist():
        pages = a.pages_of(np.array([head]))
        assert (c.classes[pages] == PageClass.UNATTRIBUTED).all(), head
        assert (a.heads_of(pages) == head).all()
        assert not set(pages.tolist()) & set(r.found.pfn.tolist()), head
        assert any(w.startswith("slab kmalloc") for w in held[head]), held.get(head)
        tail = int(pages[-1])
        page = explain_page(c.prog, tail, c, references=False)
        assert (page.head, page.order) == (head, int(a.order_of(head)))


def test_pages_named_only_from_a_blocks_tail_are_held(blocks):
    """The words of pages 1 to 3 of a held order-2 block are read: the six
    pages named only there are held, each from the block's tail."""
    core, r = blocks
    a = r.census.memmap
    table, = owned(core, "block-table")
    entries = owned(core, "block-table-entry")
    assert len(entries) == 6 and a.order_of(table) == 2
    held = {x.pfn for x in r.referenced}
    assert table in held
    for pfn in entries:
        assert pfn in held, (pfn, r.references.get(pfn))
        assert {ref.source for ref in r.references[pfn]} == {table}, (pfn, r.references[pfn])
        offsets = [ref.address - a.virt_of_pfn(table) for ref in r.references[pfn]]
        assert all(a.page_size <= offset < 4 * a.page_size for offset in offsets), offsets


def test_a_page_lost_right_after_a_held_buffer_is_never_silently_held(blocks):
    """Buffers of 1, 3 and 4 pages (split blocks, held by their start from a
    kmalloc'd object) each followed by a lost, never-written page of
    refcount 1: what nothing in struct page tells from a run's tail.  After
    the one-page buffer the page is orphaned (a run from the heap takes in
    two pages or more); after the others the run rule takes it, and it is
    in the inferred tier, by that rule -- never among the held."""
    core, r = blocks
    lost = {x["ring"]: x["pfn"] for x in core.manifest["planted_leaks"] if x["ring"].startswith("after-held-")}
    assert set(lost) == {"after-held-1", "after-held-3", "after-held-4"}
    held = {x.pfn for x in r.referenced}
    orphaned = set(r.found.pfn.tolist())
    assert lost["after-held-1"] in orphaned
    for shape, pfn in lost.items():
        assert pfn not in held, (shape, r.references.get(pfn))
        assert pfn in orphaned or r.inferred_rules.get(pfn) == ALLOCATION_RUN, (shape, r.references.get(pfn))


def test_without_the_extent_a_blocks_head_and_what_its_tail_names_are_orphaned(blocks):
    """The fact the extent models, shown the other way: with the tails read
    as pages in transit (the blocks taken out of the census), the head
    known by its last page and the pages only the table's tail names are
    not held."""
    core, r = blocks
    c, a = r.census, r.census.memmap
    keep = (a.heads, a.orders, a.blocks, c.classes.copy())
    try:
        plain = ~np.isin(a.heads, a.blocks)
        tails = a.pages_of(a.blocks)
        tails = tails[~np.isin(tails, a.blocks)]
        a.heads, a.orders, a.blocks = a.heads[plain], a.orders[plain], np.zeros(0, np.int64)
        c.classes[tails] = PageClass.ZERO_REF
        from vmcore_tools.leaks.candidates import candidate_heads
        without = scan_references(c, candidate_heads(c)).references
    finally:
        a.heads, a.orders, a.blocks, c.classes[:] = keep[0], keep[1], keep[2], keep[3]
    assert not set(owned(core, "block-end")) & set(without)
    assert not set(owned(core, "block-table-entry")) & set(without)
