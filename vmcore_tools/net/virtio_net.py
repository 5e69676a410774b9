"""virtio_net receive queues: the buffers posted to the device.

Fact: ``netdev_priv`` is ``struct virtnet_info``, whose ``rq[i].vq`` is the
``vq`` member of a ``struct vring_virtqueue``.  In a split ring, a posted
buffer chain starts at a head ``i`` with ``split.desc_state[i].data != NULL``
and follows ``desc[i].next`` while ``VRING_DESC_F_NEXT`` is set; ``desc.addr``
is a guest-physical address when there is no vIOMMU.  In mergeable mode
(QEMU's default) buffers are slices of ``rq->alloc_frag``, an order-3
compound page; in big mode order-0 pages are chained through
``page->private`` from ``rq->pages``.
"""

from __future__ import annotations

from collections.abc import Iterator

import drgn
import numpy as np
from drgn.helpers.linux.net import netdev_priv

from vmcore_tools.core.features import has_member, has_type
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.core.walk import bounded, max_pages
from vmcore_tools.kernel.virtqueues import VRING_DESC_F_INDIRECT, is_packed, posted_chains, ring_size
from vmcore_tools.net.ring import Ring
from vmcore_tools.net.devices import netdev_label, netdevs_of



class VirtioNet:
    name = "virtio_net"

    def present(self, prog: drgn.Program) -> bool:
        return has_type(prog, "struct virtnet_info") and has_type(prog, "struct vring_virtqueue")

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        for dev in netdevs_of(prog, self.name):
            vi = netdev_priv(dev, "struct virtnet_info")
            for q in range(vi.max_queue_pairs.value_()):
                rq = vi.rq[q]
                yield self.read_queue(prog, a, netdev_label(dev), q, rq)

    def read_queue(self, prog: drgn.Program, a: Memmap, label: str, q: int,
                   rq: drgn.Object) -> Ring:
        vvq = drgn.container_of(rq.vq, "struct vring_virtqueue", "vq")
        ring = Ring(self.name, label, q, "rx", vvq.value_())
        ring.indices = {"num_free": rq.vq.num_free.value_(),
                        "last_used_idx": vvq.last_used_idx.value_()}
        if is_packed(vvq):
            ring.problems.append("packed virtqueue: posted buffers not read")
        else:
            self._split_slots(prog, a, vvq.split, ring)
        extra = []
        # 7.x receives into page_pool pages (rq->page_pool, the page_pool
        # walker's): no alloc_frag there
        if has_member(prog, "struct receive_queue", "alloc_frag") and rq.alloc_frag.page:
            extra.append(a.pfn_of_page_ptr(rq.alloc_frag.page.value_()))
        for page in bounded(_private_chain(prog, rq.pages), "a virtio_net rx queue's spare pages (rq->pages)",
                            max_pages(prog)):     # big mode: spare pages chained by page->private
            extra.append(a.pfn_of_page_ptr(page))
        ring.extra_pfns = [p for p in extra if p >= 0]
        return ring

    def _split_slots(self, prog: drgn.Program, a: Memmap, split: drgn.Object, ring: Ring) -> None:
        ring.count = ring_size(drgn.container_of(split.address_of_(), "struct vring_virtqueue", "split"), False)
        desc, _, chains = posted_chains(prog, split)
        slots, pfns, offsets = [], [], []
        mask = (1 << a.page_shift) - 1
        for head, chain in chains:
            for i in chain:
                if int(desc["flags"][i]) & VRING_DESC_F_INDIRECT:
                    ring.problems.append(f"slot {head}: indirect descriptors not followed")
                    break
                addr = int(desc["addr"][i])
                pfn = addr >> a.page_shift
                if 0 <= pfn < a.nr:
                    slots.append(head)
                    pfns.append(pfn)
                    offsets.append(addr & mask)
        ring.slot = np.asarray(slots, np.int64)
        ring.pfn = np.asarray(pfns, np.int64)
        ring.offset = np.asarray(offsets, np.int64)
        ring.bias = np.full(ring.slot.size, -1, np.int64)
        ring.indices["populated_heads"] = len(chains)


def _private_chain(prog: drgn.Program, first: drgn.Object) -> Iterator[int]:
    """The ``struct page`` addresses of a chain through ``page->private``
    from ``first`` (virtio_net's big-mode spare pages)."""
    page = first.value_()
    while page:
        yield page
        page = drgn.Object(prog, "struct page *", page).private.value_()
