"""Intel rx rings with Duyck-style page recycling: i40e, ice, iavf, ixgbe,
ixgbevf, igb, igc -- one implementation for the whole family.

Fact: every one of these drivers keeps, per rx ring, an array of ``count``
slots ``{dma, page, page_offset, pagecnt_bias}`` (``i40e_rx_buffer``,
``ice_rx_buf``, ``igb_rx_buffer``, ...).  A populated slot's page carries
``pagecnt_bias`` references that belong to the ring; ``page_count -
pagecnt_bias`` is what the stack still holds.  Recycled pages wait at
``next_to_alloc``, so all ``count`` slots are read, not only the span between
``next_to_clean`` and ``next_to_use``.  Only where a driver finds its rings
differs, and that is all a ``Family`` describes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import drgn
import numpy as np
from drgn.helpers.linux.net import netdev_priv

from ..features import has_type
from ..pages import Memmap
from . import Ring
from .common import (int_members, member_or, netdev_label, netdevs_of, pci_devs_of, pci_label,
                     struct_array)
from .skb import skb_pfns

#: (label, ring object, kind) as a route finds them
Found = tuple[str, drgn.Object, str]


@dataclass(frozen=True)
class Family:
    name: str                       # the PCI driver's name
    buffer_type: str
    buffers: tuple[str, ...]        # ring member holding the slot array (first one present)
    priv_type: str                  # netdev_priv() of its net devices
    from_priv: Callable[[drgn.Program, drgn.Object, str], Iterator[Found]]
    #: PCI drvdata -> rings, for drivers whose drvdata reaches rings that have no netdev
    from_pci: Callable[[drgn.Program, drgn.Object], Iterator[Found]] | None = None

    def present(self, prog: drgn.Program) -> bool:
        return has_type(prog, self.buffer_type) and has_type(prog, self.priv_type)

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        for dev in netdevs_of(prog, self.name):
            priv = netdev_priv(dev, self.priv_type)
            for label, ring, kind in self.from_priv(prog, priv, netdev_label(dev)):
                yield self.read_ring(prog, a, label, ring, kind)
        if self.from_pci is not None:
            for pdev in pci_devs_of(prog, self.name):
                for label, ring, kind in self.from_pci(prog, pdev):
                    yield self.read_ring(prog, a, label, ring, kind)

    def read_ring(self, prog: drgn.Program, a: Memmap, label: str, ring: drgn.Object,
                  kind: str) -> Ring:
        count = ring.count.value_()
        out = Ring(self.name, label, member_or(ring, "queue_index", member_or(ring, "q_index", 0)),
                   kind, ring.value_(), count)
        for idx in ("next_to_use", "next_to_clean", "next_to_alloc", "next_to_process", "rx_buf_len"):
            if ring.type_.type.has_member(idx):
                out.indices[idx] = getattr(ring, idx).value_()
        out.stats = _ring_stats(ring, kind)
        if kind == "xdp-tx":
            _read_xdp_tx_slots(prog, a, ring, count, out)
            return out
        member = next((m for m in self.buffers if ring.type_.type.has_member(m)), None)
        if member is None:
            out.problems.append(f"{ring.type_.type.type_name()} has none of {', '.join(self.buffers)}: slots not read")
            return out
        array = getattr(ring, member).value_()
        if not array or not count:
            return out
        slots = struct_array(prog, array, self.buffer_type, count,
                             {"page": "page", "offset": "page_offset", "bias": "pagecnt_bias"})
        if "page" not in slots:
            out.problems.append(f"{self.buffer_type} has no page member: slots not read")
            return out
        idx = np.nonzero(slots["page"])[0]
        pfn = a.pfns_of_page_ptrs(slots["page"][idx])
        ok = pfn >= 0
        if not ok.all():
            out.problems.append(f"{int((~ok).sum())} slots point outside the memmap")
        out.slot, out.pfn = idx[ok], pfn[ok]
        out.offset = (slots["offset"][idx][ok].astype(np.int64) if "offset" in slots
                      else np.zeros(out.slot.size, np.int64))
        out.bias = (slots["bias"][idx][ok].astype(np.int64) if "bias" in slots
                    else np.full(out.slot.size, -1, np.int64))
        out.extra_pfns = _parked_pfns(prog, a, ring)
        return out


def _ring_stats(ring: drgn.Object, kind: str) -> dict[str, int]:
    """The driver's per-ring counters: ``rx_stats`` (or ``ring_stats->rx_stats``
    on ice), and ``tx_stats`` for an XDP tx ring.

    Fact: i40e, ice and iavf keep ``tx_stats`` and ``rx_stats`` in one union,
    so a tx ring's ``rx_stats`` would be its tx counters under other names."""
    which = "tx_stats" if kind == "xdp-tx" else "rx_stats"
    t = ring.type_.type
    if t.has_member(which):
        return int_members(getattr(ring, which))
    if t.has_member("ring_stats") and ring.ring_stats:
        return int_members(getattr(ring.ring_stats, which))
    return {}


def _parked_pfns(prog: drgn.Program, a: Memmap, ring: drgn.Object) -> list[int]:
    """Pages of a frame the ring is still building: ``ring->skb`` (before 6.4)
    or the ``xdp_buff`` context (i40e 6.4+, whose ``data_hard_start`` is in
    the first buffer's page)."""
    t = ring.type_.type
    out: list[int] = []
    if t.has_member("skb") and ring.skb:
        out += skb_pfns(prog, a, ring.skb)
    if t.has_member("xdp") and t.member("xdp").type.has_member("data") and ring.xdp.data:
        pfn = a.pfn_of_virt(ring.xdp.data_hard_start.value_())
        if pfn >= 0:
            out.append(pfn)
    return out


