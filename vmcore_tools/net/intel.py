"""Intel rx rings with Duyck-style page recycling: i40e, ice, iavf, ixgbe,
ixgbevf, igb, igc -- one implementation for the whole family.

Fact: every one of these drivers keeps, per rx ring, an array of ``count``
slots ``{dma, page, page_offset, pagecnt_bias}`` (``i40e_rx_buffer``,
``ice_rx_buf``, ``igb_rx_buffer``, ...).  A populated slot's page carries
``pagecnt_bias`` references that belong to the ring; ``page_count -
pagecnt_bias`` is what the stack still holds.  Recycled pages wait at
``next_to_alloc``, so all ``count`` slots are read, not only the span between
``next_to_clean`` and ``next_to_use``.

Only where a driver keeps its rings differs, and a ``Family`` says that as
data: the members from ``netdev_priv()`` to the object holding the ring
array, the array and its count, and the slot array's member in the ring.
The ring and slot types are then taken from the DWARF along that route, and
``Family.layout_problems`` checks every member of it before a ring is read,
so a kernel whose driver changed shape gets a one-line problem, not a
half-read ring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import drgn
import numpy as np
from drgn.helpers.linux.net import netdev_priv

from vmcore_tools.core.features import has_object, has_type
from vmcore_tools.core.walk import damaged
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.net.ring import Ring
from vmcore_tools.net.devices import netdev_label, netdevs_of, pci_devs_of, pci_label
from vmcore_tools.core.structs import (UnknownLayout, first_member, int_members, member_or, struct_array,
                                       target_type)
from vmcore_tools.net.skb import skb_pfns


@dataclass(frozen=True)
class Family:
    name: str                       # the PCI driver's name
    priv_type: str                  # netdev_priv() of its net devices
    #: members from the priv to the object holding the rings (() for the priv itself)
    to_holder: tuple[str, ...]
    array: str                      # the holder's ring array ...
    count: str                      # ... and how many of its entries are in use
    buffers: tuple[str, ...]        # ring member holding the slot array (first one present)
    #: the array holds the rings themselves, not pointers to them (iavf)
    contiguous: bool = False
    #: PCI drvdata is this PF type, whose ``vsi[0..num_alloc_vsi)`` holders
    #: include VSIs without a net device (i40e, ice)
    pf_type: str | None = None
    #: the holder's count of XDP tx rings in ``xdp_rings`` (i40e, ice)
    xdp_count: str | None = None

    def present(self, prog: drgn.Program) -> bool:
        """Whether the driver's debug info is loaded (its ``netdev_priv`` type exists)."""
        return has_type(prog, self.priv_type)

    def layout_problems(self, prog: drgn.Program) -> list[str]:
        """What this kernel's driver lacks of the route the walker takes:
        each member from the priv type to the slot's ``page``."""
        try:
            holder = prog.type(self.priv_type)
        except LookupError:
            return [f"no {self.priv_type} in the debug info"]
        for m in self.to_holder:
            if not holder.has_member(m):
                return [f"{holder.type_name()} has no member {m}"]
            holder = target_type(holder.member(m).type)
        out = [f"{holder.type_name()} has no member {m}" for m in (self.array, self.count)
               if not holder.has_member(m)]
        if self.pf_type is not None:
            try:
                pf = prog.type(self.pf_type)
                out += [f"{self.pf_type} has no member {m}" for m in ("vsi", "num_alloc_vsi")
                        if not pf.has_member(m)]
            except LookupError:
                out.append(f"no {self.pf_type} in the debug info")
        if out:
            return out
        ring = target_type(holder.member(self.array).type)
        if not ring.has_member("count"):
            return [f"{ring.type_name()} has no member count"]
        member = first_member(ring, self.buffers)
        if member is None:
            return [f"{ring.type_name()} has none of {', '.join(self.buffers)}: "
                    "its rx buffers are not page slots on this kernel"]
        buf = target_type(ring.member(member).type)
        if buf.kind not in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION) or not buf.has_member("page"):
            return [f"{ring.type_name()}.{member} is not an array of slots with a page"]
        return self.xdp_layout_problems(holder)

    def xdp_layout_problems(self, holder: drgn.Type) -> list[str]:
        """What the route to the XDP tx slots lacks: ``xdp_rings`` and its
        count in the holder, the ring's slot array, a frame pointer in the slot."""
        if self.xdp_count is None:
            return []
        out = [f"{holder.type_name()} has no member {m}" for m in ("xdp_rings", self.xdp_count)
               if not holder.has_member(m)]
        if out:
            return out
        ring = target_type(holder.member("xdp_rings").type)
        member = first_member(ring, XDP_SLOTS)
        if member is None or not ring.has_member("count"):
            return [f"{ring.type_name()} has no count or none of {', '.join(XDP_SLOTS)}: "
                    "XDP tx rings not understood"]
        buf = target_type(ring.member(member).type)
        if first_member(buf, XDP_FRAME) is None:
            return [f"{buf.type_name()} has none of {', '.join(XDP_FRAME)}: XDP tx slots not understood"]
        return []

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        devs = list(netdevs_of(prog, self.name))
        pdevs = list(pci_devs_of(prog, self.name)) if self.pf_type else []
        if not devs and not pdevs:
            return
        problems = self.layout_problems(prog)
        if problems:
            raise UnknownLayout("; ".join(problems))
        for dev in devs:
            holder = netdev_priv(dev, self.priv_type)
            for m in self.to_holder:
                holder = getattr(holder, m)
            if holder:
                yield from self._holder_rings(prog, a, holder, netdev_label(dev))
        for pdev in pdevs:
            pf = drgn.cast(f"{self.pf_type} *", pdev.dev.driver_data)
            for i in range(pf.num_alloc_vsi.value_() if pf else 0):
                vsi = pf.vsi[i]
                if vsi:
                    label = netdev_label(vsi.netdev) if vsi.netdev else f"{pci_label(pdev)} vsi{vsi.idx.value_()}"
                    yield from self._holder_rings(prog, a, vsi, label)

    def _holder_rings(self, prog: drgn.Program, a: Memmap, holder: drgn.Object,
                      label: str) -> Iterator[Ring]:
        """``holder.<array>[0..holder.<count>)``, then the XDP tx rings
        ``holder.xdp_rings[0..holder.<xdp_count>)`` (i40e, ice).

        Fact (i40e_vsi_alloc_arrays, ice_prepare_xdp_rings): ``xdp_rings``
        is NULL without an XDP program, and unused entries are NULL.  i40e
        keeps as many XDP rings as queue pairs, ice ``num_xdp_txq``.
        """
        n = getattr(holder, self.count).value_()
        array = getattr(holder, self.array)
        if not array:
            return
        for i in range(n):
            ring = array[i].address_of_() if self.contiguous else array[i]
            if ring:
                yield self.read_ring(prog, a, label, ring, "rx")
        if self.xdp_count is not None and holder.xdp_rings:
            for i in range(getattr(holder, self.xdp_count).value_()):
                ring = holder.xdp_rings[i]
                if ring:
                    yield self.read_ring(prog, a, label, ring, "xdp-tx")

    def read_ring(self, prog: drgn.Program, a: Memmap, label: str, ring: drgn.Object,
                  kind: str) -> Ring:
        count = ring.count.value_()
        out = Ring(self.name, label, member_or(ring, "queue_index", member_or(ring, "q_index", 0)),
                   kind, ring.value_(), count)
        if count > MAX_DESCRIPTORS:
            damaged(f"{self.name} rx rings (count)", f"{count} slots in the ring at {ring.value_():#x}, more than "
                    f"any driver of the family gives a ring ({MAX_DESCRIPTORS}): not read")
            return out
        for idx in ("next_to_use", "next_to_clean", "next_to_alloc", "next_to_process", "rx_buf_len"):
            if ring.type_.type.has_member(idx):
                out.indices[idx] = getattr(ring, idx).value_()
        out.stats = _ring_stats(ring, kind)
        if _zero_copy(ring, out):
            return out
        if kind == "xdp-tx":
            _read_xdp_tx_slots(prog, a, ring, count, out)
            return out
        member = first_member(ring.type_.type, self.buffers)
        array = getattr(ring, member)
        if not array or not count:
            return out
        slots = struct_array(prog, array.value_(), target_type(array.type_), count,
                             {"page": "page", "offset": "page_offset", "bias": "pagecnt_bias", "skb": "skb"})
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
        out.extra_pfns = _parked_pfns(prog, a, ring, slots.get("skb"))
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


