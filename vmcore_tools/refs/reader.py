"""Reading kernel memory for a scan: spans of virtual addresses or pages by
PFN, a chunk at a time, each chunk's bytes handed to the scan that asked
(its *sink*).  The page scan (``refs.engine``) and reachability
(``refs.objects``) read the same memory the same way and differ only in
what a word means to them, so the roots they share (``refs.roots``) take
anything with a ``read`` (``MemoryReader``) and the census
(``MemoryContext``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import drgn
import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.core.parallel import can_fork, forked_map, jobs_of
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.core.arrays import unique

#: Bytes read and handed to the sink at a time.
CHUNK_BYTES = 1 << 20
#: pages below which a read is not split over processes (a fork costs more than it saves)
FORK_MIN_PAGES = 1 << 16
#: parts per job: a part that reads slowly (compressed, dense) does not hold the others up
PARTS_PER_JOB = 4

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
        #: set by an owner that can merge what forked processes found (``pfns``)
        self.fork: Fork | None = None

    def virt(self, start: int, end: int, region: str) -> None:
        """Read ``[start, end)`` (kernel virtual addresses), 8-byte aligned."""
        self.read_spans([(start, end)], region)

    def pfns(self, pfns: np.ndarray, region: str) -> None:
        """Read pages by PFN through the direct map, contiguous runs at once;
        with ``--jobs`` and an owner that can merge (``fork``), a large set
        in forked processes, a part each (``parallel.forked_map``)."""
        if not pfns.size:
            return
        pfns = unique(pfns)
        jobs = jobs_of(self.prog)
        parts = [p for p in np.array_split(pfns, jobs * PARTS_PER_JOB) if p.size] if jobs > 1 else []
        if self.fork is None or len(parts) <= 1 or pfns.size < FORK_MIN_PAGES or not can_fork():
            self._pfns(pfns, region, (f"scanning {region}", pfns.size))
            return
        done = 0
        for part, (found, spans, problems) in zip(parts, forked_map(lambda p: self._forked(p, region), parts, jobs)):
            self.fork.merge(found)
            self.spans += spans
            said = set(self.problems)
            self.problems += [p for p in problems if p not in said]
            done += part.size
            if self.progress:
                self.progress(f"scanning {region}", done, pfns.size)

    def _forked(self, pfns: np.ndarray, region: str) -> tuple[object, list[list[int]], list[str]]:
        """In a forked process: read ``pfns`` and give back what the owner
        found (``fork.collect``), what was read and the problems met."""
        self.progress = None
        self.spans = []
        said = len(self.problems)
        self.fork.begin()
        self._pfns(pfns, region)
        return self.fork.collect(), self.spans, self.problems[said:]

    def _pfns(self, pfns: np.ndarray, region: str, progress: tuple[str, int] | None = None) -> None:
        cut = np.flatnonzero(np.diff(pfns) != 1) + 1
        a = self.memmap
        starts = a.virts_of_pfns(pfns[np.r_[0, cut]]).tolist()
        ends = a.virts_of_pfns(pfns[np.r_[cut - 1, pfns.size - 1]] + 1).tolist()
        self.read_spans(zip(starts, ends), region, progress)

    def read_spans(self, spans: Iterable[tuple[int, int]], region: str,
                 progress: tuple[str, int] | None = None) -> None:
        """Read every ``[start, end)`` of ``spans``, ``CHUNK_BYTES`` at a
        time, each chunk handed to the sink in order; a chunk that faults
        is read again a page at a time, to say which page is missing."""
        page = 1 << self.memmap.page_shift
        done = 0
        for start, end in spans:
            for lo in range((start + 7) & ~7, end, CHUNK_BYTES):
                size = (min(end, lo + CHUNK_BYTES) - lo) & ~7
                if not size:
                    continue
                try:
                    data = self.prog.read(lo, size)
                except drgn.FaultError:
                    if size > page:     # isolate the unreadable page(s)
                        self.read_spans([(sub, min(lo + size, sub + page)) for sub in range(lo, lo + size, page)],
                                      region)
                    else:
                        self.problems.append(f"{region}: unreadable at {lo:#x}")
                    continue
                if self.spans and self.spans[-1][1] == lo:
                    self.spans[-1][1] = lo + len(data)
                else:
                    self.spans.append([lo, lo + len(data)])
                self.sink(data, lo, region)
            if progress and self.progress:
                done += (end - start) // page
                self.progress(progress[0], min(done, progress[1]), progress[1])


class Fork(Protocol):
    """How a reader's owner splits its work over forked processes: ``begin``
    in the child, before its part (keep what is found apart), ``collect``
    in the child after it (what was found, to send back), ``merge`` in the
    parent, for each part in order (as if read here)."""

    def begin(self) -> None: ...
    def collect(self) -> object: ...
    def merge(self, found: object) -> None: ...


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
