"""Multi-page allocations held by one pointer: ``alloc_pages_exact()`` runs,
``split_page()`` blocks, boot-time tables cut in parts, and CMA allocations.
The registry's owners "allocation runs" and "CMA allocations"
(``registry.OWNERS``): a referenced page takes in the unreferenced order-0
pages that its allocation made with it.  They ask the scan only through
its API (``engine.ScanEngine``: ``references``, ``is_single``,
``candidate_of``, ``hold``).
"""

from __future__ import annotations

import numpy as np

from vmcore_tools.mm.cma import cma_ranges
from vmcore_tools.mm.page_owner import PageOwners
from vmcore_tools.refs.engine import ScanEngine
from vmcore_tools.refs.references import ALLOCATION_RUN, CMA_RUN, STRUCT_PAGE, TABLE_ENTRY, Reference

#: Unreferenced pages an ``alloc_pages_exact()`` run held from outside the
#: kernel image must take in (see ``extend_runs``).
HEAP_RUN_MIN = 2


def extend_runs(ctx: ScanEngine) -> None:
    """``alloc_pages_exact()`` leaves a run of order-0 pages with refcount
    1 of which only the first is pointed to: a page referenced by its
    start address extends to the order-0, refcount-1 candidates that can
    share its buddy block.

    Facts the rule rests on:

    * ``alloc_pages_exact()`` returns the kernel virtual address of the
      run's first byte and ``free_pages_exact()`` takes it back, so the
      owner holds that address (direct-map, or physical for DMA) -- at
      page offset 0 -- never a ``struct page *``.  A page referenced only
      through its ``struct page`` or at an inner offset starts no run,
      or the leaked page that happens to follow it would be taken for
      its tail.
    * The run is the front of one buddy block of order ``get_order(size)``
      (``make_alloc_exact()`` frees the rest), and a block of order n
      starts at a PFN aligned to 2^n below ``MAX_ORDER``: a run starting
      at PFN h is at most ``h & -h`` pages long.
    * Inner pages of a run may be referenced themselves (hash tables
      from ``alloc_large_system_hash()``: chains point back at their
      buckets); such a page neither ends the run nor starts a new one.
      A page held by its ``struct page`` does end it: the owner of an
      ``alloc_pages_exact()`` buffer keeps its address only, so a page
      named by its ``struct page`` (on a ``page->lru`` list, in a
      ``page->private`` chain, in an array of page pointers) is an
      allocation of its own, and the unreferenced page after it is not
      that allocation's tail.  So does a page named by a table entry (a
      physical address with flag bits, in a page of such entries or an
      IOMMU table): a table's levels are pages allocated one at a time
      (``pte_alloc_one()``, ``iommu_alloc_pages_node()``), and a buffer a
      table maps is mapped whole, every page of it named, so the
      unreferenced page after a named one is no tail of a run that holds
      the named page.
      A page whose first byte only other slab objects hold ends a run
      held from the heap: ``kfree()``, ``free_pages()`` and
      ``page_frag_free()`` take an allocation's start, so an object
      holding a page's first byte holds an allocation of its own (an
      skb whose head is a whole page), while a buffer's owner that keeps
      pointers to parts of its buffer keeps them in its own object (a
      ``struct vring``'s ``avail`` and ``used``).  Two leaked pages after
      a row of such pages, each an skb's head, were taken for one
      buffer's tail.  A page an allocated skb's ``head`` points to the
      start of is an allocation of its own (``skb_free_head()`` gives it
      back alone: ``ScanEngine.is_skb_head``): it starts no run either, so
      the leaked pages the allocator handed out right after an skb's head
      page are not taken for its tail.
      A page whose start the kernel image's data holds does: boot-time
      tables lie back to back (``tcp_hashinfo.ehash`` right after the
      block of ``ip_idents``), and the alignment bound alone would let
      one table's run take in the next.  A global pointing into a table
      at a page boundary (``ip_tstamps``, ``tcp_hashinfo.bhash2``,
      ``udp_table.hash2`` and, from 6.13, ``udp_table.hash4``: one
      ``alloc_large_system_hash()`` block cut in three) then splits that
      table's run, all parts held; a later part -- one that starts
      where the run of the part before it stopped -- stays within the
      block of the first (its own alignment is smaller).  An image-held
      table further on is a block of its own, whatever the alignment
      bound of an earlier one allowed.
    * ``split_page()`` makes every page of an ``alloc_pages(order)``
      block an order-0 page of its own, and its owner may keep the first
      ``struct page *`` and index from it (``page + i``): the vDSO data
      store, ``vdso_data_pages``, a global from 7.3 (7.2 keeps only
      direct-map pointers to some of its pages, the first among them).
      A ``struct page`` pointer from the kernel image's data to a
      block-aligned page starts a run like a start address does.  Such
      a block's first page may be mapped to user space (the vDSO's are,
      into every process) and so have more references than one: a run
      held from the image starts at any order-0 page.

    * A run's pages come out of ``split_page()`` with no flag set and are
      nothing but the buffer: a page whose flags or ``mapping`` say it was
      page cache or anonymous memory since (``pageflags.were_user_or_cache``)
      is no part of the run, and ends it -- the page a leaked
      ``get_page()`` kept after its owner truncated the file, say, that the
      page allocator had handed out right after a buffer's block.

    What ``struct page`` cannot tell: a one-page allocation followed by
    a leaked, never-used page looks exactly like a two-page run whose
    second page nobody points to.  With page_owner records
    (``page_owner=on``) the question has an exact answer, used wherever
    the start's record names its stack (``run_by_page_owner``).
    Otherwise: where the start is held from the
    kernel image's data (boot-time tables: ``alloc_large_system_hash()``,
    ``vmcoreinfo_note``) the kernel owns the whole block, and one
    unreferenced page is enough to extend the run.  A start held from
    anywhere else (a heap object, a stack, a vmalloc area) must take in
    at least ``HEAP_RUN_MIN`` unreferenced pages: a single unreferenced
    page after it is reported as orphaned.  That trades a two-page
    ``alloc_pages_exact()`` buffer of a driver with an unreferenced
    second page (rare: drivers use it for multi-page buffers such as
    vrings and sound buffers) for recall of never-used leaked pages."""
    a, refs = ctx.memmap, ctx.references
    single = ctx.is_single
    mask = (1 << a.page_shift) - 1
    largest = ctx.max_block
    owners = ctx.page_owners
    starts_of = {h: starts for h in refs
                 if (starts := [r for r in refs[h] if r.kind in ("direct map", "physical") and r.value & mask == 0])}
    image_held = {h for h, starts in starts_of.items() if any(r.region == "data" for r in starts)}
    # a page someone holds by its struct page, or names in a table entry, is an allocation of its own
    page_held = {h for h, found in refs.items() if any(r.kind == STRUCT_PAGE for r in found)}
    own = page_held | {h for h, found in refs.items() if any(r.kind == TABLE_ENTRY for r in found)}
    # a page an skb heads is given back alone (ScanEngine.is_skb_head)
    skb_held = {h for h, starts in starts_of.items() if any(ctx.is_skb_head(r) for r in starts)}
    own |= skb_held
    # split_page() blocks whose first struct page the image holds
    split = {h for h in page_held if any(r.kind == STRUCT_PAGE and r.region == "data" for r in refs[h])}
    # A run starts at a single page (alloc_pages_exact() gives refcount
    # 1), or, held from the image, at any order-0 page: the first page
    # of a split block may be mapped to user space (the vDSO data pages
    # are), which raises its refcount
    by_image = np.array(sorted(image_held | split), np.int64)
    heads = {h for h in starts_of if single(h)} | set(by_image[a.order_of(by_image) == 0].tolist())
    other_use = pages_of_other_use(ctx, np.array(sorted(heads), np.int64), largest)
    heads -= other_use | skb_held
    split &= heads
    # the slab objects that hold each page's first byte
    holders = {h: {r.holder for r in starts} if all(r.holder for r in starts) else set()
               for h, starts in starts_of.items()}
    outer_end, outer_split, outer_next = 0, False, -1
    for head in sorted(heads):
        held_by_image = head in image_held or head in split
        end = head + min(head & -head or largest, largest)
        in_split = head in split
        if held_by_image:
            # a later part of an image-held table or split block starts
            # where the run of the part before it stopped
            if head == outer_next and head < outer_end:
                end = max(end, outer_end)
                in_split |= outer_split
            outer_end, outer_split = end, in_split
        mine = holders.get(head, set())
        span = next((n for n in range(head + 1, end)
                     if not single(n) or n in image_held or n in own or n in other_use
                     or not held_by_image and holders.get(n) and not holders[n] & mine),
                    end)
        if held_by_image:
            outer_next = span
        by_owner = run_by_page_owner(owners, head, span, in_split) if owners else None
        if by_owner is not None:
            tail, how = [n for n in by_owner if n not in refs], " (page_owner: one allocation)"
        else:
            tail, how = [n for n in range(head + 1, span) if n not in refs], ""
            if len(tail) < (1 if held_by_image else HEAP_RUN_MIN):
                continue
        kind = "a split_page() block" if in_split else "an alloc_pages_exact() run"
        rule = "" if by_owner is not None else ALLOCATION_RUN
        for nxt in tail:
            ctx.hold(Reference(nxt, "allocation run", a.virt_of_pfn(head), "run",
                               f"in {kind} starting at pfn {head}{how}", rule=rule))


