"""page_pool: every registered pool and how many of its pages are in flight.

Fact: from 6.8 every pool is in the ``page_pools`` xarray
(net/core/page_pool_user.c).  Pages in flight are ``pages_state_hold_cnt -
pages_state_release_cnt``; a pool whose ``user.detach_time`` is set (its
driver let go of it) but still has pages in flight is leaking them.  The
pages themselves are recognised by ``pp_magic`` in the census
(``classify.rule_page_pool``); this walker reports the pools.
"""

from __future__ import annotations

from collections.abc import Iterator

import drgn
from drgn.helpers.linux.mm import pfn_to_page
from drgn.helpers.linux.xarray import xa_for_each

from vmcore_tools.core.walk import bounded, damaged, max_entries
from vmcore_tools.core.features import has_object
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.net.ring import Ring
from vmcore_tools.net.devices import netdev_label


class PagePools:
    name = "page_pool"

    def present(self, prog: drgn.Program) -> bool:
        return has_object(prog, "page_pools")

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        for pool in pools(prog):
            ring = Ring(self.name, pool_owner(pool) or "(no netdev)", pool.user.id.value_(), "page_pool",
                        pool.value_())
            hold = pool.pages_state_hold_cnt.value_()
            release = pool.pages_state_release_cnt.counter.value_() if hasattr(
                pool.pages_state_release_cnt, "counter") else pool.pages_state_release_cnt.value_()
            ring.stats = {"hold": hold, "release": release, "inflight": (hold - release) & 0xFFFFFFFF,
                          "detach_time": pool.user.detach_time.value_()}
            if ring.stats["detach_time"] and ring.stats["inflight"]:
                ring.problems.append(f"detached pool still has {ring.stats['inflight']} pages in flight")
            yield ring


def pools(prog: drgn.Program) -> Iterator[drgn.Object]:
    """Every registered pool (6.8+: the ``page_pools`` xarray)."""
    for _, entry in bounded(xa_for_each(prog["page_pools"].address_of_()), "the page_pool registry (page_pools)",
                            max_entries(prog, "struct page_pool")):
        yield drgn.cast("struct page_pool *", entry)


def dma_index_nodes(prog: drgn.Program) -> set[int]:
    """The addresses of the xarray nodes of every pool's DMA index.

    Fact: from 6.15 a pool that DMA-maps its pages (``PP_FLAG_DMA_MAP``)
    stores each page it maps in its ``dma_mapped`` xarray, the index in
    ``pp_magic``'s DMA index bits, so that a pool destroyed while pages are
    in flight can unmap them (``page_pool_scrub()``).  The xarray takes no
    reference: a page taken from the pool and never given back stays in it,
    still mapped, held by nobody.  Its entries are the pages'
    ``netmem_ref`` (the struct page address); its internal nodes
    (``struct xa_node``, slab objects) hold nothing else."""
    out: set[int] = set()
    if not has_object(prog, "page_pools") or not prog.type("struct page_pool").has_member("dma_mapped"):
        return out
    for pool in pools(prog):
        todo = [pool.dma_mapped.xa_head.value_()]
        limit = max_entries(prog, "struct xa_node")
        seen: set[int] = set()
        while todo:
            entry = todo.pop()
            if entry & 3 != 2 or entry < 4096:      # not an internal node entry (xa_is_node())
                continue
            if entry in seen or len(seen) >= limit:
                damaged("a page_pool's DMA index (dma_mapped)", f"node {entry - 2:#x} met twice or past "
                        f"{limit} nodes: walk stopped")
                break
            seen.add(entry)
            node = drgn.Object(prog, "struct xa_node", address=entry - 2)
            out.add(entry - 2)
            if node.shift.value_():
                todo.extend(s.value_() for s in node.slots)
    return out


def pool_owner(pool: drgn.Object) -> str:
    """The net device a pool serves (6.8+: ``slow.netdev`` or ``user``'s),
    else the device it DMA-maps for (``p.dev``) and that device's driver;
    "" where it names neither."""
    t = pool.type_.type
    netdev = pool.slow.netdev if t.has_member("slow") else pool.user.netdev if t.has_member("user") else None
    if netdev:
        return netdev_label(netdev)
    dev = pool.p.dev
    if not dev:
        return ""
    driver = f" ({dev.driver.name.string_().decode()})" if dev.driver else ""
    return f"device {dev.kobj.name.string_().decode()}{driver}"


def page_pool_of(page: drgn.Object) -> str:
    """The pool a page_pool page came from (``page->pp``, 5.14+), and whom
    it serves."""
    if not page.type_.type.has_member("pp"):
        return "a page_pool (its pool is not recorded in struct page before 5.14)"
    pool = page.pp
    owner = pool_owner(pool)
    return f"page_pool {pool.value_():#x}" + (f" of {owner}" if owner else "")


def pool_owners_of(prog: drgn.Program, pfns: list[int]) -> dict[int, str]:
    """For each of ``pfns`` (page_pool pages, 5.14+), whom its pool serves
    (``pool_owner``), a pool read once however many of its pages are
    asked; {} before 5.14, whose struct page names no pool."""
    if not prog.type("struct page").has_member("pp"):
        return {}
    owners: dict[int, str] = {}
    out = {}
    for pfn in pfns:
        pool = pfn_to_page(prog, pfn).pp
        addr = pool.value_()
        if addr not in owners:
            try:
                owners[addr] = pool_owner(pool)
            except drgn.FaultError:     # a pointer that is no pool's (an unreadable dump page)
                owners[addr] = ""
        out[pfn] = owners[addr]
    return out
