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
from vmcore_tools.core.features import has_symbol, has_type, image_symbol
from vmcore_tools.core.stages import run_stage
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.refs.reader import MemoryReader, Progress, in_spans
from vmcore_tools.core.arrays import unique

#: a test of which objects, starting at word ``at`` of ``words``, the kernel keeps for good
KeptRule = Callable[[np.ndarray, np.ndarray], np.ndarray]


#: bits of an object's word that name its kind (``ObjectTable``)
KIND_BITS = 16
KIND_MASK = np.uint64((1 << KIND_BITS) - 1)


@dataclass
class ObjectTable:
    """Every allocated object of the traced memory, sorted by address, in
    one word each: its start's offset from ``base`` (the direct map) above
    ``KIND_BITS`` bits that name its kind -- a cache name and a slot size
    (``names``, ``sizes``).  8 bytes an object, and sorting the words sorts
    the objects by address (no index array as long as the table).  Offsets
    fit below 2^48: 256 TiB of direct map."""

    keys: np.ndarray         # uint64, sorted
    base: int
    names: list[str]         # per kind: the cache (several kinds may share a name)
    sizes: np.ndarray        # uint64 per kind: bytes of a slot
    #: slabs whose freelists could not be read: their objects are not traced
    unread_slabs: int = 0

    def __len__(self) -> int:
        return self.keys.size

    def starts(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The start addresses of objects ``[lo, hi)``."""
        return (self.keys[lo:hi] >> np.uint64(KIND_BITS)) + np.uint64(self.base)

    def kinds(self, idx: np.ndarray) -> np.ndarray:
        """The kind of each object of ``idx``."""
        return (self.keys[idx] & KIND_MASK).astype(np.int64)

    def start_of(self, i: int) -> int:
        return int(self.keys[i] >> np.uint64(KIND_BITS)) + self.base

    def end_of(self, i: int) -> int:
        """One past the last byte of object ``i``'s slot."""
        return self.start_of(i) + int(self.sizes[int(self.keys[i] & KIND_MASK)])

    def index_range(self, lo: int, hi: int) -> tuple[int, int]:
        """The objects that start in ``[lo, hi)``: a slice of the table."""
        first, last = np.searchsorted(self.keys, [self._key(lo), self._key(hi)])
        return int(first), int(last)

    def _key(self, addr: int) -> np.uint64:
        return np.uint64(max(0, min(addr - self.base, (1 << 48) - 1)) << KIND_BITS)

    def kind_counts(self, step: int = 1 << 22) -> np.ndarray:
        """Objects per kind, counted a slice at a time."""
        out = np.zeros(len(self.names), np.int64)
        for lo in range(0, self.keys.size, step):
            out += np.bincount((self.keys[lo:lo + step] & KIND_MASK).astype(np.int64), minlength=len(self.names))
        return out

    def find(self, addrs: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The object each address lies in (any byte of its slot), -1 where
        none; only objects ``[lo, hi)`` of the table are looked at (the
        objects of the memory the addresses were read from: a short search)."""
        off = np.asarray(addrs, np.uint64) - np.uint64(self.base)       # below the base: wraps, found in none
        probe = off << np.uint64(KIND_BITS)
        probe |= KIND_MASK
        if off.size and off.max() >= np.uint64(1 << 48):                 # past any offset: after every key
            probe[off >= np.uint64(1 << 48)] = ~np.uint64(0)
        i = np.searchsorted(self.keys[lo:hi], probe, side="right")
        i += lo - 1
        inside = i >= lo
        key = self.keys[i[inside]]
        inside[inside] = off[inside] - (key >> np.uint64(KIND_BITS)) < self.sizes[(key & KIND_MASK).astype(np.int64)]
        return np.where(inside, i, -1)


def object_table(census: Census, slab_objects: SlabObjects) -> ObjectTable:
    """The allocated slab objects (``slab.SlabObjects.allocated_slabs``), those
    KFENCE served (``SlabObjects.kfence``) and the large kmalloc buffers (a compound page without a slab, ``PAGE_SIZE
    << order`` bytes, a kind per order) of the census."""
    c, a = census, census.memmap
    base = a.direct_map
    pieces, names, sizes, kinds = [], [], [], {}
    unread = 0

    def add(name: str, first: np.ndarray, size: int) -> None:
        if (name, size) not in kinds:
            if len(names) > int(KIND_MASK):
                raise ValueError(f"more than {int(KIND_MASK) + 1} kinds of object: not traced")
            kinds[name, size] = len(names)
            names.append(name)
            sizes.append(size)
        key = first - np.uint64(base)              # a new array: shifted and tagged in place
        key <<= np.uint64(KIND_BITS)
        key |= np.uint64(kinds[name, size])
        pieces.append(key)

    slab = c.pfns_of(PageClass.SLAB)
    for got in slab_objects.allocated_slabs(unique(a.heads_of(slab))):
        if got is None:
            unread += 1
            continue
        name, size, first = got
        add(name, first, size)
    kfence = slab_objects.kfence
    if kfence is not None:
        on_slab = c.classes[kfence.pfns(a)] == PageClass.SLAB       # laid out with the slabs above
        for cache, lo, hi in kfence.in_use(on_slab):
            add(cache, np.array([lo], np.uint64), hi - lo)
    large = c.pfns_of(PageClass.LARGE_KMALLOC)
    heads = large[a.heads_of(large) == large]
    orders = a.order_of(heads)
    for order in unique(orders).tolist():
        add("large kmalloc", a.virts_of_pfns(heads[orders == order]), a.page_size << order)
    keys = np.concatenate(pieces) if pieces else np.zeros(0, np.uint64)
    pieces.clear()
    keys.sort(kind="stable")        # timsort: the pieces are sorted runs, merged in O(n log runs)
    return ObjectTable(keys, base, names, np.array(sizes, np.uint64), unread)


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
        self.read.fork = self
        self.slab_objects = SlabObjects(self.prog, a)
        #: the candidates the reference scan found held (a root: ``scan_held_pages``)
        self.held_heads = held_heads
        self.table = run_stage("reachability: object table", lambda: object_table(census, self.slab_objects),
                               ObjectTable(np.zeros(0, np.uint64), a.direct_map, [], np.zeros(0, np.uint64)),
                               self.problems)
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

    # -- a read split over forked processes (reader.Fork) ---------------------------

    def begin(self) -> None:
        """In a forked process: marks and edges apart from those found before."""
        self.rooted = np.zeros(len(self.table), bool)
        self.kept = np.zeros(len(self.table), bool)
        self.edges, self.root_bytes, self.traced_bytes = [], 0, 0

    def collect(self) -> tuple:
        """In a forked process: the objects it rooted or found kept, its edge
        pieces (in address order), and the bytes it read."""
        return (np.flatnonzero(self.rooted), np.flatnonzero(self.kept), self.edges, self.root_bytes,
                self.traced_bytes)

    def merge(self, found: tuple) -> None:
        """What a forked process found, as if read here."""
        rooted, kept, edges, root_bytes, traced_bytes = found
        self.rooted[rooted] = True
        self.kept[kept] = True
        self.edges += edges
        self.root_bytes += root_bytes
        self.traced_bytes += traced_bytes

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
        first, last = self.table.index_range(base, base + len(data))
        if last > first and self.kept_rules:
            at = ((self.table.starts(first, last) - np.uint64(base)) >> np.uint64(3)).astype(np.int64)
            for rule in self.kept_rules:
                self.kept[first:last] |= rule(words, at)
        where = np.uint64(base) + (idx.astype(np.uint64) << np.uint64(3))
        src = self.table.find(where, max(0, first - 1), last)     # the object straddling base starts before it
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
    """Reserved pages, less the KFENCE pool: its objects are traced
    (``roots.scan_kfence_objects``), and its freed ones are stale."""
    pfns = t.census.pfns_of(PageClass.RESERVED)
    if t.slab_objects.kfence is not None:
        pfns = np.setdiff1d(pfns, t.slab_objects.kfence.pfns(t.memmap), assume_unique=True)
    t.read.pfns(pfns, "boot memory")


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
    lo, hi = np.uint64(image_symbol(prog, "_stext")), np.uint64(image_symbol(prog, "_end"))
    table_root = np.uint64(prog.symbol("sysctl_table_root").address)

    def test(words: np.ndarray, at: np.ndarray) -> np.ndarray:
        inside = at + max(arg, root) < words.size
        out = np.zeros(at.size, bool)
        arg_w, root_w = words[at[inside] + arg], words[at[inside] + root]
        out[inside] = (arg_w >= lo) & (arg_w < hi) & ((root_w == 0) | (root_w == table_root))
        return out
    return test


class ObjectGraph:
    """The edges between objects in compressed sparse rows: ``indices``
    (4 bytes an edge) with room for one more row after the last, the roots
    of a search (4 bytes an object), and ``indptr``; built once, searched
    from any set of roots (``reached``)."""

    def __init__(self, n: int, edges: list[tuple[np.ndarray, np.ndarray]]):
        """The graph of ``n`` objects over ``edges`` (pieces of source and
        target index arrays), which it empties as it goes.

        The tracer reads memory a range at a time, in address order within a
        range, and objects are numbered by address: each piece's sources
        are sorted, and two pieces share at most the object that straddles
        them.  So the pieces, put in order of their first and last source,
        are the rows already: the targets are copied into place and the
        sources counted, no sort.  Pieces in any other order are sorted."""
        self.n = n
        edges.sort(key=lambda e: (int(e[0][0]), int(e[0][-1])) if e[0].size else (-1, -1))
        in_rows = all(bool(np.all(src[1:] >= src[:-1])) for src, _ in edges) and all(
            int(b[0][0]) >= int(a[0][-1]) for a, b in zip(edges, edges[1:]) if a[0].size and b[0].size)
        if not in_rows:
            src = np.concatenate([e[0] for e in edges])
            order = np.argsort(src, kind="stable")
            edges[:] = [(src[order], np.concatenate([e[1] for e in edges])[order])]
            del src, order
        self.edges = size = sum(e[0].size for e in edges)
        self.indices = np.empty(size + n, np.int32)
        # one entry more than the rows need, for the roots' row: its end is set by each search
        counts = np.zeros(n + 2, np.int32 if size + n < 1 << 31 else np.int64)
        at = 0
        edges.reverse()
        while edges:
            src, dst = edges.pop()
            if src.size:
                self.indices[at:at + dst.size] = dst
                counts[int(src[0]) + 1:int(src[-1]) + 2] += np.bincount(src - src[0]).astype(counts.dtype)
                at += dst.size
        np.cumsum(counts[:n + 1], out=counts[:n + 1])
        self.indptr = counts

    def reached(self, rooted: np.ndarray) -> np.ndarray:
        """The objects reachable from ``rooted`` (a mask): one breadth-first
        search in C (``scipy.sparse.csgraph``) from a node added for the
        purpose, whose row (after the last) names every rooted object.
        O(V + E) at any depth: a chain of 16.7 M objects, every kernel list
        at its worst, is one call, not one Python round per link.  The
        search reads no edge weights; they are one 1.0 seen at every edge
        (a zero stride), so scipy makes no float copy of the graph.
        (scipy is imported here, not with the module: only reachability
        pays its 25 MB.)"""
        from scipy.sparse import csr_array
        from scipy.sparse.csgraph import breadth_first_order
        n = self.n
        roots = np.flatnonzero(rooted).astype(np.int32)
        self.indices[self.edges:self.edges + roots.size] = roots
        indices = self.indices[:self.edges + roots.size]
        self.indptr[-1] = indices.size
        data = np.broadcast_to(np.float64(1), indices.shape)
        graph = csr_array((data, indices, self.indptr), shape=(n + 1, n + 1), copy=False)
        order = breadth_first_order(graph, n, directed=True, return_predecessors=False)
        reached = np.zeros(n + 1, bool)
        reached[order] = True
        return reached[:n]
