"""Reachability, kmemleak-style, offline: which allocated slab objects and
large kmalloc buffers no root reaches, and which pages only such memory
holds.

The reference scan (``refs.scan``) asks whether *any* live word names a
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

The object table, the tracer and the readers the registry names are
``refs.objects``'s; this module walks them and reports.

This is its own tier, never mixed with "orphaned": an unreachable object is
a leak only if nothing outside the scanned memory (a device, user space, a
pointer kept in a form no rule decodes) holds it.

    >>> from vmcore_tools.leaks import orphans, reachability
    >>> r = reachability.reachability(orphans.orphans(prog))
    >>> r.holders[0].text
    '10 order-0 pages held only by an unreachable kmalloc-192 object at ...'
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import drgn
import numpy as np

from vmcore_tools.core.stages import run_stage
from vmcore_tools.leaks.orphans import OrphanReport
from vmcore_tools.refs.engine import MAX_REFS
from vmcore_tools.refs.objects import ObjectGraph, ObjectTracer
from vmcore_tools.refs.reader import Progress
from vmcore_tools.refs.registry import KEPT, REACH_ROOTS, TRACED, Root

#: unreachable objects listed per cache
SAMPLES = 4
#: caches listed, most unreachable memory first
CACHES_LISTED = 30


def reached_objects(tracer: ObjectTracer, problems: list[str], without: frozenset[str] = frozenset()) -> np.ndarray:
    """Read the roots and the traced memory the registry names (less the
    entries in ``without``), then follow the edges from the rooted objects:
    which objects are reached.  Objects the kernel keeps for good
    (``registry.KEPT``) are reached, and so is what they reach."""
    def run(entry: Root) -> None:
        run_stage(f"reachability: {entry.name}", lambda: entry.read(tracer), None, problems)

    tracer.kept_rules = [rule for rule in (k.find(tracer) for k in KEPT if k.name not in without)
                         if rule is not None]
    for root in REACH_ROOTS:
        if root.name not in without:
            run(root)
    tracer.tracing = True
    for traced in TRACED:
        if traced.name not in without:
            run(traced)
    # what the kept objects reach is reached too: one search from both
    return ObjectGraph(len(tracer.table), tracer.edges).reached(tracer.rooted | tracer.kept)


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


def reachability(report: OrphanReport, progress: Progress | None = None,
                 without: frozenset[str] = frozenset()) -> ReachabilityReport:
    """The unreachable objects of ``report``'s core, and the pages that only
    they hold; the registry entries named in ``without`` are left out (to
    test what each one reaches)."""
    t0 = time.monotonic()
    problems: list[str] = []
    # pages held only by inference are roots too: a stale word there hides an
    # unreachable object, never invents one
    held = np.union1d(report.referenced_heads, report.inferred_heads)
    tracer = ObjectTracer(report.census, held, progress)
    table = tracer.table
    reached = reached_objects(tracer, problems, without)
    problems += tracer.problems
    lost = np.flatnonzero(~reached)
    caches = []
    if lost.size:
        kinds = table.kinds(lost)
        by_name: dict[str, list[int]] = {}
        for kind, name in enumerate(table.names):
            by_name.setdefault(name, []).append(kind)
        per = np.bincount(kinds, minlength=len(table.names))
        nbytes = per * table.sizes.astype(np.int64)
        rows = [(name, int(per[ks].sum()), int(nbytes[ks].sum()), ks) for name, ks in by_name.items()]
        for name, objects, size, ks in sorted(rows, key=lambda row: -row[2])[:CACHES_LISTED]:
            if objects:
                where = lost[np.isin(kinds, ks)][:SAMPLES]
                caches.append(UnreachableCache(name, objects, size, [table.start_of(i) for i in where.tolist()]))
    holders = run_stage("reachability: hidden pages", lambda: hidden_holders(tracer, report, reached), [], problems)
    counts: Counter[str] = Counter()
    for name, k in zip(table.names, table.kind_counts().tolist()):
        counts[name] += k
    return ReachabilityReport(len(table), len(table) - int(lost.size), caches, holders, tracer.root_bytes,
                              tracer.traced_bytes, time.monotonic() - t0, table.unread_slabs,
                              unreadable_summary(problems),
                              {n: k for n, k in counts.items() if k})


def unreadable_summary(problems: list[str]) -> list[str]:
    """``scan_virt`` names each unreadable page; reserved firmware ranges are
    in the memmap but not in a dump, so they are counted per region instead."""
    counts = Counter(p.split(": unreadable at")[0] for p in problems if ": unreadable at " in p)
    return ([p for p in problems if ": unreadable at " not in p]
            + [f"{region}: {n} page(s) not in the dump, not read" for region, n in counts.items()])


def hidden_holders(tracer: ObjectTracer, report: OrphanReport, reached: np.ndarray) -> list[HiddenHolder]:
    """The referenced candidates every known reference to which lies in an
    unreachable object, or in a page that is itself held only that way; a
    page with ``MAX_REFS`` references may have more, and counts as held."""
    refs, a, table = report.references, tracer.memmap, tracer.table
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
        start, end = table.start_of(obj), table.end_of(obj)
        pages = int(sum(1 << int(o) for o in a.order_of(np.array(heads, np.int64))))
        h = HiddenHolder(start, table.names[int(table.kinds(np.array([obj]))[0])], end - start, heads, pages,
                         object_layout(tracer, start, end))
        orders = sorted({int(o) for o in a.order_of(np.array(heads, np.int64))})
        h.text = (f"{len(heads)} order-{'/'.join(map(str, orders))} page(s) held only by an unreachable "
                  f"{h.cache} object at {start:#x} ({h.layout})")
        out.append(h)
    return out


def object_layout(tracer: ObjectTracer, start: int, end: int) -> str:
    """What an object's words look like: how many are ``struct page``
    pointers and direct-map pointers, and the stride of the page pointers
    (an array of records that each name a page: a driver's buffer array)."""
    a = tracer.memmap
    try:
        words = np.frombuffer(tracer.prog.read(start, (end - start) & ~7), "<u8")
    except drgn.FaultError:
        return "unreadable"
    pages = np.flatnonzero((words >= np.uint64(a.memmap)) & (words < np.uint64(a.memmap + a.nr * a.struct_size)))
    direct = int(((words >= tracer.lo) & (words < tracer.hi)).sum())
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
    groups: dict[tuple[str, str], list[HiddenHolder]] = {}
    for h in r.holders:                     # in the holders' order: the holder of most pages leads
        groups.setdefault((h.cache, h.layout), []).append(h)
    for (cache, layout), hs in groups.items():
        pfns = [p for h in hs for p in h.pfns]
        if len(hs) == 1:
            lines.append(f"  HELD ONLY BY UNREACHABLE MEMORY: {hs[0].text}")
        else:
            lines.append(f"  HELD ONLY BY UNREACHABLE MEMORY: {sum(h.pages for h in hs)} page(s) held only by "
                         f"{len(hs)} unreachable {cache} objects, each ({layout}), at "
                         + " ".join(f"{h.holder:#x}" for h in hs[:SAMPLES]) + (" ..." if len(hs) > SAMPLES else ""))
        lines.append("    pfns: " + " ".join(str(p) for p in pfns[:16]) + (" ..." if len(pfns) > 16 else ""))
    if r.caches:
        lines.append("  unreachable objects by cache (cache: objects, bytes, samples):")
        for c in r.caches:
            lines.append(f"    {c.cache}: {c.objects}, {c.bytes}, "
                         + " ".join(f"{x:#x}" for x in c.samples))
    for p in r.problems:
        lines.append(f"  problem: {p}")
    return "\n".join(lines)
