"""e1000e rx ring: the skbs (and, with jumbo MTU, pages) posted to the device.

Fact: ``netdev_priv`` is ``struct e1000_adapter``; ``rx_ring->buffer_info[count]``
are ``struct e1000_buffer``s.  At MTU 1500 a slot holds an ``skb`` whose head
comes from kmalloc or the per-CPU page_frag cache; with jumbo frames a slot
holds a ``page`` (and in packet-split mode ``ps_pages``); a frame being
assembled hangs off ``rx_ring->rx_skb_top``.
"""

from __future__ import annotations

from collections.abc import Iterator

import drgn
import numpy as np
from drgn.helpers.linux.net import netdev_priv

from vmcore_tools.core.features import has_type
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.net.ring import Ring
from vmcore_tools.net.devices import netdev_label, netdevs_of
from vmcore_tools.core.structs import struct_array
from vmcore_tools.net.skb import skb_pfns


class E1000e:
    name = "e1000e"

    def present(self, prog: drgn.Program) -> bool:
        return has_type(prog, "struct e1000_adapter") and has_type(prog, "struct e1000_buffer")

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        for dev in netdevs_of(prog, self.name):
            adapter = netdev_priv(dev, "struct e1000_adapter")
            rx = adapter.rx_ring
            if rx:
                yield self.read_ring(prog, a, netdev_label(dev), rx)

    def read_ring(self, prog: drgn.Program, a: Memmap, label: str, rx: drgn.Object) -> Ring:
        count = rx.count.value_()
        ring = Ring(self.name, label, 0, "rx", rx.value_(), count)
        ring.indices = {"next_to_use": rx.next_to_use.value_(), "next_to_clean": rx.next_to_clean.value_()}
        if not rx.buffer_info or not count:
            return ring
        slots = struct_array(prog, rx.buffer_info.value_(), "struct e1000_buffer", count,
                             {"skb": "skb", "page": "page"})
        skb_type = prog.type("struct sk_buff *")
        idx, pfns = [], []
        for i in np.nonzero(slots["skb"])[0].tolist():
            for pfn in skb_pfns(prog, a, drgn.Object(prog, skb_type, int(slots["skb"][i]))):
                idx.append(i)
                pfns.append(pfn)
        if "page" in slots:
            for i in np.nonzero(slots["page"])[0].tolist():
                pfn = a.pfn_of_page_ptr(int(slots["page"][i]))
                if pfn >= 0:
                    idx.append(i)
                    pfns.append(pfn)
        ring.slot = np.asarray(idx, np.int64)
        ring.pfn = np.asarray(pfns, np.int64)
        ring.offset = np.zeros(ring.slot.size, np.int64)
        ring.bias = np.full(ring.slot.size, -1, np.int64)
        if rx.type_.type.has_member("rx_skb_top") and rx.rx_skb_top:
            ring.extra_pfns = skb_pfns(prog, a, rx.rx_skb_top)
        return ring
