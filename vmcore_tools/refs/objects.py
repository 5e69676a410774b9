"""The object graph reachability walks: every allocated slab object and
large kmalloc buffer (``ObjectTable``), and a tracer that reads the same
memory the page scan reads (``reader.MemoryReader``) but matches each word
against the objects instead of the candidate pages -- a root's words mark
objects reached, a traced object's words are edges from it.

Which memory is a root or traced, and which objects the kernel keeps for
good without a pointer, is the registry's (``REACH_ROOTS``, ``TRACED``,
``KEPT``); the readers and the kept-object tests it names are here.  The
walk itself and its report are ``leaks.reachability``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import drgn
import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.core.features import has_symbol, has_type
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.refs.reader import MemoryReader, Progress, in_spans

#: a test of which objects, starting at word ``at`` of ``words``, the kernel keeps for good
KeptRule = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class ObjectTable:
    """Every allocated object of the traced memory, sorted by address: 14
    bytes an object (a start, a slot size, a cache index)."""

    start: np.ndarray        # uint64: first byte (direct map)
    size: np.ndarray         # uint32: bytes of its slot (a large kmalloc buffer's 4 MiB fit)
    cache: np.ndarray        # uint16 (int32 past 65,535 caches): index into ``names``
    names: list[str]
    #: slabs whose freelists could not be read: their objects are not traced
    unread_slabs: int = 0

    def __len__(self) -> int:
        return self.start.size

    def end_of(self, i: int) -> int:
        """One past the last byte of object ``i``'s slot."""
        return int(self.start[i]) + int(self.size[i])

    def find(self, addrs: np.ndarray) -> np.ndarray:
        """The object each address lies in (any byte of its slot), -1 where none."""
        i = np.searchsorted(self.start, addrs, side="right") - 1
        inside = i >= 0
        j = i[inside]
        inside[inside] = addrs[inside] - self.start[j] < self.size[j]
        return np.where(inside, i, -1)


def object_table(census: Census, slab_objects: SlabObjects) -> ObjectTable:
    """The allocated slab objects (``slab.SlabObjects.allocated_slabs``) and
    the large kmalloc buffers (a compound page without a slab, ``PAGE_SIZE
    << order`` bytes) of the census."""
    c, a = census, census.memmap
    starts, sizes, caches, names, index = [], [], [], [], {}
    unread = 0

    def add(name: str, first: np.ndarray, size: np.ndarray | int) -> None:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        starts.append(first)
        sizes.append(np.broadcast_to(np.asarray(size, np.uint32), first.shape))
        caches.append(np.full(first.size, index[name], np.uint16 if index[name] < 1 << 16 else np.int32))

    slab = c.pfns_of(PageClass.SLAB)
    for got in slab_objects.allocated_slabs(np.unique(a.heads_of(slab))):
        if got is None:
            unread += 1
            continue
        name, size, first = got
        add(name, first, size)
    large = c.pfns_of(PageClass.LARGE_KMALLOC)
    heads = large[a.heads_of(large) == large]
    if heads.size:
        add("large kmalloc", a.virts_of_pfns(heads), np.uint32(a.page_size) << a.order_of(heads).astype(np.uint32))
    if not starts:
        return ObjectTable(np.zeros(0, np.uint64), np.zeros(0, np.uint32), np.zeros(0, np.uint16), names, unread)
    start = np.concatenate(starts)
    starts.clear()
    order = np.argsort(start)                 # starts are distinct: no stable sort needed
    start = start[order]
    size = np.concatenate(sizes)[order]
    sizes.clear()
    cache = np.concatenate(caches)[order]
    return ObjectTable(start, size, cache, names, unread)