def _parked_pfns(prog: drgn.Program, a: Memmap, ring: drgn.Object,
                 slot_skbs: np.ndarray | None) -> list[int]:
    """Pages of a frame the ring is still building: ``ring->skb`` (i40e
    before 6.4, iavf, igb, igc, ixgbevf), the skb in a slot (``slot_skbs``:
    ixgbe, ice before 6.1), or the ``xdp_buff`` context (i40e 6.4+, whose
    ``data_hard_start`` is in the first buffer's page).

    Fact (ixgbe_is_non_eop, ice_is_non_eop before 6.1): the skb of an
    unfinished frame waits in the *next* slot's ``skb``, and the page of a
    buffer that could not be recycled has already left its slot, so the
    skb may be that page's only holder; ``ixgbe_put_rx_buffer`` clears a
    slot's ``skb`` with its ``page``, so a set ``skb`` is a frame in progress."""
    t = ring.type_.type
    out: list[int] = []
    if t.has_member("skb") and ring.skb:
        out += skb_pfns(prog, a, ring.skb)
    if slot_skbs is not None:
        for skb in slot_skbs[slot_skbs != 0].tolist():
            out += skb_pfns(prog, a, drgn.Object(prog, "struct sk_buff *", skb))
    if t.has_member("xdp") and t.member("xdp").type.has_member("data") and ring.xdp.data:
        pfn = a.pfn_of_virt(ring.xdp.data_hard_start.value_())
        if pfn >= 0:
            out.append(pfn)
    return out


