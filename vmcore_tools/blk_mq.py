"""blk-mq's request pages: where every block device keeps its requests.

Fact: ``blk_mq_alloc_rqs()`` takes the requests of a tag set (and of each
I/O scheduler's tags) as blocks of up to order 4 from the page allocator,
without ``__GFP_COMP``, records the order in the first page's ``private``
and lists that page on ``tags->page_list`` through ``page->lru``; it cuts
the blocks into ``struct request`` plus the driver's per-request data, and
``tags->static_rqs[]`` points at each.  These pages hold CPU-side
structures, never a device's descriptor ring, and a request packs small
fields side by side (``stats_sectors``, ``nr_phys_segments``, ...) that can
read as a 64-byte aligned physical address.
"""

from __future__ import annotations

import drgn
import numpy as np
from drgn.helpers.linux.block import for_each_disk
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.mm import page_to_pfn
from drgn.helpers.linux.xarray import xa_for_each


def request_pages(prog: drgn.Program) -> np.ndarray:
    """Every page of every request block of every disk's hardware queues
    (their ``tags`` and ``sched_tags``), sorted."""
    seen: set[int] = set()
    pfns: list[int] = []
    for disk in for_each_disk(prog):
        for hctx in hw_queues(disk.queue):
            for tags in (hctx.tags, hctx.sched_tags):
                if not tags or tags.value_() in seen:
                    continue
                seen.add(tags.value_())
                for page in list_for_each_entry("struct page", tags.page_list.address_of_(), "lru"):
                    first = page_to_pfn(page).value_()
                    pfns.extend(range(first, first + (1 << page.private.value_())))
    return np.unique(np.array(pfns, np.int64))


def hw_queues(q: drgn.Object) -> list[drgn.Object]:
    """A request queue's hardware contexts: the ``hctx_table`` xarray
    (5.19+) or the ``queue_hw_ctx`` array; none for a queue without blk-mq."""
    if not q:
        return []
    if q.type_.type.has_member("hctx_table"):
        return [drgn.cast("struct blk_mq_hw_ctx *", e) for _, e in xa_for_each(q.hctx_table.address_of_())]
    if not q.queue_hw_ctx:
        return []
    return [q.queue_hw_ctx[i] for i in range(q.nr_hw_queues.value_())]
