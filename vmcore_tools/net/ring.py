"""A ring, as every walker describes it: the pages a NIC ring (or another
page holder of the network stack) holds, slot by slot; and the interface a
walker shares (``Walker``).  The walkers are ``net.rings``'s."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import drgn
import numpy as np

from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.core.arrays import unique


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
        return unique(np.concatenate([r.all_pfns() for r in self.rings]))

    def orders_by_driver(self, a: Memmap) -> dict[int, list[str]]:
        """Page order -> rings that hold pages of that order (evidence for
        orphans); the orders are known once the census has run."""
        out: dict[int, list[str]] = {}
        for r in self.rings:
            if r.kind != "rx" or not r.pfn.size:
                continue
            for order in unique(a.order_of(r.pfn)).tolist():
                out.setdefault(int(order), []).append(r.name)
        return out


class Walker(Protocol):
    #: driver (PCI driver / net device driver) name, for messages
    name: str

    def present(self, prog: drgn.Program) -> bool:
        """Whether the driver's types are in the debug info (else: skipped quietly)."""

    def rings(self, prog: drgn.Program, a: Memmap) -> Iterator[Ring]:
        """Every ring of this driver, found from global kernel state."""
