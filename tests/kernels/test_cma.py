"""DMA buffers from a CMA area (issue 19's production shapes): the built
kernels (CONFIG_CMA, which Debian's amd64 kernels lack) booted with
``cma=32M``; vmct_cma allocates coherent buffers and ``dma_alloc_pages()``
pages from it the way a driver does at probe, keeps two (one of 8 MiB,
longer than the largest buddy block) and drops two.

Ground truth: the module's records, and the area's own bitmap read with
drgn objects (which pages ``cma_alloc()`` handed out)."""

from __future__ import annotations

import numpy as np
import pytest

from sample_cores.scenarios import BUILT
from vmcore_tools import orphans
from vmcore_tools.leaks.candidates import candidate_heads
from vmcore_tools.mm.memmap import max_block_pages
from vmcore_tools.refs.scan import scan_references
from vmcore_tools.refs.references import CMA_RUN

from ..conftest import lines, sample_core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module", params=lines(BUILT, ci=("6.1-page-owner",)))
def cma_core(request):
    core = sample_core("cma", request.param)
    return core, orphans(core.program())


def owned(core, kind: str) -> list[int]:
    return [o["pfn"] for o in core.manifest["owned"] if o["kind"] == kind]


def allocated(prog) -> set[int]:
    """The pages the first CMA area's bitmap marks as handed out."""
    area = prog["cma_areas"][0]
    ranges = area.ranges[:area.nranges.value_()] if area.type_.has_member("ranges") else [area]
    per_bit = 1 << area.order_per_bit.value_()
    out = set()
    for r in ranges:
        base, count = r.base_pfn.value_(), r.count.value_()
        for bit in range(-(-count // per_bit)):
            if r.bitmap[bit // 64].value_() >> (bit % 64) & 1:
                out.update(range(base + bit * per_bit, base + (bit + 1) * per_bit))
    return out


def test_the_buffers_came_from_the_cma_area(cma_core):
    core, r = cma_core
    used = allocated(r.census.prog)
    coherent, pages = owned(core, "cma-coherent"), owned(core, "cma-pages")
    assert len(coherent) == 2048 and len(pages) == 8
    lost = [x["pfn"] for x in core.manifest["planted_leaks"] if x["ring"].startswith("cma-")]
    assert len(lost) == 32
    assert set(coherent) | set(pages) | set(lost) <= used


def test_cma_allocations_are_held_by_their_first_page(cma_core):
    """Held by a pointer to its first page (the CPU address of the coherent
    buffer, the struct page of dma_alloc_pages()), the rest of each
    allocation is held with it -- 2048 pages, twice the largest buddy block
    -- by the CMA owner.  (On 6.1 the pages after the first are also linked
    to each other through page->lru, what is left of alloc_contig_range()'s
    local list, which the memmap links follow first; the owner is tried
    without them.)"""
    core, r = cma_core
    orphaned = {o.pfn for o in r.orphans}
    c = r.census
    heads = candidate_heads(c)
    largest = max_block_pages(c.prog)
    by_owner = scan_references(c, heads, without=frozenset({"memmap links"})).references
    neither = scan_references(c, heads, without=frozenset({"memmap links", "CMA allocations"})).references
    for kind in ("cma-coherent", "cma-pages"):
        pfns = owned(core, kind)
        assert not set(pfns) & orphaned, kind
        assert all(p in r.references for p in pfns), kind
        assert all(any(ref.region == "run" and "CMA allocation" in ref.where for ref in by_owner[p])
                   for p in pfns[1:]), kind
    # without either, what a buddy-bounded run rule can take in is all that is held
    coherent = owned(core, "cma-coherent")
    assert len(set(coherent) - set(neither)) >= len(coherent) - largest


def test_lost_cma_buffers_are_orphaned_unless_right_after_a_held_one(cma_core):
    """A lost allocation is orphaned, except where the bitmap runs on from a
    held allocation into it without a gap: nothing in the bitmap or the
    struct pages tells where one allocation ends there (page_owner, which
    would, is off)."""
    core, r = cma_core
    used = allocated(r.census.prog)
    kept = set(owned(core, "cma-coherent")) | set(owned(core, "cma-pages"))

    def after_a_held_one(pfn: int) -> bool:
        while pfn - 1 in used:
            pfn -= 1
            if pfn in kept:
                return True
        return False

    # less a stale slab word's page, which nothing in the dump can tell (conftest)
    planted = set(core.expected_orphans()) | set(core.inferred_leaks())
    hidden = {p for p in planted if after_a_held_one(p)}
    assert {o.pfn for o in r.orphans} == planted - hidden
    assert len(hidden) <= 16, "at most one lost buffer can lie right after a held one"
    # taken for the held one's tail by inference, and said so: in the inferred tier
    assert {p: r.inferred_rules.get(p) for p in hidden} == {p: CMA_RUN for p in hidden}
    assert np.all([x["refcount"] == 1 for x in core.manifest["planted_leaks"] if x["ring"].startswith("cma-")])
