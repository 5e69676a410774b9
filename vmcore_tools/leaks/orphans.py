"""Orphaned pages: allocated, owned by nobody, referenced from nowhere.

A *candidate* is a page the census left in "unattributed" (no page-type,
flag, list, vmap area or ring holds it), counted once per allocation: an
order-0 page or the head of a compound page.  The conservative reference
scan (``refscan.py``) then splits the candidates into

* **orphaned**: no word of live kernel memory points at the page -- what a
  page-allocator leak such as the i40e rx-buffer leak leaves behind;
* **unattributed but referenced**: someone holds it (a large kmalloc, a
  driver's DMA ring, a hash table), and we say where.

A leak can be most of memory (the i40e case: 100 GB of 128), so the orphans
are kept as arrays (PFN, order, refcount, suspect: 15 bytes per allocation)
and grouped by what a vectorized pass can tell -- order and refcount
pattern.  Evidence that needs a page's bytes or records (a stale frame
matched to a local net device, the contents, the page_owner stack) is read
from a bounded sample of each group (``SAMPLE``).  A group no larger than
the sample is read whole and split by device and allocation site exactly;
a larger group keeps its exact counts and says what share of its sample
showed each device.  The report lists run-length PFN ranges and the sample;
``pfn_lines()`` (``orphans --pfns FILE``) gives every orphan.

    >>> from vmcore_tools import orphans
    >>> r = orphans(prog)
    >>> for s in r.suspects: print(s.label)
    28 order-0/1 pages ... frames addressed to eth2 (i40e)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property

import drgn
import numpy as np

from vmcore_tools.census.census import Census, census as run_census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.evidence import (Describer, Frame, PageSample, Sniffer, contents_text, device_label, history_text, node_of,
                       page_history)
from vmcore_tools.core.features import kernel_release
from vmcore_tools.mm.page_owner import PageOwner
from vmcore_tools.refs.references import Reference, ScanResult
from vmcore_tools.refs.scan import scan_references
from vmcore_tools.net.page_pool import pool_owners_of
from vmcore_tools.core.stages import run_stage
from vmcore_tools.leaks.verdict import coverage, verdict

#: refcounts from here up look like an rx ring's pagecnt_bias (USHRT_MAX-based)
BIAS_LIKE = 1024
#: allocations of a group whose bytes and records are read (evenly spaced)
SAMPLE = 64
#: run-length PFN ranges listed per suspect
RANGES_LISTED = 32
#: referenced allocations listed, largest first
REFERENCED_LISTED = 200
#: refcount patterns, in grouping order
PATTERNS = ("bias", "fresh", "other")


@dataclass
class PageEvidence:
    pfn: int
    order: int
    refcount: int
    node: int
    bias_like: bool
    frame: Frame | None = None
    references: list[str] = field(default_factory=list)   # where it is referenced from
    suspect: int = -1
    page_owner: PageOwner | None = None   # who allocated it (page_owner=on kernels)
    contents: str | None = None           # evidence.CONTENT_KINDS, where it was read

    @property
    def pages(self) -> int:
        return 1 << self.order


@dataclass
class Suspect:
    id: int
    label: str
    pages: int
    allocations: int
    orders: list[int]
    refcount_min: int
    refcount_max: int
    netdev: str | None
    driver: str | None
    rings_using_order: list[str]
    alloc_site: str | None = None     # page_owner: the function that allocated them
    #: allocations whose bytes (and page_owner records) were read
    sampled: int = 0
    #: of those, how many showed a frame sent to each local device ("eth2 (i40e)")
    frames: dict[str, int] = field(default_factory=dict)
    #: of those, how many held each kind of contents (evidence.CONTENT_KINDS)
    contents: dict[str, int] = field(default_factory=dict)
    #: pages per NUMA node (exact)
    nodes: dict[str, int] = field(default_factory=dict)
    #: the first ``RANGES_LISTED`` runs of contiguous orphaned pages: [first PFN, pages]
    ranges: list[list[int]] = field(default_factory=list)
    #: how many such runs the group has in all
    range_count: int = 0
    #: of the sampled allocations, how many were each kind of page cache
    #: before their owner let them go (evidence.HISTORY_KINDS)
    history: dict[str, int] = field(default_factory=dict)
    #: of the sampled page_pool pages, how many came from a pool serving
    #: each device (rings.page_pool.pool_owner; "" where the pool names none)
    pools: dict[str, int] = field(default_factory=dict)


@dataclass
class Orphans:
    """Every orphaned allocation, as arrays sorted by PFN."""

    pfn: np.ndarray          # int64, head PFN
    order: np.ndarray        # uint8
    refcount: np.ndarray     # int32
    suspect: np.ndarray      # int16: index into OrphanReport.suspects

    @property
    def pages(self) -> int:
        """Pages of all the allocations, counted order by order (no array of
        sizes: at the seed's scale that was 16 bytes an allocation)."""
        return sum(int(np.count_nonzero(self.order == o)) << o for o in range(int(self.order.max(initial=0)) + 1))

    def __len__(self) -> int:
        return int(self.pfn.size)


@dataclass
class OrphanReport:
    census: Census
    scan: ScanResult
    found: Orphans
    #: referenced candidates, largest first: head PFNs and their references
    referenced_heads: np.ndarray
    references: dict[int, list[Reference]]
    suspects: list[Suspect]
    #: the evidence read from each sampled orphan, by PFN
    sampled: dict[int, PageSample]
    records: dict[int, PageOwner]
    seconds: float
    problems: list[str]
    page_owner: str = "absent"      # page_owner_state(): on, off, absent, unsupported
    #: allocations the scan checked (candidate_heads): unattributed and page_pool ones
    candidates: int = 0

    @property
    def orphaned_pages(self) -> int:
        return self.found.pages

    @cached_property
    def _node(self) -> Callable[[np.ndarray], np.ndarray]:
        return node_of(self.census)

    @cached_property
    def _describe(self) -> Describer:
        return Describer(self.census)

    def _evidence(self, pfns: np.ndarray, suspects: np.ndarray | None = None) -> list[PageEvidence]:
        a = self.census.memmap
        orders = a.order_of(pfns).tolist()
        refcounts = self.census.refcounts(pfns).tolist()
        nodes = self._node(pfns).tolist()
        out = []
        for i, pfn in enumerate(pfns.tolist()):
            s = self.sampled.get(pfn)
            ev = PageEvidence(pfn, orders[i], refcounts[i], nodes[i], refcounts[i] >= BIAS_LIKE,
                              frame=s.frame if s else None, contents=s.contents if s else None,
                              page_owner=self.records.get(pfn),
                              suspect=int(suspects[i]) if suspects is not None else -1)
            if pfn in self.references:
                ev.references = [self._describe(r) for r in self.references[pfn]]
            out.append(ev)
        return out

    @cached_property
    def orphans(self) -> list[PageEvidence]:
        """Every orphan as an object, for scripts; the report itself uses
        ``found`` and the samples, whose size does not grow with the leak."""
        f = self.found
        return self._evidence(f.pfn, f.suspect)

    def listed_orphans(self) -> list[PageEvidence]:
        """The orphans the report lists: each suspect's sample."""
        f = self.found
        pick = in_sorted(f.pfn, np.fromiter(self.sampled, np.int64, len(self.sampled)))
        return self._evidence(f.pfn[pick], f.suspect[pick])

    @cached_property
    def referenced(self) -> list[PageEvidence]:
        """Every unattributed but referenced allocation, largest first, with
        where it is referenced from."""
        return self._evidence(self.referenced_heads)

    @property
    def referenced_pages(self) -> int:
        orders = self.census.memmap.order_of(self.referenced_heads).astype(np.int64)
        return int((np.int64(1) << orders).sum())

    def pfn_lines(self) -> Iterator[str]:
        """Every orphan as a line ``PFN ORDER REFCOUNT SUSPECT``, a slice at a time."""
        f = self.found
        step = 1 << 16
        for lo in range(0, len(f), step):
            sl = slice(lo, lo + step)
            rows = np.stack([f.pfn[sl], f.order[sl].astype(np.int64), f.refcount[sl].astype(np.int64),
                             f.suspect[sl].astype(np.int64)], axis=1)
            yield "".join(f"{p} {o} {r} {s}\n" for p, o, r, s in rows.tolist())

    def to_json(self) -> dict:
        c = self.census
        return {
            "schema": "vmcore-tools/orphans/2",
            "release": kernel_release(c.prog),
            "page_size": c.memmap.page_size,
            "candidates": self.candidates,
            "orphaned_pages": self.orphaned_pages,
            "orphaned_allocations": len(self.found),
            "referenced_pages": self.referenced_pages,
            "referenced_allocations": int(self.referenced_heads.size),
            "suspects": [asdict(s) for s in self.suspects],
            "orphans": [asdict(o) for o in self.listed_orphans()],
            "referenced": [asdict(r) for r in self._evidence(self.referenced_heads[:REFERENCED_LISTED])],
            "scan": {"bytes": self.scan.bytes_scanned, "seconds": round(self.scan.seconds, 3),
                     "gb_per_s": round(self.scan.gb_per_s, 3)},
            "seconds": round(self.seconds, 3),
            "verdict": verdict(self),
            "coverage": coverage(self),
            "page_owner": self.page_owner,
            "problems": self.problems,
        }


#: Classes whose pages are leak candidates: no walk found their owner, or
#: only their origin is known (page_pool: see ``candidate_heads``).
CANDIDATE_CLASSES = (PageClass.UNATTRIBUTED, PageClass.PAGE_POOL)


def candidate_heads(c: Census) -> np.ndarray:
    """Unattributed and page_pool order-0 pages and compound heads: one per
    allocation, the tails left out a slice of the class array at a time
    (when most of memory is leaked, an array of every unattributed page and
    its head is tens of bytes per page).

    Fact: a page_pool page keeps its pool's signature (``pp_magic``, 5.14
    to 7.3 at least) from the moment the pool allocates it to the moment
    the pool frees it.  The pool holds it only while it waits in
    the pool's alloc cache or ptr_ring, arrays of page pointers in the
    pool's own memory (slab or kvmalloc'd); handed out, it is held by
    whoever took it (a driver's rx ring, an skb's frags, an XDP frame).  A
    page taken and never given back is what a pool's "N inflight" at
    shutdown counts: marked, and held by nobody.  So the mark says where a
    page came from, not that anyone holds it."""
    return c.pfns_of(*CANDIDATE_CLASSES, keep=lambda un: c.memmap.heads_of(un) == un, step=1 << 18)


def orphans(prog: drgn.Program, census: Census | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> OrphanReport:
    """Census (unless given), reference scan, evidence and suspects."""
    t0 = time.monotonic()
    c = census if census is not None else run_census(prog, progress)
    a = c.memmap
    heads = candidate_heads(c)
    head_refcounts = c.refcounts(heads)     # read once: the scan's run rule and the orphans need them
    scan = scan_references(c, heads, progress, head_refcounts)
    problems = list(scan.problems)
    references = dict(scan.references)
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        kept, changed = _confirm_live(c, heads, references, progress)
        head_refcounts, heads = head_refcounts[in_sorted(heads, kept)], kept
        if changed:
            problems.append(f"{changed} unreferenced allocation(s) changed owner or size while read (live): "
                            "not reported")
    checked = int(heads.size)
    is_ref = in_sorted(heads, np.fromiter(references, np.int64, len(references)))
    ref_heads = heads[is_ref]
    ref_heads = ref_heads[c.classes[ref_heads] == PageClass.UNATTRIBUTED]   # a held page_pool page is owned
    ref_orders = a.order_of(ref_heads).astype(np.int64)
    ref_heads = ref_heads[np.lexsort((ref_heads, -ref_orders))]
    unref = ~is_ref
    del is_ref
    # the orphans' part of each candidate array, kept in the array's own memory
    pfn, refcount = compact(heads, unref), compact(head_refcounts.astype(np.int32, copy=False), unref)
    del heads, head_refcounts, unref
    found = Orphans(pfn, a.order_of(pfn).astype(np.uint8, copy=False), refcount, np.full(pfn.size, -1, np.int16))
    sampled: dict[int, PageSample] = {}
    records: dict[int, PageOwner] = {}
    suspects = run_stage("suspects", lambda: group_suspects(c, found, sampled, records, problems), [], problems)
    return OrphanReport(c, scan, found, ref_heads, references, suspects, sampled, records,
                        time.monotonic() - t0, problems, c.page_owner_state, checked)


def _confirm_live(c: Census, heads: np.ndarray, references: dict[int, list[Reference]],
                  progress: Callable[[str, int, int], None] | None) -> tuple[np.ndarray, int]:
    """A running kernel changes while it is read: a page allocated after the
    memmap was read can be stored into memory the scan took for free, and
    look orphaned.  A leaked page stays put, so a second census and scan
    must agree: an orphan of the first pass that the second finds referenced
    gets the second pass's references; one that is no longer an unattributed
    allocation of the same order is dropped.  Returns the heads kept and how
    many were dropped."""
    again = run_census(c.prog, progress)
    heads2 = candidate_heads(again)
    scan2 = scan_references(again, heads2, progress)
    unreferenced = heads[~in_sorted(heads, np.fromiter(references, np.int64, len(references)))]
    same = np.isin(unreferenced, heads2) & (again.memmap.order_of(unreferenced) == c.memmap.order_of(unreferenced))
    for h in unreferenced[same].tolist():
        if h in scan2.references:
            references[h] = scan2.references[h]
    return np.setdiff1d(heads, unreferenced[~same]), int((~same).sum())


# --- suspects ------------------------------------------------------------------

def refcount_pattern(refcount: np.ndarray) -> np.ndarray:
    """Index into ``PATTERNS`` per refcount (uint8): bias-like (an rx
    ring's pagecnt_bias was lost with the page), 1 (fresh), or other."""
    out = np.full(refcount.size, 2, np.uint8)
    out[refcount == 1] = 1
    out[refcount >= BIAS_LIKE] = 0
    return out


def even_sample(n: int, k: int = SAMPLE) -> np.ndarray:
    """``min(n, k)`` ranks spread evenly over ``range(n)``."""
    return np.arange(n) if n <= k else np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def in_sorted(sorted_values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Which of ``sorted_values`` (sorted, unique) are in ``wanted``: a bool
    per value, by binary search of the few wanted ones."""
    out = np.zeros(sorted_values.size, bool)
    if sorted_values.size and wanted.size:
        i = np.minimum(np.searchsorted(sorted_values, wanted), sorted_values.size - 1)
        out[i[sorted_values[i] == wanted]] = True
    return out


def compact(values: np.ndarray, keep: np.ndarray, step: int = 1 << 18) -> np.ndarray:
    """``values[keep]``, moved to the front of ``values`` itself a slice at a
    time (a slice's kept values never land past where it starts), and
    returned as a view of it: no second array as long as the first."""
    end = 0
    for lo in range(0, values.size, step):
        part = values[lo:lo + step][keep[lo:lo + step]]
        values[end:end + part.size] = part
        end += part.size
    return values[:end]


def members_at(mask: np.ndarray, ranks: np.ndarray, step: int = 1 << 18) -> np.ndarray:
    """Indexes of the members of ``mask`` at the given ranks (sorted), found
    a slice at a time (no index array of all members)."""
    out, seen, want = [], 0, 0
    for lo in range(0, mask.size, step):
        part = mask[lo:lo + step]
        n = int(np.count_nonzero(part))
        if want < ranks.size and ranks[want] < seen + n:
            end = np.searchsorted(ranks, seen + n)
            out.append(lo + np.flatnonzero(part)[ranks[want:end] - seen])
            want = end
        seen += n
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def pfn_ranges(pfn: np.ndarray, mask: np.ndarray, order: int,
               step: int = 1 << 18) -> tuple[list[list[int]], int]:
    """Runs of contiguous pages covered by the allocations ``pfn[mask]``
    (sorted, all of ``order``): the first ``RANGES_LISTED`` as [first PFN,
    pages], and how many in all; a slice at a time."""
    size = 1 << order
    listed: list[list[int]] = []
    count, prev = 0, -2 * size          # the last allocation of the slices before
    for lo in range(0, pfn.size, step):
        p = pfn[lo:lo + step][mask[lo:lo + step]]
        if not p.size:
            continue
        starts = np.flatnonzero(np.diff(p, prepend=prev) != size)
        lead = int(starts[0]) if starts.size else p.size      # allocations going on with the last run
        if lead and listed and count == len(listed):
            listed[-1][1] += lead * size
        ends = np.append(starts[1:], p.size)
        for s_, e_ in zip(starts[:RANGES_LISTED - len(listed)].tolist(), ends.tolist()):
            listed.append([int(p[s_]), (e_ - s_) * size])
        count += int(starts.size)
        prev = int(p[-1])
    return listed, count


def group_suspects(c: Census, found: Orphans, sampled: dict[int, PageSample],
                   records: dict[int, PageOwner], problems: list[str]) -> list[Suspect]:
    """Group the orphans, largest group first, and set ``found.suspect``.

    Groups are made by order and refcount pattern, over all orphans at once
    (a byte per orphan).  Each group's bytes, flags and page_owner records
    are read from an even sample of ``SAMPLE`` allocations (into ``sampled``
    and ``records``).  A group read whole is split by the device its frames
    were sent to, by its allocation site, by what its flags say it was
    (``evidence.page_history``) and, for page_pool pages, by whom their
    pool serves; a larger one stays whole, with its sample's shares."""
    histories: dict[int, str] = {}
    pool_owners: dict[int, str] = {}
    sniff = run_stage("evidence: frames", lambda: Sniffer(c), None, problems)
    owners = c.page_owners
    ring_orders = c.rings.orders_by_driver(c.memmap)
    key = found.order * np.uint8(len(PATTERNS)) + refcount_pattern(found.refcount)
    groups: list[tuple[str, int, np.ndarray, tuple[str | None, str | None], str | None]] = []
    for k in np.unique(key).tolist():
        mask = key == k
        n = int(np.count_nonzero(mask))
        pick = members_at(mask, even_sample(n))
        pfns = found.pfn[pick]
        order = k // len(PATTERNS)
        if sniff is not None:
            def read() -> None:
                for p in pfns.tolist():
                    if (s := sniff(p, order)) is not None:
                        sampled[p] = s
            run_stage("evidence: contents", read, None, problems)
        if owners is not None:
            records.update(run_stage("evidence: page_owner", lambda: owners.lookup(pfns), {}, problems))
        histories.update(run_stage("evidence: history", lambda: page_history(c, pfns), {}, problems))
        from_pools = [p for p in pfns.tolist() if histories.get(p) == "page_pool page"]
        if from_pools:
            pool_owners.update(run_stage("evidence: page_pool", lambda: pool_owners_of(c.prog, from_pools), {},
                                         problems))
        pattern = PATTERNS[k % len(PATTERNS)]
        if pick.size < n:
            groups.append((pattern, order, mask, _device(pfns, sampled), None))
            continue
        split: dict[tuple, list[int]] = {}
        for i, p in zip(pick.tolist(), pfns.tolist()):
            s, rec = sampled.get(p), records.get(p)
            dev = (s.frame.netdev, s.frame.driver) if s and s.frame and s.frame.netdev else (None, None)
            split.setdefault((dev, rec.alloc_site if rec else None, histories.get(p), pool_owners.get(p)),
                             []).append(i)
        for (dev, site, _, _), idx in split.items():
            part = np.zeros(found.pfn.size, bool)
            part[idx] = True
            groups.append((pattern, order, part, dev, site))

    sizes = [int(np.count_nonzero(g[2])) << g[1] for g in groups]
    suspects = []
    for sid, g in enumerate(sorted(range(len(groups)), key=lambda g: -sizes[g])):
        pattern, order, mask, (netdev, driver), site = groups[g]
        found.suspect[mask] = sid
        suspects.append(_suspect(c, sid, pattern, order, mask, netdev, driver, site, found, sampled,
                                 ring_orders, histories, pool_owners))
    return suspects


def _device(pfns: np.ndarray, sampled: dict[int, PageSample]) -> tuple[str | None, str | None]:
    """The local device most of a sample's frames were sent to, if most were."""
    devs = Counter((s.frame.netdev, s.frame.driver) for p in pfns.tolist()
                   if (s := sampled.get(p)) and s.frame and s.frame.netdev)
    if devs:
        dev, n = devs.most_common(1)[0]
        if 2 * n > pfns.size:
            return dev
    return None, None


def _suspect(c: Census, sid: int, pattern: str, order: int, mask: np.ndarray, netdev: str | None,
             driver: str | None, site: str | None, found: Orphans, sampled: dict[int, PageSample],
             ring_orders: dict[int, list[str]], histories: dict[int, str],
             pool_owners: dict[int, str]) -> Suspect:
    n = int(np.count_nonzero(mask))
    pfn = found.pfn
    sample = pfn[members_at(mask, even_sample(n))].tolist()
    seen = [sampled[p] for p in sample if p in sampled]
    frames = Counter(s.frame.device for s in seen if s.frame and s.frame.device)
    contents = Counter(s.contents for s in seen)
    nodes: dict[str, int] = {}
    for z in c.zones:           # pfn is sorted: each zone is a slice of it
        lo, hi = np.searchsorted(pfn, [z.start_pfn, z.end_pfn])
        inside = int(np.count_nonzero(mask[lo:hi])) << order
        if inside:
            nodes[str(z.node)] = nodes.get(str(z.node), 0) + inside
    ranges, range_count = pfn_ranges(pfn, mask, order)
    refcount = found.refcount
    s = Suspect(sid, "", n << order, n, [order],
                int(np.min(refcount, where=mask, initial=np.iinfo(np.int32).max)),
                int(np.max(refcount, where=mask, initial=np.iinfo(np.int32).min)),
                netdev, driver, sorted(ring_orders.get(order, [])), site, len(seen), dict(frames),
                dict(contents), nodes, ranges, range_count,
                dict(Counter(histories[p] for p in sample if p in histories)),
                dict(Counter(pool_owners[p] for p in sample if p in pool_owners)))
    s.label = _label(pattern, s)
    return s


def _label(pattern: str, s: Suspect) -> str:
    order_txt = "/".join(str(o) for o in s.orders)
    lo, hi = s.refcount_min, s.refcount_max
    refcount = f"refcount {lo}" if lo == hi else f"refcount {lo}-{hi}"
    what = {
        "bias": f"{refcount}, bias-like: an rx ring's pagecnt_bias was lost with them",
        "fresh": f"refcount 1, {contents_text(s.contents, s.sampled)}",
        "other": refcount,
    }[pattern]
    was_cache = bool(s.history) and sum(s.history.values()) == s.sampled
    if was_cache:       # all of them were page cache: no ring to suspect
        kind = max(s.history, key=s.history.get)
        what = f"{refcount}, {history_text(kind, lo, hi, s.pools)}"
    elif s.history:
        what += "; " + ", ".join(f"{k} released but referenced in {v} of {s.sampled} sampled"
                                 for k, v in sorted(s.history.items()))
    text = f"{s.allocations} order-{order_txt} allocations ({s.pages} pages), {what}"
    whole = s.sampled == s.allocations
    if s.netdev:
        device = device_label(s.netdev, s.driver)
        text += f"; stale frames addressed to {device}"
        if not whole:
            text += f" in {s.frames.get(device, 0)} of {s.sampled} sampled"
    elif s.rings_using_order and not was_cache:
        text += f"; rings using order-{order_txt} pages: {', '.join(s.rings_using_order)}"
    if s.alloc_site:
        text += f"; allocated by {s.alloc_site}"
    return text
