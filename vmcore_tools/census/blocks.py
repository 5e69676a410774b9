"""Multi-page blocks allocated without ``__GFP_COMP``: one allocation that
``struct page`` does not mark as one.

``alloc_pages(gfp, order)`` without ``__GFP_COMP`` -- ``__get_free_pages()``,
``dma_direct_alloc()`` (DMA-coherent rings), ``blk_mq_alloc_rqs()``, an HBA's
or an RDMA device's queues -- gives the first page a reference
(``set_page_refcounted()`` in ``prep_new_page()``) and leaves the others as
they were on the free list: refcount 0, no compound head, no flag.  Their
owner keeps the block's address, or any address inside it (a stack's top,
an entry of a table), and frees it by the first page and the order.

So the census would call the first page a one-page allocation and the
others pages in transit (``zero_ref``), and the scan would read none of
the tail's words and hold nothing by a pointer into it.  ``blocks`` gives
each such block its extent (``Memmap.add_blocks``), so that the block is
one allocation everywhere: a pointer into any page holds it, every page
of a held block is read, the census counts the tails with the head's
class, and ``page PFN`` on a tail names the block.

    >>> from vmcore_tools.census.blocks import noncompound_blocks
    >>> heads, orders = noncompound_blocks(census.memmap, census.classes, max_block_pages(prog))
"""

from __future__ import annotations

import numpy as np

from vmcore_tools.census.classes import PageClass, pfns_in
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.mm.page_owner import PageOwners


def noncompound_blocks(m: Memmap, classes: np.ndarray, largest: int,
                       owners: PageOwners | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The blocks allocated without ``__GFP_COMP``: head PFNs and orders.

    Facts the rule rests on:

    * A page of refcount 0 that no free list, per-CPU list or compound
      page holds (class ``zero_ref``) is a page being freed or allocated
      at the moment of the dump -- or a tail page of such a block.  The
      pages of a free buddy block after its first are on no list either,
      but the free-list walk claims them whole (class ``free``).
    * A buddy block of order n starts at a PFN that is a multiple of
      2^n, and is at most ``largest`` pages (``MAX_PAGE_ORDER``).
    * So an unattributed order-0 page of refcount 1 or more (``zero_ref``
      takes the refcount-0 ones) followed by ``zero_ref`` pages heads a
      block of the largest power of two those pages fill within its own
      alignment.  A page in transit right after a one-page allocation
      makes it look like an order-1 block -- one allocation of two pages
      instead of one page: a held page holds the other, a leaked one
      is reported with it.
    * With page_owner records (``page_owner=on``) the head's record says
      the order it was allocated with: no more than that (none where it
      says 0)."""
    none = np.zeros(0, np.int64), np.zeros(0, np.uint8)
    zero = pfns_in(classes, PageClass.ZERO_REF)
    zero = zero[(m.heads_of(zero) == zero) & (m.order_of(zero) == 0)]     # not in a compound page
    if not zero.size:
        return none
    first = np.flatnonzero(np.diff(zero, prepend=-2) != 1)
    starts = zero[first]
    lengths = np.diff(np.append(first, zero.size))
    heads = starts - 1
    ok = heads >= 0
    heads, lengths = heads[ok], lengths[ok]
    ok = ((classes[heads] == PageClass.UNATTRIBUTED) & (m.heads_of(heads) == heads)
          & (m.order_of(heads) == 0))
    heads, lengths = heads[ok], lengths[ok]
    align = np.where(heads > 0, heads & -heads, largest)
    span = np.minimum(np.minimum(lengths + 1, align), largest)
    orders = np.floor(np.log2(np.maximum(span, 1))).astype(np.uint8)
    if owners is not None:
        recs = owners.lookup(heads)
        for i, head in enumerate(heads.tolist()):
            rec = recs.get(head)
            if rec is not None and rec.allocated and rec.handle not in owners.special:
                orders[i] = min(rec.order, orders[i])
    keep = orders > 0
    return heads[keep], orders[keep]


def claim_blocks(m: Memmap, classes: np.ndarray, largest: int, owners: PageOwners | None = None) -> int:
    """Find the blocks (``noncompound_blocks``), give them their extent in
    ``m`` and their tail pages their head's class; returns how many."""
    heads, orders = noncompound_blocks(m, classes, largest, owners)
    if heads.size:
        m.add_blocks(heads, orders)
        tails = m.pages_of(heads)
        classes[tails] = classes[m.heads_of(tails)]
    return int(heads.size)
