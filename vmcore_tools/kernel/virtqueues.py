"""Every virtqueue of every virtio device, with the pages of its ring and
the addresses of the buffers posted to it.

Fact: a virtio device (``struct virtio_device`` on ``virtio_bus``) keeps its
virtqueues on ``vdev->vqs`` (``virtqueue.list``); each is the ``vq`` member
of a ``struct vring_virtqueue``.  A split ring is three arrays the device
reads: ``desc[num]`` (``addr``, ``len``, ``flags``, ``next``: ``addr`` is the
buffer's guest-physical address without a vIOMMU), and ``avail`` and
``used``, which hold 16-bit indexes and ids -- never addresses, though two
indexes side by side can read like a page-aligned one.  A chain posted to
the device starts at a head whose ``desc_state[head].data`` is set; a
descriptor with ``VRING_DESC_F_INDIRECT`` points to a table of descriptors
of its own (``desc_state[head].indir_desc``).  A packed ring is one
``desc`` array: its pages are known, its buffers are not read here
(``is_packed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import drgn
import numpy as np
from drgn.helpers.linux.device import bus_for_each_dev, dev_name
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.mm import virt_to_pfn

from vmcore_tools.core.walk import bounded, damaged, max_entries
from vmcore_tools.core.debuginfo import load_module_debug_info
from vmcore_tools.core.features import has_member, has_object, has_type
from vmcore_tools.core.structs import struct_array

VRING_DESC_F_NEXT = 1
VRING_DESC_F_INDIRECT = 4
#: descriptors read from one indirect table, at most
MAX_INDIRECT = 4096
#: the largest virtqueue (the virtio spec's Queue Size; a split ring's is a power of 2)
MAX_QUEUE_SIZE = 32768


@dataclass
class Virtqueue:
    name: str                       # "virtio0 requests"
    address: int                    # the vring_virtqueue
    pages: set[int] = field(default_factory=set)          # PFNs of its ring
    buffers: list[tuple[int, str]] = field(default_factory=list)   # (address, "desc[i]")


def virtqueues(prog: drgn.Program) -> Iterator[Virtqueue]:
    """Every virtqueue's ring pages and posted buffers; nothing where virtio
    is not loaded (its modules' debug info is loaded here when it is)."""
    load_module_debug_info(prog, ("virtio", "virtio_ring"))
    if not has_object(prog, "virtio_bus") or not has_type(prog, "struct vring_virtqueue"):
        return
    devices = bus_for_each_dev(prog["virtio_bus"].address_of_())
    for dev in bounded(devices, "the virtio devices (virtio_bus)", max_entries(prog, "struct virtio_device")):
        vdev = drgn.container_of(dev, "struct virtio_device", "dev")
        vqs = list_for_each_entry("struct virtqueue", vdev.vqs.address_of_(), "list")
        for vq in bounded(vqs, "a virtio device's queues (vqs)", max_entries(prog, "struct virtqueue")):
            vvq = drgn.container_of(vq, "struct vring_virtqueue", "vq")
            name = f"{dev_name(dev).decode(errors='replace')} {vq.name.string_().decode(errors='replace')}"
            out = Virtqueue(name, vvq.value_())
            if is_packed(vvq):
                ring = vvq.packed.vring
                out.pages = _pfns(prog, ring.desc.value_(), ring_size(vvq, True) * _size(ring.desc))
            else:
                _split(prog, vvq.split, out)
            yield out


def ring_size(vvq: drgn.Object, packed: bool) -> int:
    """The entries of a virtqueue's ring (``vring.num``), 0 where it is no
    size a ring can have: said as damage, so nothing is read by it.

    Fact: the virtio spec's Queue Size is at most 32768, and Linux makes a
    split ring of a power of 2 entries only (``vring_create_virtqueue_split()``
    refuses any other length)."""
    ring = (vvq.packed if packed else vvq.split).vring
    num = ring.num.value_()
    if 0 < num <= MAX_QUEUE_SIZE and (packed or not num & (num - 1)):
        return num
    damaged(f"a virtqueue's ring size (vring_virtqueue {vvq.value_():#x})",
            f"{num} entries, no size a {'packed' if packed else 'split'} ring can have: its ring is not read")
    return 0


def is_packed(vvq: drgn.Object) -> bool:
    """Whether a ``struct vring_virtqueue`` is a packed ring.

    Fact: up to 6.x the flag ``packed_ring`` says it; 7.x replaced it with
    ``enum vq_layout layout`` (``VQ_LAYOUT_SPLIT``, ``VQ_LAYOUT_PACKED``
    and their ``_IN_ORDER`` variants), the ``split``/``packed`` union kept."""
    prog = vvq.prog_
    if has_member(prog, "struct vring_virtqueue", "packed_ring"):
        return bool(vvq.packed_ring)
    layout = vvq.layout.value_()
    return any(layout == value for name, value in vvq.layout.type_.enumerators if "PACKED" in name)


def _size(ptr: drgn.Object) -> int:
    return drgn.sizeof(ptr.type_.type)


def _ring_bytes(ptr: drgn.Object, num: int) -> int:
    """Bytes of a split ring's avail or used ring of ``num`` entries.

    Fact (``vring_size()``, include/uapi/linux/virtio_ring.h): each is its
    header (``flags``, ``idx``), ``num`` entries (``__virtio16`` for avail,
    ``struct vring_used_elem`` for used) and one 16-bit event index after
    them -- not a page: ``used`` is aligned to the transport's ring
    alignment (a cache line for modern virtio-pci), so a page from it can
    run into an allocation of somebody else's."""
    t = ptr.type_.type
    return drgn.offsetof(t, "ring") + num * drgn.sizeof(t.member("ring").type.type) + 2


def posted_chains(prog: drgn.Program, split: drgn.Object) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                  list[tuple[int, list[int]]]]:
    """A split ring's ``desc`` and ``desc_state`` arrays (read in one go
    each) and, per head with ``desc_state[head].data`` set, the
    descriptors of its chain (``next`` while ``VRING_DESC_F_NEXT``)."""
    ring = split.vring
    num = ring_size(drgn.container_of(split.address_of_(), "struct vring_virtqueue", "split"), False)
    if not num:
        return {}, {}, []
    desc = struct_array(prog, ring.desc.value_(), ring.desc.type_.type, num,
                        {"addr": "addr", "len": "len", "flags": "flags", "next": "next"})
    state = struct_array(prog, split.desc_state.value_(), "struct vring_desc_state_split", num,
                         {"data": "data", "indir_desc": "indir_desc"})
    chains = []
    for head in np.flatnonzero(state["data"]).tolist():
        chain, i = [], head
        while len(chain) < num:
            chain.append(i)
            if not int(desc["flags"][i]) & VRING_DESC_F_NEXT:
                break
            i = int(desc["next"][i]) % num
        chains.append((head, chain))
    return desc, state, chains