def _read_xdp_tx_slots(prog: drgn.Program, a: Memmap, ring: drgn.Object, count: int,
                       out: Ring) -> None:
    """XDP tx rings hold ``xdp_frame``s, which sit in the headroom of their own page."""
    array = ring.tx_bi.value_() if ring.type_.type.has_member("tx_bi") else 0
    buf_type = ring.tx_bi.type_.type.type_name() if array else ""
    if not array or not count:
        return
    slots = struct_array(prog, array, buf_type, count, {"xdpf": "xdpf"})
    if "xdpf" not in slots:
        out.problems.append(f"{buf_type} has no xdpf member: XDP tx slots not read")
        return
    idx = np.nonzero(slots["xdpf"])[0]
    pfns = a.pfns_of_virts(slots["xdpf"][idx])
    ok = pfns >= 0
    out.slot, out.pfn = idx[ok], pfns[ok]
    out.offset = np.zeros(out.slot.size, np.int64)
    out.bias = np.full(out.slot.size, -1, np.int64)


# --- how each driver reaches its rings -----------------------------------------------

def _vsi_rings(vsi: drgn.Object, label: str, queues: str) -> Iterator[Found]:
    """i40e/ice: ``vsi->rx_rings[]`` (and i40e's ``xdp_rings[]``).

    Fact (i40e_vsi_alloc_arrays): one array holds the tx rings, then the XDP
    tx rings when an XDP program is attached, then the rx rings; ``xdp_rings``
    is NULL without XDP, and unused entries are NULL.
    """
    n = getattr(vsi, queues).value_()
    for i in range(n):
        ring = vsi.rx_rings[i]
        if ring:
            yield label, ring, "rx"
    if vsi.type_.type.has_member("xdp_rings") and vsi.xdp_rings:
        for i in range(n):
            ring = vsi.xdp_rings[i]
            if ring:
                yield label, ring, "xdp-tx"


def _vsi_label(vsi: drgn.Object, pci: str) -> str:
    if vsi.netdev:
        return netdev_label(vsi.netdev)
    return f"{pci} vsi{vsi.idx.value_()}"


def _i40e_from_priv(prog, priv, name):
    if priv.vsi:
        yield from _vsi_rings(priv.vsi, name, "alloc_queue_pairs")


def _pf_vsis(prog: drgn.Program, pdev: drgn.Object, pf_type: str, queues: str) -> Iterator[Found]:
    """PCI route: drvdata is the PF, ``pf->vsi[0..num_alloc_vsi)`` -- this also
    reaches VSIs without a net device (Flow Director, VF, VMDq)."""
    pf = drgn.cast(f"{pf_type} *", pdev.dev.driver_data)
    if not pf:
        return
    for i in range(pf.num_alloc_vsi.value_()):
        vsi = pf.vsi[i]
        if vsi:
            yield from _vsi_rings(vsi, _vsi_label(vsi, pci_label(pdev)), queues)


def _ice_from_priv(prog, priv, name):
    if priv.vsi:
        yield from _vsi_rings(priv.vsi, name, "alloc_rxq")


def _adapter_ring_ptrs(prog, adapter, name):
    """ixgbe, ixgbevf, igb, igc: ``adapter->rx_ring[0..num_rx_queues)``, an array of pointers."""
    for i in range(adapter.num_rx_queues.value_()):
        ring = adapter.rx_ring[i]
        if ring:
            yield name, ring, "rx"


def _iavf_from_priv(prog, adapter, name):
    """iavf (before 6.10): ``adapter->rx_rings`` is one contiguous array of rings."""
    if adapter.rx_rings:
        for i in range(adapter.num_active_queues.value_()):
            yield name, adapter.rx_rings[i].address_of_(), "rx"


WALKERS = [
    Family("i40e", "struct i40e_rx_buffer", ("rx_bi",),
           "struct i40e_netdev_priv", _i40e_from_priv,
           lambda prog, pdev: _pf_vsis(prog, pdev, "struct i40e_pf", "alloc_queue_pairs")),
    Family("ice", "struct ice_rx_buf", ("rx_buf",),
           "struct ice_netdev_priv", _ice_from_priv,
           lambda prog, pdev: _pf_vsis(prog, pdev, "struct ice_pf", "alloc_rxq")),
    Family("iavf", "struct iavf_rx_buffer", ("rx_bi",),
           "struct iavf_adapter", _iavf_from_priv),
    Family("ixgbe", "struct ixgbe_rx_buffer", ("rx_buffer_info",),
           "struct ixgbe_adapter", _adapter_ring_ptrs),
    Family("ixgbevf", "struct ixgbevf_rx_buffer", ("rx_buffer_info",),
           "struct ixgbevf_adapter", _adapter_ring_ptrs),
    Family("igb", "struct igb_rx_buffer", ("rx_buffer_info",),
           "struct igb_adapter", _adapter_ring_ptrs),
    Family("igc", "struct igc_rx_buffer", ("rx_buffer_info",),
           "struct igc_adapter", _adapter_ring_ptrs),
]