def pages_of_other_use(ctx: ScanEngine, heads: np.ndarray, largest: int) -> set[int]:
    """The single candidates a run from ``heads`` could take in (within
    ``largest`` pages after one) whose flags say they were page cache or
    anonymous memory (``ScanEngine.were_user_or_cache``)."""
    singles = ctx.single_pfns()
    if not heads.size or not singles.size:
        return set()
    before = np.searchsorted(heads, singles, side="right") - 1
    near = singles[(before >= 0) & (singles - heads[np.maximum(before, 0)] < largest)]
    return set(near[ctx.were_user_or_cache(near)].tolist()) if near.size else set()


def run_by_page_owner(owners: PageOwners, head: int, span: int, split_block: bool = False) -> list[int] | None:
    """The pages after ``head``, below ``span``, that one
    ``alloc_pages_exact()`` call allocated with it: its stack goes through
    ``alloc_pages_exact()``, and their records were written by that one
    allocation (``PageOwners.same_allocation``).  An order-1 block split by
    anyone else -- one page kept, one lost -- has such records too but
    another stack, and makes no run, unless the head is held the way a
    ``split_page()`` block is (``split_block``: its first ``struct page``
    from the image), whose owner keeps every page.  None when the head's
    record cannot say: none, or a special handle (allocated before
    page_owner was set up, such as the boot-time hash tables)."""
    recs = owners.lookup(np.arange(head, span, dtype=np.int64))
    first = recs.get(head)
    if first is None or not first.allocated or first.handle in owners.special:
        return None
    if not split_block and not owners.exact_run(first):
        return []
    run, prev = [], first
    for pfn in range(head + 1, span):
        rec = recs.get(pfn)
        if not owners.same_allocation(first, prev, rec):
            break
        run.append(pfn)
        prev = rec
    return run