def _split(prog: drgn.Program, split: drgn.Object, out: Virtqueue) -> None:
    """A split ring's pages, and the buffers of the chains posted to it
    (a free descriptor keeps the address of a buffer long gone)."""
    ring = split.vring
    num = ring_size(drgn.container_of(split.address_of_(), "struct vring_virtqueue", "split"), False)
    if not num:
        return
    out.pages = (_pfns(prog, ring.desc.value_(), num * _size(ring.desc))
                 | _pfns(prog, ring.avail.value_(), _ring_bytes(ring.avail, num))
                 | _pfns(prog, ring.used.value_(), _ring_bytes(ring.used, num)))
    desc, state, chains = posted_chains(prog, split)
    for head, chain in chains:
        for i in chain:
            out.buffers.append((int(desc["addr"][i]), f"desc[{i}]"))
            table = int(state["indir_desc"][head]) if "indir_desc" in state else 0
            if int(desc["flags"][i]) & VRING_DESC_F_INDIRECT and table:
                _indirect(prog, table, int(desc["len"][i]), ring.desc.type_.type, f"desc[{i}] indirect", out)


def _indirect(prog: drgn.Program, table: int, length: int, desc_type: drgn.Type, where: str,
              out: Virtqueue) -> None:
    """The buffers of an indirect table (at its kernel address ``table``)."""
    n = min(length // drgn.sizeof(desc_type), MAX_INDIRECT)
    try:
        inner = struct_array(prog, table, desc_type, n, {"addr": "addr"})
    except drgn.FaultError:
        return
    out.buffers += [(int(addr), f"{where}[{j}]") for j, addr in enumerate(inner["addr"].tolist()) if addr]


def _pfns(prog: drgn.Program, start: int, length: int) -> set[int]:
    shift = prog["PAGE_SHIFT"].value_()
    first, last = start >> shift, (start + max(length, 1) - 1) >> shift
    return {virt_to_pfn(prog, p << shift).value_() for p in range(first, last + 1)}