class ObjectTracer:
    """Reads roots and traced memory and turns their words into marks and
    edges over the object table: while ``tracing`` is off a word pointing
    into an object roots it, once on it is an edge from the object the word
    lies in."""

    def __init__(self, census: Census, held_heads: np.ndarray, progress: Progress | None = None):
        self.census = census
        self.prog = census.prog
        self.memmap = a = census.memmap
        #: unreadable pages met while reading, as problem lines
        self.problems: list[str] = []
        self.read = MemoryReader(self.prog, a, self._take, self.problems, progress)
        self.slab_objects = SlabObjects(self.prog, a)
        #: the candidates the reference scan found held (a root: ``scan_held_pages``)
        self.held_heads = held_heads
        self.table = object_table(census, self.slab_objects)
        self.rooted = np.zeros(len(self.table), bool)
        #: objects the kernel keeps for good without a pointer (registry.KEPT)
        self.kept = np.zeros(len(self.table), bool)
        self.kept_rules: list[KeptRule] = []
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.tracing = False
        self.root_bytes = self.traced_bytes = 0
        #: words of traced memory that are stale (``stale_spans``), as sorted [lo, hi) spans
        self.stale_lo, self.stale_hi = stale_spans(self.table, self.slab_objects)
        self.lo = np.uint64(a.direct_map)
        self.hi = np.uint64(a.direct_map + (a.nr << a.page_shift))

    def _take(self, data: bytes, base: int, region: str) -> None:
        words = np.frombuffer(data, "<u8", len(data) // 8)
        idx = np.flatnonzero((words >= self.lo) & (words < self.hi))
        dst = self.table.find(words[idx])
        hit = dst >= 0
        idx, dst = idx[hit], dst[hit]
        if not self.tracing:
            self.root_bytes += len(data)
            self.rooted[dst] = True
            return
        self.traced_bytes += len(data)
        first, last = np.searchsorted(self.table.start, [base, base + len(data)])
        if last > first and self.kept_rules:
            at = ((self.table.start[first:last] - np.uint64(base)) >> np.uint64(3)).astype(np.int64)
            for rule in self.kept_rules:
                self.kept[first:last] |= rule(words, at)
        where = np.uint64(base) + (idx.astype(np.uint64) << np.uint64(3))
        src = self.table.find(where)
        keep = (src >= 0) & (src != dst)          # words outside any allocated object are stale
        if self.stale_lo.size:
            keep &= ~in_spans(where, self.stale_lo, self.stale_hi)
        if keep.any():
            self.edges.append((src[keep].astype(np.int32), dst[keep].astype(np.int32)))


def stale_spans(table: ObjectTable, slab_objects: SlabObjects) -> tuple[np.ndarray, np.ndarray]:
    """Spans of allocated objects whose words are stale: the tail of every
    slab sheaf, from ``objects[size]`` to the end of its kmalloc'd object
    (``slab.SlabObjects.stale_sheaf_words``)."""
    spans = []
    for sheaf, first in slab_objects.stale_sheaf_words():
        obj = int(table.find(np.array([sheaf], np.uint64))[0])
        if obj >= 0 and first < table.end_of(obj):
            spans.append((first, table.end_of(obj)))
    spans.sort()
    return np.array([s for s, _ in spans], np.uint64), np.array([e for _, e in spans], np.uint64)


# -- the roots of reachability (registry.REACH_ROOTS) --------------------------

def scan_boot_memory(t: ObjectTracer) -> None:
    t.read.pfns(t.census.pfns_of(PageClass.RESERVED), "boot memory")


def scan_page_frags(t: ObjectTracer) -> None:
    t.read.pfns(t.census.pfns_of(PageClass.PAGE_FRAG), "page frag")


def scan_held_pages(t: ObjectTracer) -> None:
    """Every page of the candidates the reference scan found held."""
    t.read.pfns(t.memmap.pages_of(t.held_heads), "held page")


# -- traced memory (registry.TRACED) -------------------------------------------

def trace_slab(t: ObjectTracer) -> None:
    t.read.pfns(t.census.pfns_of(PageClass.SLAB), "slab")


def trace_large_kmalloc(t: ObjectTracer) -> None:
    t.read.pfns(t.census.pfns_of(PageClass.LARGE_KMALLOC), "large kmalloc")


# -- objects kept for good without a pointer (registry.KEPT) -------------------

def kept_sysctl_headers(t: ObjectTracer) -> KeptRule | None:
    """A test of which objects, starting at word ``at`` of ``words``, are
    sysctl table headers of a table built into the image:
    ``ctl_table_arg`` in the image, ``root`` the global
    ``sysctl_table_root`` (or NULL in the wrapper header of
    ``register_sysctl_table()``'s subtables).  None where the kernel has
    no sysctl."""
    prog = t.prog
    if not (has_type(prog, "struct ctl_table_header") and has_symbol(prog, "sysctl_table_root")
            and has_symbol(prog, "_stext") and has_symbol(prog, "_end")):
        return None
    ty = prog.type("struct ctl_table_header")
    arg, root = drgn.offsetof(ty, "ctl_table_arg") // 8, drgn.offsetof(ty, "root") // 8
    lo, hi = np.uint64(prog.symbol("_stext").address), np.uint64(prog.symbol("_end").address)
    table_root = np.uint64(prog.symbol("sysctl_table_root").address)

    def test(words: np.ndarray, at: np.ndarray) -> np.ndarray:
        inside = at + max(arg, root) < words.size
        out = np.zeros(at.size, bool)
        arg_w, root_w = words[at[inside] + arg], words[at[inside] + root]
        out[inside] = (arg_w >= lo) & (arg_w < hi) & ((root_w == 0) | (root_w == table_root))
        return out
    return test


class ObjectGraph:
    """The edges between objects, in compressed sparse rows (``indptr``,
    ``indices``: 4 bytes per edge and per object), built once and searched
    from any set of roots (``reached``)."""

    def __init__(self, n: int, edges: list[tuple[np.ndarray, np.ndarray]]):
        """The graph of ``n`` objects over ``edges`` (source, target index
        arrays), which it empties as it goes: each side is joined, then its
        pieces let go, so the pieces and the rows are never all held at once."""
        from scipy.sparse import coo_array
        self.n = n
        src = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, np.int32)
        dst = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int32)
        edges.clear()
        # scipy sorts the pairs into rows in C (O(V + E), no argsort)
        rows = coo_array((np.ones(src.size, np.int8), (src, dst)), shape=(n, n)).tocsr()
        del src, dst
        self.indptr, self.indices = rows.indptr.astype(np.int32, copy=False), rows.indices.astype(np.int32, copy=False)

    def reached(self, rooted: np.ndarray) -> np.ndarray:
        """The objects reachable from ``rooted`` (a mask): one breadth-first
        search in C (``scipy.sparse.csgraph``) from a node added for the
        purpose, whose row names every rooted object.  O(V + E) at any
        depth: a chain of 16.7 M objects, every kernel list at its worst,
        is one call, not one Python round per link.  (scipy is imported
        here, not with the module: only reachability pays its 25 MB.)"""
        from scipy.sparse import csr_array
        from scipy.sparse.csgraph import breadth_first_order
        n = self.n
        roots = np.flatnonzero(rooted).astype(np.int32)
        indices = np.concatenate([self.indices, roots])
        indptr = np.append(self.indptr, np.int32(indices.size))
        graph = csr_array((np.ones(indices.size, np.int8), indices, indptr), shape=(n + 1, n + 1))
        order = breadth_first_order(graph, n, directed=True, return_predecessors=False)
        reached = np.zeros(n + 1, bool)
        reached[order] = True
        return reached[:n]


def closure(rooted: np.ndarray, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The nodes reachable from ``rooted`` along ``edges`` (``ObjectGraph``;
    ``edges`` is emptied)."""
    return ObjectGraph(rooted.size, edges).reached(rooted)
