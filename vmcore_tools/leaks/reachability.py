"""Reachability, kmemleak-style, offline: which allocated slab objects and
large kmalloc buffers no root reaches, and which pages only such memory
holds.

The reference scan (``refscan.py``) asks whether *any* live word names a
page.  A driver that leaks its buffer array together with the pages in it
leaves those pages named -- by an allocated object that nothing reaches.
This module finds that object, the way kmemleak would if it were running:

* **roots** (``registry.REACH_ROOTS``): memory that is live for as long as
  the kernel runs -- boot memory (the image, the memmap, memblock), the
  live part of each task stack, vmalloc areas, page frags, and the pages
  the reference scan found held;
* **traced** memory (``registry.TRACED``): allocated slab objects and large
  kmalloc buffers.  An object is *reached* when a root or a reached object
  holds a direct-map address inside it; what is never reached is
  *unreachable*.

How a word counts in traced memory (interior and tagged pointers, free
object caches, stale sheaf slots, RCU-pending objects) is
``registry.REACH_RULES``; objects the kernel keeps for good without any
pointer (what it tells kmemleak with ``kmemleak_not_leak()``) are
``registry.KEPT``.

This is its own tier, never mixed with "orphaned": an unreachable object is
a leak only if nothing outside the scanned memory (a device, user space, a
pointer kept in a form no rule decodes) holds it.

    >>> from vmcore_tools import orphans, reachability
    >>> r = reachability.reachability(orphans.orphans(prog))
    >>> r.holders[0].text
    '10 order-0 pages held only by an unreachable kmalloc-192 object at ...'
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import drgn
import numpy as np

from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.orphans import OrphanReport
from vmcore_tools.refs.engine import MAX_REFS, ReferenceScan
from vmcore_tools.core.features import has_symbol, has_type
from vmcore_tools.refs.registry import KEPT, REACH_ROOTS, TRACED, Root
from vmcore_tools.core.stages import run_stage

#: unreachable objects listed per cache
SAMPLES = 4
#: caches listed, most unreachable memory first
CACHES_LISTED = 30


@dataclass
class ObjectTable:
    """Every allocated object of the traced memory, sorted by address."""

    start: np.ndarray        # uint64: first byte (direct map)
    end: np.ndarray          # uint64: one past the last byte of its slot
    cache: np.ndarray        # int32: index into ``names``
    names: list[str]
    #: slabs whose freelists could not be read: their objects are not traced
    unread_slabs: int = 0

    def __len__(self) -> int:
        return self.start.size

    def find(self, addrs: np.ndarray) -> np.ndarray:
        """The object each address lies in (any byte of its slot), -1 where none."""
        i = np.searchsorted(self.start, addrs, side="right") - 1
        inside = i >= 0
        inside[inside] = addrs[inside] < self.end[i[inside]]
        return np.where(inside, i, -1)


def object_table(scan: ReferenceScan) -> ObjectTable:
    """The allocated slab objects (``slab.SlabObjects.allocated``) and the
    large kmalloc buffers (a compound page without a slab, ``PAGE_SIZE <<
    order`` bytes) of the census."""
    c, a = scan.census, scan.a
    starts, ends, caches, names, index = [], [], [], [], {}
    unread = 0

    def add(name: str, first: np.ndarray, size: np.ndarray | int) -> None:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        starts.append(first)
        ends.append(first + np.asarray(size, np.uint64))
        caches.append(np.full(first.size, index[name], np.int32))

    slab = c.pfns_of(PageClass.SLAB)
    for head in np.unique(a.heads_of(slab)).tolist():
        try:
            got = scan.slab_objects.allocated(head)
        except (drgn.FaultError, ValueError):
            got = None
        if got is None:
            unread += 1
            continue
        name, size, first = got
        add(name, first, size)
    large = c.pfns_of(PageClass.LARGE_KMALLOC)
    heads = large[a.heads_of(large) == large]
    if heads.size:
        first = np.array([a.virt_of_pfn(h) for h in heads.tolist()], np.uint64)
        add("large kmalloc", first, (np.uint64(1) << a.order_of(heads).astype(np.uint64)) << np.uint64(a.page_shift))
    if not starts:
        empty = np.zeros(0, np.uint64)
        return ObjectTable(empty, empty, np.zeros(0, np.int32), names, unread)
    start, end, cache = np.concatenate(starts), np.concatenate(ends), np.concatenate(caches)
    order = np.argsort(start, kind="stable")
    return ObjectTable(start[order], end[order], cache[order], names, unread)


class ObjectScan(ReferenceScan):
    """The reference scan's readers, matching words against the object
    table instead of the candidate pages: a root's words mark objects
    reached, a traced object's words are edges from it."""

    def __init__(self, report: OrphanReport, progress: Callable[[str, int, int], None] | None = None,
                 without: frozenset[str] = frozenset()):
        super().__init__(report.census, np.zeros(0, np.int64), progress)
        self.without = without
        self.report = report
        self.table = object_table(self)
        self.rooted = np.zeros(len(self.table), bool)
        #: objects the kernel keeps for good without a pointer (registry.KEPT)
        self.kept = np.zeros(len(self.table), bool)
        self.kept_rules = [rule for rule in (getattr(self, k.find)() for k in KEPT if k.name not in without)
                           if rule is not None]
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.tracing = False
        self.root_bytes = self.traced_bytes = 0
        #: words of traced memory that are stale (``stale_spans``), as sorted [lo, hi) spans
        self.stale_lo, self.stale_hi = stale_spans(self)
        self.lo = np.uint64(self.a.direct_map)
        self.hi = np.uint64(self.a.direct_map + (self.a.nr << self.a.page_shift))

    def scan_bytes(self, data: bytes, base: int, region: str, own: int = -1) -> None:
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
            i = np.searchsorted(self.stale_lo, where, side="right") - 1
            keep &= ~((i >= 0) & (where < self.stale_hi[np.maximum(i, 0)]))
        if keep.any():
            self.edges.append((src[keep].astype(np.int32), dst[keep].astype(np.int32)))

    # -- the roots of reachability (registry.REACH_ROOTS) ----------------------

    def scan_boot_memory(self) -> None:
        self.scan_pfns(self.census.pfns_of(PageClass.RESERVED), "boot memory")

    def scan_page_frags(self) -> None:
        self.scan_pfns(self.census.pfns_of(PageClass.PAGE_FRAG), "page frag")

    def scan_held_pages(self) -> None:
        """Every page of the candidates the reference scan found held."""
        self.scan_pfns(self.a.pages_of(self.report.referenced_heads), "held page")

    # -- traced memory (registry.TRACED) -----------------------------------------

    def trace_slab(self) -> None:
        self.scan_pfns(self.census.pfns_of(PageClass.SLAB), "slab")

    def trace_large_kmalloc(self) -> None:
        self.scan_pfns(self.census.pfns_of(PageClass.LARGE_KMALLOC), "large kmalloc")

    # -- objects kept for good without a pointer (registry.KEPT) ----------------

    def kept_sysctl_headers(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        """A test of which objects, starting at word ``at`` of ``words``, are
        sysctl table headers of a table built into the image:
        ``ctl_table_arg`` in the image, ``root`` the global
        ``sysctl_table_root`` (or NULL in the wrapper header of
        ``register_sysctl_table()``'s subtables).  None where the kernel has
        no sysctl."""
        prog = self.prog
        if not (has_type(prog, "struct ctl_table_header") and has_symbol(prog, "sysctl_table_root")
                and has_symbol(prog, "_stext") and has_symbol(prog, "_end")):
            return None
        t = prog.type("struct ctl_table_header")
        arg, root = drgn.offsetof(t, "ctl_table_arg") // 8, drgn.offsetof(t, "root") // 8
        lo, hi = np.uint64(prog.symbol("_stext").address), np.uint64(prog.symbol("_end").address)
        table_root = np.uint64(prog.symbol("sysctl_table_root").address)

        def test(words: np.ndarray, at: np.ndarray) -> np.ndarray:
            inside = at + max(arg, root) < words.size
            out = np.zeros(at.size, bool)
            arg_w, root_w = words[at[inside] + arg], words[at[inside] + root]
            out[inside] = (arg_w >= lo) & (arg_w < hi) & ((root_w == 0) | (root_w == table_root))
            return out
        return test

    def reached(self, problems: list[str]) -> np.ndarray:
        """Read the roots and the traced memory, then follow the edges from
        the rooted objects: which objects are reached."""
        def run(entry: Root) -> None:
            run_stage(f"reachability: {entry.name}", getattr(self, entry.read), None, problems)

        for root in REACH_ROOTS:
            if root.name not in self.without:
                run(root)
        self.tracing = True
        for traced in TRACED:
            if traced.name not in self.without:
                run(traced)
        reached = closure(self.rooted, self.edges)
        kept = self.kept & ~reached
        return closure(reached | kept, self.edges) if kept.any() else reached


def stale_spans(scan: ObjectScan) -> tuple[np.ndarray, np.ndarray]:
    """Spans of allocated objects whose words are stale: the tail of every
    slab sheaf, from ``objects[size]`` to the end of its kmalloc'd object
    (``slab.SlabObjects.stale_sheaf_words``)."""
    spans = []
    for sheaf, first in scan.slab_objects.stale_sheaf_words():
        obj = int(scan.table.find(np.array([sheaf], np.uint64))[0])
        if obj >= 0 and first < int(scan.table.end[obj]):
            spans.append((first, int(scan.table.end[obj])))
    spans.sort()
    return np.array([s for s, _ in spans], np.uint64), np.array([e for _, e in spans], np.uint64)


def closure(rooted: np.ndarray, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The nodes reachable from ``rooted`` along ``edges`` (source, target
    index arrays), breadth first, a frontier at a time."""
    n = rooted.size
    src = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, np.int32)
    dst = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int32)
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    bounds = np.searchsorted(src, np.arange(n + 1))
    reached = rooted.copy()
    frontier = np.flatnonzero(rooted)
    while frontier.size:
        lo, hi = bounds[frontier], bounds[frontier + 1]
        count = hi - lo
        if not count.sum():
            break
        # the edge indexes of every frontier node, concatenated
        at = np.repeat(lo - np.concatenate(([0], np.cumsum(count)[:-1])), count) + np.arange(count.sum())
        nxt = np.unique(dst[at])
        frontier = nxt[~reached[nxt]]
        reached[frontier] = True
    return reached


@dataclass
class UnreachableCache:
    cache: str
    objects: int
    bytes: int
    samples: list[int]           # object addresses


@dataclass
class HiddenHolder:
    """Pages that only unreachable memory holds, by the object that holds them."""

    holder: int                  # object address
    cache: str
    object_bytes: int
    pfns: list[int]              # head PFNs of the pages it holds
    pages: int
    layout: str                  # what the object looks like
    text: str = ""


@dataclass
class ReachabilityReport:
    objects: int                         # allocated objects traced
    reached: int
    caches: list[UnreachableCache]       # unreachable objects, per cache
    holders: list[HiddenHolder]
    root_bytes: int
    traced_bytes: int
    seconds: float
    unread_slabs: int = 0
    problems: list[str] = field(default_factory=list)
    #: allocated objects traced, per cache
    objects_by_cache: dict[str, int] = field(default_factory=dict)

    @property
    def unreachable(self) -> int:
        return self.objects - self.reached

    @property
    def hidden_pages(self) -> int:
        return sum(h.pages for h in self.holders)

    def to_json(self) -> dict:
        return {"objects": self.objects, "reached": self.reached, "unreachable": self.unreachable,
                "hidden_pages": self.hidden_pages, "unread_slabs": self.unread_slabs,
                "caches": [asdict(c) for c in self.caches], "holders": [asdict(h) for h in self.holders],
                "objects_by_cache": self.objects_by_cache,
                "root_bytes": self.root_bytes, "traced_bytes": self.traced_bytes,
                "seconds": round(self.seconds, 3), "problems": self.problems}


def reachability(report: OrphanReport, progress: Callable[[str, int, int], None] | None = None,
                 without: frozenset[str] = frozenset()) -> ReachabilityReport:
    """The unreachable objects of ``report``'s core, and the pages that only
    they hold; the registry entries named in ``without`` are left out (to
    test what each one reaches)."""
    t0 = time.monotonic()
    problems: list[str] = []
    scan = ObjectScan(report, progress, without)
    table = scan.table
    reached = scan.reached(problems)
    problems += scan.result.problems
    lost = ~reached
    caches = []
    if lost.any():
        sizes = (table.end - table.start).astype(np.int64)
        per = np.bincount(table.cache[lost], minlength=len(table.names))
        nbytes = np.bincount(table.cache[lost], weights=sizes[lost], minlength=len(table.names))
        for i in np.argsort(-nbytes)[:CACHES_LISTED].tolist():
            if per[i]:
                where = np.flatnonzero(lost & (table.cache == i))[:SAMPLES]
                caches.append(UnreachableCache(table.names[i], int(per[i]), int(nbytes[i]),
                                               table.start[where].tolist()))
    holders = run_stage("reachability: hidden pages", lambda: hidden_holders(scan, reached), [], problems)
    counts = np.bincount(table.cache, minlength=len(table.names))
    return ReachabilityReport(len(table), int(reached.sum()), caches, holders, scan.root_bytes,
                              scan.traced_bytes, time.monotonic() - t0, table.unread_slabs,
                              unreadable_summary(problems),
                              {n: int(k) for n, k in zip(table.names, counts.tolist()) if k})


def unreadable_summary(problems: list[str]) -> list[str]:
    """``scan_virt`` names each unreadable page; reserved firmware ranges are
    in the memmap but not in a dump, so they are counted per region instead."""
    counts = Counter(p.split(": unreadable at")[0] for p in problems if ": unreadable at " in p)
    return ([p for p in problems if ": unreadable at " not in p]
            + [f"{region}: {n} page(s) not in the dump, not read" for region, n in counts.items()])


def hidden_holders(scan: ObjectScan, reached: np.ndarray) -> list[HiddenHolder]:
    """The referenced candidates every known reference to which lies in an
    unreachable object, or in a page that is itself held only that way; a
    page with ``MAX_REFS`` references may have more, and counts as held."""
    refs, a, table = scan.report.references, scan.a, scan.table
    memo: dict[int, set[int] | None] = {}

    def holders_of(head: int, seen: frozenset[int]) -> set[int] | None:
        """The unreachable objects that alone hold ``head``; None if anything else does."""
        if head in memo:
            return memo[head]
        found = refs.get(head)
        out: set[int] | None = set()
        if not found or len(found) >= MAX_REFS or head in seen:
            out = None
        for ref in found or ():
            if out is None:
                break
            obj = int(table.find(np.array([ref.address], np.uint64))[0])
            if ref.region in ("slab", "kernel pages") and obj >= 0:
                if reached[obj]:
                    out = None
                else:
                    out.add(obj)
            elif ref.region in ("referenced page", "struct page", "run"):
                pfn = a.pfn_of_virt(ref.address) if ref.region != "struct page" else \
                    (ref.address - a.memmap) // a.struct_size
                up = holders_of(a.head_of(pfn), seen | {head}) if 0 <= pfn < a.nr else None
                out = None if up is None else out | up
            else:
                out = None
        memo[head] = out
        return out

    by_holder: dict[int, list[int]] = {}
    for head in sorted(refs):
        objs = holders_of(head, frozenset())
        if objs:
            by_holder.setdefault(min(objs), []).append(head)
    out = []
    for obj, heads in sorted(by_holder.items(), key=lambda kv: -len(kv[1])):
        start, end = int(table.start[obj]), int(table.end[obj])
        pages = int(sum(1 << int(o) for o in a.order_of(np.array(heads, np.int64))))
        h = HiddenHolder(start, table.names[table.cache[obj]], end - start, heads, pages,
                         object_layout(scan, start, end))
        orders = sorted({int(o) for o in a.order_of(np.array(heads, np.int64))})
        h.text = (f"{len(heads)} order-{'/'.join(map(str, orders))} page(s) held only by an unreachable "
                  f"{h.cache} object at {start:#x} ({h.layout})")
        out.append(h)
    return out


def object_layout(scan: ObjectScan, start: int, end: int) -> str:
    """What an object's words look like: how many are ``struct page``
    pointers and direct-map pointers, and the stride of the page pointers
    (an array of records that each name a page: a driver's buffer array)."""
    a = scan.a
    try:
        words = np.frombuffer(scan.prog.read(start, (end - start) & ~7), "<u8")
    except drgn.FaultError:
        return "unreadable"
    pages = np.flatnonzero((words >= np.uint64(a.memmap)) & (words < np.uint64(a.memmap + a.nr * a.struct_size)))
    direct = int(((words >= scan.lo) & (words < scan.hi)).sum())
    parts = []
    if pages.size:
        stride = Counter(np.diff(pages).tolist()).most_common(1)[0][0] * 8 if pages.size > 1 else 0
        parts.append(f"{pages.size} struct page pointer(s)"
                     + (f", one every {stride} bytes: an array of records that each name a page"
                        if stride else ""))
    if direct:
        parts.append(f"{direct} direct-map pointer(s)")
    return "; ".join(parts) or "no pointers"


def reachability_text(r: ReachabilityReport) -> str:
    """The tier as the report prints it."""
    lines = ["Reachability (kmemleak-style, from the roots through allocated slab objects and large "
             "kmalloc; not a page verdict):",
             f"  {r.objects} allocated objects traced, {r.reached} reached, {r.unreachable} unreachable "
             f"({r.root_bytes >> 20} MiB of roots, {r.traced_bytes >> 20} MiB traced, {r.seconds:.1f} s)"]
    if r.unread_slabs:
        lines.append(f"  {r.unread_slabs} slab(s) with unreadable freelists were not traced")
    for h in r.holders:
        lines.append(f"  HELD ONLY BY UNREACHABLE MEMORY: {h.text}")
        lines.append("    pfns: " + " ".join(str(p) for p in h.pfns[:16]) + (" ..." if len(h.pfns) > 16 else ""))
    if r.caches:
        lines.append("  unreachable objects by cache (cache: objects, bytes, samples):")
        for c in r.caches:
            lines.append(f"    {c.cache}: {c.objects}, {c.bytes}, "
                         + " ".join(f"{x:#x}" for x in c.samples))
    for p in r.problems:
        lines.append(f"  problem: {p}")
    return "\n".join(lines)
