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
from drgn.helpers.linux.xarray import xa_for_each

from ..features import has_object
from ..pages import Memmap
from . import Ring
from .common import netdev_label


class PagePools:
    name = "page_pool"

    def present(self, prog: drgn.Program) -> bool:
        return has_object(prog, "page_pools")

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        for index, entry in xa_for_each(prog["page_pools"].address_of_()):
            pool = drgn.cast("struct page_pool *", entry)
            netdev = pool.slow.netdev if pool.type_.type.has_member("slow") else pool.user.netdev
            ring = Ring(self.name, netdev_label(netdev) if netdev else "(no netdev)", index,
                        "page_pool", pool.value_())
            hold = pool.pages_state_hold_cnt.value_()
            release = pool.pages_state_release_cnt.counter.value_() if hasattr(
                pool.pages_state_release_cnt, "counter") else pool.pages_state_release_cnt.value_()
            ring.stats = {"hold": hold, "release": release, "inflight": (hold - release) & 0xFFFFFFFF,
                          "detach_time": pool.user.detach_time.value_()}
            if ring.stats["detach_time"] and ring.stats["inflight"]:
                ring.problems.append(f"detached pool still has {ring.stats['inflight']} pages in flight")
            yield ring
