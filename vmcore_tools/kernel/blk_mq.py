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

Fact: a request holds something only while it is in use: allocated with
its tag, ``ref`` is set to 1 (``blk_mq_rq_ctx_init()``), and
``blk_mq_free_request()`` gives it back when ``ref`` drops to 0.  An idle
request (and its driver data: virtio-blk's scatterlist, say) keeps what
its last I/O wrote into it, ``struct page`` pointers of pages long since
freed and used again by others.  The pages an I/O in flight works on are
held by its bios (slab objects) as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import drgn
import numpy as np
from drgn import offsetof, sizeof
from drgn.helpers.linux.block import for_each_disk
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.mm import page_to_pfn
from drgn.helpers.linux.xarray import xa_for_each

from vmcore_tools.core.walk import bounded, damaged, max_entries, max_pages, xa_index
from vmcore_tools.mm.memmap import max_buddy_order
from vmcore_tools.core.arrays import unique


@dataclass
class RequestBlocks:
    """Every page of every request block, and its requests: in use, and
    idle (whatever an idle one names is stale)."""

    pfns: np.ndarray                    # sorted
    in_use: list[tuple[int, int]]       # [start, end): a request and its driver data
    idle: list[tuple[int, int]]


def request_blocks(prog: drgn.Program) -> RequestBlocks:
    """The request blocks of every disk's hardware queues (their ``tags``
    and ``sched_tags``), and their requests, in use (``ref`` not 0) or
    idle."""
    seen: set[int] = set()
    pfns: list[int] = []
    in_use: list[tuple[int, int]] = []
    idle: list[tuple[int, int]] = []
    request = prog.type("struct request")
    ref_at = offsetof(request, "ref")
    max_order = max_buddy_order(prog)
    max_rqs = max_entries(prog, "struct request")
    for disk in bounded(for_each_disk(prog), "the disks (block_class)", max_entries(prog, "struct gendisk")):
        for hctx in hw_queues(disk.queue):
            size = sizeof(request) + hctx.queue.tag_set.cmd_size.value_()
            for tags in (hctx.tags, hctx.sched_tags):
                if not tags or tags.value_() in seen:
                    continue
                seen.add(tags.value_())
                pages = list_for_each_entry("struct page", tags.page_list.address_of_(), "lru")
                for page in bounded(pages, "blk-mq request pages (tags->page_list)", max_pages(prog)):
                    first, order = page_to_pfn(page).value_(), page.private.value_()
                    if order > max_order:
                        damaged("blk-mq request pages (tags->page_list)",
                                f"the block at pfn {first} has order {order}, above the largest ({max_order})")
                        continue
                    pfns.extend(range(first, first + (1 << order)))
                n = tags.nr_tags.value_()
                if not n or not tags.static_rqs:
                    continue
                if n > max_rqs:
                    damaged("blk-mq tags (nr_tags)", f"{n} tags at {tags.value_():#x}, more requests than memory "
                            f"holds ({max_rqs}): not read")
                    continue
                rqs = np.frombuffer(prog.read(tags.static_rqs.value_(), 8 * n), "<u8")
                for rq in rqs[rqs != 0].tolist():
                    (in_use if prog.read_u32(rq + ref_at) else idle).append((rq, rq + size))
    return RequestBlocks(unique(np.array(pfns, np.int64)), in_use, idle)


def hw_queues(q: drgn.Object) -> list[drgn.Object]:
    """A request queue's hardware contexts: the ``hctx_table`` xarray
    (5.19+) or the ``queue_hw_ctx`` array; none for a queue without blk-mq."""
    if not q:
        return []
    if q.type_.type.has_member("hctx_table"):
        entries = bounded(xa_for_each(q.hctx_table.address_of_()), "a queue's hardware contexts (hctx_table)",
                          max_entries(q.prog_, "struct blk_mq_hw_ctx"), key=xa_index)
        return [drgn.cast("struct blk_mq_hw_ctx *", e) for _, e in entries]
    if not q.queue_hw_ctx:
        return []
    return [q.queue_hw_ctx[i] for i in range(q.nr_hw_queues.value_())]