def extend_cma_runs(ctx: ScanEngine) -> None:
    """A CMA allocation is held by its first page: the unreferenced pages of
    an allocated span of a CMA area after a referenced page are held with it.

    Facts: ``cma_alloc()`` hands an allocation out as order-0 pages of
    refcount 1 and records it only in its area's bitmap (``cma.py``); the
    caller keeps the first page -- its ``struct page`` (``cma_alloc()``,
    ``dma_alloc_pages()``) or its address (``dma_alloc_coherent()``) -- and
    gives the whole allocation back by that page and a count
    (``cma_release()``, ``dma_free_*()``).  Unlike an
    ``alloc_pages_exact()`` run, it is not bounded by a buddy block: a CMA
    allocation may be any number of pages.  Allocations lie back to back
    in the bitmap, so a span of set bits may hold several: its pages before
    the first referenced one belong to no held allocation and stay
    candidates.  A leaked allocation right after a held one is taken for
    its tail -- what the bitmap cannot tell -- unless page_owner records
    say where one allocation ends: the next page's stack differs (each
    chunk ``alloc_contig_range()`` takes from the buddy allocator gets a
    record of its own, with its own time, but the same stack; two calls
    from one call site stay together)."""
    refs = ctx.references
    held = np.fromiter(refs, np.int64, len(refs))
    owners = ctx.page_owners
    for r in cma_ranges(ctx.prog):
        pfns = r.allocated
        if not pfns.size:
            continue
        referenced = np.isin(pfns, held)
        cut = np.diff(pfns, prepend=pfns[0] - 2) != 1
        if owners:
            recs = owners.lookup(pfns)
            for i in np.flatnonzero(~cut).tolist():
                prev, nxt = recs.get(int(pfns[i - 1])), recs.get(int(pfns[i]))
                if prev is not None and nxt is not None and prev.handle != nxt.handle:
                    cut[i] = True
        span = np.cumsum(cut)       # span (one allocation or several back to back) of each page
        starts = np.flatnonzero(np.diff(span, prepend=-1))
        # the last referenced page at or before each page, within its span
        last = np.maximum.accumulate(np.where(referenced, np.arange(pfns.size), -1))
        inside = (last >= 0) & (last >= starts[span - 1])
        take = np.flatnonzero(inside & ~referenced & (ctx.candidate_of(pfns) == pfns))
        for pfn, by in zip(pfns[take].tolist(), pfns[last[take]].tolist()):
            ctx.hold(Reference(pfn, "allocation run", ctx.memmap.virt_of_pfn(by), "run",
                               f"in a CMA allocation of area {r.name or '?'} held from pfn {by}", rule=CMA_RUN))
