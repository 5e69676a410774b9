"""NIC rx rings and other page holders of the network stack.

A *walker* finds its rings from global kernel state (net devices, PCI
drvdata, the page_pool registry) and describes, per ring, the pages its slots
hold.  Walkers share one small interface (``Walker``) and live one driver
family per module:

* ``intel``: i40e, ice, iavf, ixgbe, ixgbevf, igb, igc -- the Duyck-style
  rx buffers ``{dma, page, page_offset, pagecnt_bias}``;
* ``virtio_net``: outstanding virtqueue buffers and the ring's page_frag;
* ``e1000e``: skbs (and jumbo pages) posted on the rx ring;
* ``page_pool``: every registered pool and its pages in flight.

A walker whose driver is bound to a device gets its module's debug info
loaded first (``debuginfo``; the modules of unbound drivers are never read).
A walker whose driver's types are still missing is skipped quietly, but if
devices are bound to the driver, its module's debug info is what is missing,
and the scan says so; a walker that meets a layout it does not understand says
so in ``RingScan.problems`` and the others go on.

    >>> from vmcore_tools.rings import walk_rings
    >>> scan = walk_rings(prog)
    >>> for ring in scan.rings: print(ring.name, ring.populated)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import drgn
import numpy as np

from ..pages import Memmap
from ..debuginfo import load_module_debug_info
from ..stages import run_stage
from .common import UnknownLayout, bound_devices, driver_modules


@dataclass
class Ring:
    """One ring (or other page holder) and the pages it holds."""

    driver: str
    device: str                 # net device name, or the PCI device and VSI
    queue: int
    kind: str                   # "rx", "xdp-tx", "frag", "page_pool"
    address: int                # the ring object, to tell both routes apart
    count: int = 0              # slots
    #: per populated slot: slot index, PFN of the page, offset in it and the
    #: ring's own references on it (pagecnt_bias; -1 where the driver has none)
    slot: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pfn: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: pages held outside the slots (a partly built frame, the frag cache)
    extra_pfns: list[int] = field(default_factory=list)
    indices: dict[str, int] = field(default_factory=dict)   # next_to_use, ...
    stats: dict[str, int] = field(default_factory=dict)     # the driver's rx stats
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.driver} {self.device} {self.kind}{self.queue}"

    @property
    def populated(self) -> int:
        return int(self.pfn.size)

    def extra_heads(self, a: Memmap) -> np.ndarray:
        """Compound heads of the pages held outside the slots (an skb's head
        buffer may sit in a tail page of the compound rx page)."""
        return a.heads_of(np.asarray(self.extra_pfns, np.int64))

    def all_pfns(self) -> np.ndarray:
        return np.concatenate([self.pfn, np.asarray(self.extra_pfns, np.int64)])


@dataclass
class RingScan:
    rings: list[Ring]
    walked: list[str]           # walkers that found their driver
    problems: list[str]

    def held_pfns(self) -> np.ndarray:
        """Every PFN some ring holds (unique)."""
        if not self.rings:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([r.all_pfns() for r in self.rings]))

    def orders_by_driver(self, a: Memmap) -> dict[int, list[str]]:
        """Page order -> rings that hold pages of that order (evidence for
        orphans); the orders are known once the census has run."""
        out: dict[int, list[str]] = {}
        for r in self.rings:
            if r.kind != "rx" or not r.pfn.size:
                continue
            for order in np.unique(a.order_of(r.pfn)).tolist():
                out.setdefault(int(order), []).append(r.name)
        return out


class Walker(Protocol):
    #: driver (PCI driver / net device driver) name, for messages
    name: str

    def present(self, prog: drgn.Program) -> bool:
        """Whether the driver's types are in the debug info (else: skipped quietly)."""

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        """Every ring of this driver, found from global kernel state."""


def all_walkers() -> list[Walker]:
    from . import e1000e, intel, page_pool, virtio_net
    return [*intel.WALKERS, virtio_net.VirtioNet(), e1000e.E1000e(), page_pool.PagePools()]


def walker_ready(prog: drgn.Program, walker: Walker) -> bool:
    """Whether ``walker`` can run: its driver's types are in the debug info,
    once the debug info of the modules behind the devices bound to its driver
    is loaded (nothing is loaded for a driver no device uses)."""
    if not walker.present(prog):
        load_module_debug_info(prog, driver_modules(prog, walker.name))
    return walker.present(prog)


def walk_rings(prog: drgn.Program, a: Memmap | None = None,
               walkers: list[Walker] | None = None) -> RingScan:
    """Run every walker whose driver is present.

    ``a`` (the memmap's geometry, ``pages.Memmap``) is found when not given.
    """
    if a is None:
        a = Memmap.from_program(prog)
    scan = RingScan([], [], [])
    seen: set[tuple[int, str]] = set()
    for walker in walkers if walkers is not None else all_walkers():
        ready = run_stage("ring walkers", lambda: walker_ready(prog, walker), None, scan.problems,
                          detail=walker.name)
        if ready is None:
            continue
        if not ready:
            users = bound_devices(prog, walker.name)
            if users:
                scan.problems.append(
                    f"{walker.name}: bound to {', '.join(users[:4])}, but the debug info lacks its types, "
                    f"so its rings are not walked and their pages look unattributed "
                    f"(give the module's debug info with -d)")
            continue
        scan.walked.append(walker.name)
        run_stage("ring walkers", lambda: _walk(walker, prog, a, scan, seen), None, scan.problems,
                  detail=walker.name)
    return scan


def _walk(walker: Walker, prog: drgn.Program, a: Memmap, scan: RingScan, seen: set[tuple[int, str]]) -> None:
    """Add ``walker``'s rings to ``scan``, each ring once (``seen``); a layout
    the walker does not know is a stated problem, not a failure."""
    try:
        for ring in walker.rings(prog, a):
            key = (ring.address, ring.kind)
            if key in seen:        # found by both routes (netdev and PCI)
                continue
            seen.add(key)
            scan.rings.append(ring)
            scan.problems += [f"{ring.name}: {p}" for p in ring.problems]
    except UnknownLayout as e:
        scan.problems.append(f"{walker.name}: {e}; its rings are not walked")
