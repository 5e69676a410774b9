"""The pages kvfree_rcu() keeps for reuse.

Fact (5.10+): ``kvfree_rcu()`` records the objects it is to free after a
grace period in pages of pointers (``kvfree_rcu_bulk_data``), and each CPU
keeps a few such pages empty for the next batch: the lock-less list
``krc.bkvcache`` (``nr_bkv_objs`` of them, filled by ``fill_page_cache_func``
from ``__get_free_page()``), linked through an ``llist_node`` at the start
of each page.  The rest of a cached page is what its last use left --
records of objects long freed, or, where the kernel does not zero pages it
hands out, whatever the page held before -- so it names nothing live.  So
does the part of a page in use past its ``nr_records`` records: the pages
filling (``krc.bulk_head[]``, ``bkvhead[]`` before 6.3, chained through
``list``/``next``) and those waiting for a grace period
(``krw_arr[].bulk_head_free[]``, ``bkvhead_free[]``).  (The code moved from
kernel/rcu/tree.c to mm/slab_common.c in 6.13; the per-CPU ``krc`` kept
its name.)
"""

from __future__ import annotations

import drgn
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.percpu import per_cpu

from vmcore_tools.core.features import has_member, has_object
from vmcore_tools.core.walk import bounded, damaged, max_objects


def cached_bulk_pages(prog: drgn.Program) -> list[int]:
    """The direct-map address of each page on every CPU's ``bkvcache``,
    each list walked no further than its ``nr_bkv_objs``."""
    if not has_object(prog, "krc"):
        return []
    out = []
    for cpu in for_each_possible_cpu(prog):
        krc = per_cpu(prog["krc"], cpu)
        node, left = krc.bkvcache.first.value_(), krc.nr_bkv_objs.value_()
        while node and left > 0:
            out.append(node)
            node, left = prog.read_u64(node), left - 1
        if node:
            damaged("kvfree_rcu's page cache (krc.bkvcache)", f"cpu {cpu}: more pages than nr_bkv_objs "
                    f"({krc.nr_bkv_objs.value_()}): walk stopped")
    return out


def bulk_page_tails(prog: drgn.Program, page_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each page in use past its ``nr_records``
    records, on every CPU (each chain bounded by the pages memory holds; a
    record count past the page is damage)."""
    if not has_object(prog, "krc"):
        return []
    data = prog.type("struct kvfree_rcu_bulk_data")
    first = drgn.offsetof(data, "records")
    listed = has_member(prog, "struct kfree_rcu_cpu", "bulk_head")     # 6.3+: list_head chains
    limit, out = max_objects(prog, page_size), []
    for cpu in for_each_possible_cpu(prog):
        krc = per_cpu(prog["krc"], cpu)
        chains = [krc.bulk_head if listed else krc.bkvhead]
        chains += [w.bulk_head_free if listed else w.bkvhead_free for w in krc.krw_arr]
        for chain in chains:
            for head in chain:
                pages = (list_for_each_entry(data, head.address_of_(), "list") if listed
                         else _chained(head))
                for page in bounded(pages, "kvfree_rcu's bulk pages (krc)", limit):
                    n, at = page.nr_records.value_(), page.value_()
                    if first + 8 * n > page_size:
                        damaged("kvfree_rcu's bulk pages (nr_records)", f"{n} records in the page at {at:#x}")
                        continue
                    out.append((at + first + 8 * n, (at & -page_size) + page_size))
    return out


def _chained(page: drgn.Object):
    while page.value_():
        yield page
        page = page.next.read_()