def _zero_copy(ring: drgn.Object, out: Ring) -> bool:
    """Whether ``ring`` is bound to an AF_XDP socket (``xsk_pool``; 5.10+).

    Fact: such a ring receives into (or sends from) the socket's umem, user
    memory, and its rx slots hold ``xdp_buff`` pointers where a page ring
    holds ``skb``/``dma`` (ixgbe's and ice's slot is a union of both), so
    its slots are not read."""
    if ring.type_.type.has_member("xsk_pool") and ring.xsk_pool:
        out.problems.append("AF_XDP zero-copy ring: its buffers are the socket's umem, not read")
        return True
    return False


def _read_xdp_tx_slots(prog: drgn.Program, a: Memmap, ring: drgn.Object, count: int,
                       out: Ring) -> None:
    """The pages an XDP tx ring is sending.

    Facts: a slot points into the page it sends by a direct-map address --
    ``xdpf`` for a redirected frame (an ``xdp_frame`` sits in the headroom of
    its own page) and ``raw_buf`` for XDP_TX (the rx buffer's data); both
    share one union with ``skb``.  i40e and the older ice (5.10, 6.1) clear
    the pointer when the frame is sent; the ice whose slot has a ``type``
    (6.12) leaves it and records there what the slot holds, so there only
    ``ICE_TX_BUF_XDP_TX`` and ``ICE_TX_BUF_XDP_XMIT`` slots are read.  A
    ring bound to an AF_XDP socket never gets here (``_zero_copy``)."""
    t = ring.type_.type
    member = first_member(t, XDP_SLOTS)
    array = getattr(ring, member)
    if not array or not count:
        return
    slots = struct_array(prog, array.value_(), target_type(array.type_), count,
                         {"type": "type", **{m: m for m in XDP_FRAME}})
    frame = slots[next(m for m in XDP_FRAME if m in slots)]
    sending = frame != 0
    kinds = [prog[k].value_() for k in XDP_TYPES if has_object(prog, k)]
    if "type" in slots and kinds:
        sending &= np.isin(slots["type"], np.array(kinds, np.uint64))
    idx = np.nonzero(sending)[0]
    pfns = a.pfns_of_virts(frame[idx])
    ok = pfns >= 0
    out.slot, out.pfn = idx[ok], pfns[ok]
    out.offset = np.zeros(out.slot.size, np.int64)
    out.bias = np.full(out.slot.size, -1, np.int64)


#: the most descriptors any driver of the family gives a ring: ice's
#: ``ICE_MAX_NUM_DESC`` and i40e's ``I40E_MAX_NUM_DESCRIPTORS_XL710``, 8160
#: (ethtool -G refuses more); ixgbe, igb, igc, iavf and ixgbevf allow 4096.
#: A ring counting more is damaged, and its slot array is not read.
MAX_DESCRIPTORS = 8160


#: the XDP tx ring's slot array, by driver: i40e ``tx_bi``, ice ``tx_buf``
XDP_SLOTS = ("tx_bi", "tx_buf")
#: the slot's pointer into the page it sends, first present
XDP_FRAME = ("xdpf", "raw_buf")
#: slot types (ice 6.3+ ``enum ice_tx_buf_type``) whose pointer is a frame being sent
XDP_TYPES = ("ICE_TX_BUF_XDP_TX", "ICE_TX_BUF_XDP_XMIT")


def _adapter(name: str) -> Family:
    """ixgbe, ixgbevf, igb, igc: ``adapter->rx_ring[0..num_rx_queues)``, an
    array of ring pointers in the netdev's priv, slots in ``rx_buffer_info``."""
    return Family(name, f"struct {name}_adapter", (), "rx_ring", "num_rx_queues", ("rx_buffer_info",))


WALKERS = [
    # net device -> priv->vsi, and PCI drvdata -> pf->vsi[]: both reach vsi->rx_rings[]
    Family("i40e", "struct i40e_netdev_priv", ("vsi",), "rx_rings", "alloc_queue_pairs", ("rx_bi",),
           pf_type="struct i40e_pf", xdp_count="alloc_queue_pairs"),
    Family("ice", "struct ice_netdev_priv", ("vsi",), "rx_rings", "alloc_rxq", ("rx_buf",),
           pf_type="struct ice_pf", xdp_count="num_xdp_txq"),
    # iavf before 6.10: one contiguous array of rings; 6.10+ receives through
    # page_pool (libeth), which the page_pool walker covers
    Family("iavf", "struct iavf_adapter", (), "rx_rings", "num_active_queues", ("rx_bi",),
           contiguous=True),
    *(_adapter(name) for name in ("ixgbe", "ixgbevf", "igb", "igc")),
]
