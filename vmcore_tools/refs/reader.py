"""Reading kernel memory for a scan: spans of virtual addresses or pages by
PFN, a chunk at a time, each chunk's bytes handed to the scan that asked
(its *sink*).  The page scan (``refs.engine``) and reachability
(``refs.objects``) read the same memory the same way and differ only in
what a word means to them, so the roots they share (``refs.roots``) take
anything with a ``read`` (``MemoryReader``) and the census
(``MemoryContext``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import drgn
import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.core.arrays import unique

#: Bytes read and handed to the sink at a time.
CHUNK_BYTES = 1 << 20

Sink = Callable[[bytes, int, str], None]
Progress = Callable[[str, int, int], None]


class MemoryReader:
    """Reads ``[start, end)`` of kernel memory, or pages by PFN, and hands
    every chunk to ``sink(data, base, region)``; a page that cannot be read
    becomes a problem line (``region: unreadable at ADDRESS``)."""

    def __init__(self, prog: drgn.Program, memmap: Memmap, sink: Sink, problems: list[str],
                 progress: Progress | None = None):
        self.prog = prog
        self.memmap = memmap
        self.sink = sink
        self.problems = problems
        self.progress = progress
        #: what was read, as [lo, hi) spans joined where one read follows another
        self.spans: list[list[int]] = []

    def virt(self, start: int, end: int, region: str) -> None:
        """Read ``[start, end)`` (kernel virtual addresses), 8-byte aligned."""
        start = (start + 7) & ~7
        for lo in range(start, end, CHUNK_BYTES):
            hi = min(end, lo + CHUNK_BYTES)
            try:
                data = self.prog.read(lo, (hi - lo) & ~7)
            except drgn.FaultError:
                if hi - lo > 4096:     # isolate the unreadable page(s)
                    page = 1 << self.memmap.page_shift
                    for sub in range(lo, hi, page):
                        self.virt(sub, min(hi, sub + page), region)
                else:
                    self.problems.append(f"{region}: unreadable at {lo:#x}")
                continue
            if self.spans and self.spans[-1][1] == lo:
                self.spans[-1][1] = lo + len(data)
            else:
                self.spans.append([lo, lo + len(data)])
            self.sink(data, lo, region)

    def pfns(self, pfns: np.ndarray, region: str) -> None:
        """Read pages by PFN through the direct map, contiguous runs at once."""
        if not pfns.size:
            return
        pfns = unique(pfns)
        breaks = np.nonzero(np.diff(pfns) != 1)[0] + 1
        done = 0
        a = self.memmap
        for run in np.split(pfns, breaks):
            self.virt(a.virt_of_pfn(int(run[0])), a.virt_of_pfn(int(run[-1]) + 1), region)
            done += run.size
            if self.progress:
                self.progress(f"scanning {region}", done, pfns.size)


class MemoryContext(Protocol):
    """What a root shared by the page scan and reachability may use."""

    prog: drgn.Program
    memmap: Memmap
    census: Census
    read: MemoryReader
    slab_objects: SlabObjects
    problems: list[str]


def subtract_spans(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` without the ``holes``."""
    out, at = [], start
    for lo, hi in sorted(h for h in holes if h[0] < end and h[1] > start):
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
    if at < end:
        out.append((at, end))
    return out


def merged_spans(spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``spans`` merged where they touch or overlap, as sorted start and end arrays."""
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return tuple(np.array([m[k] for m in merged], np.uint64) for k in (0, 1))


def in_spans(addresses: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether each address lies in one of the sorted, disjoint ``[lo, hi)`` spans."""
    i = np.searchsorted(lo, addresses, side="right") - 1
    return (i >= 0) & (addresses < hi[np.maximum(i, 0)])
