"""Orphaned pages: allocated, owned by nobody, referenced from nowhere.

A *candidate* is a page the census left in "unattributed" (no page-type,
flag, list, vmap area or ring holds it), counted once per allocation: an
order-0 page or the head of a compound page.  The conservative reference
scan (``refs.scan``) then splits the candidates into

* **orphaned**: no word of live kernel memory points at the page -- what a
  page-allocator leak such as the i40e rx-buffer leak leaves behind;
* **unattributed but referenced**: someone holds it (a large kmalloc, a
  driver's DMA ring, a hash table), and we say where;
* **held only by inference**: no word the dump proves live holds it, only
  a rule that guesses where the dump is silent (an allocation run, a
  physical-address match: ``refs.tiers``).  Not orphaned, not held: if it
  is a leak, the report shows what it looks like (``InferredGroup``).

A leak can be most of memory (the i40e case: 100 GB of 128), so the orphans
are kept as arrays (PFN, order, refcount pattern, suspect: 8 bytes per
allocation, 12 where PFNs need 64 bits) and grouped by what a vectorized
pass can tell -- order and refcount pattern.  Evidence that needs a page's bytes or records (a stale frame
matched to a local net device, the contents, the page_owner stack) is read
from a bounded sample of each group (``SAMPLE``).  A group no larger than
the sample is read whole and split by device and allocation site exactly;
a larger group keeps its exact counts and says what share of its sample
showed each device (``suspects.py``).  The report lists run-length PFN
ranges and the sample; ``pfn_lines()`` (``orphans --pfns FILE``) gives every
orphan, and ``verdict.orphans_json`` the whole report as JSON.

    >>> from vmcore_tools import orphans
    >>> r = orphans(prog)
    >>> for s in r.suspects: print(s.label)
    28 order-0/1 pages ... frames addressed to eth2 (i40e)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import drgn
import numpy as np

from vmcore_tools.census.census import Census, census as run_census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.core.stages import run_stage
from vmcore_tools.leaks.candidates import Orphans, candidate_heads, compact, confirm_live, in_sorted
from vmcore_tools.leaks.evidence import Describer, Frame, PageSample, node_of
from vmcore_tools.leaks.suspects import BIAS_LIKE, Suspect, group_suspects, refcount_summary
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.mm.page_owner import PageOwner
from vmcore_tools.refs.references import Reference, ScanResult
from vmcore_tools.refs.scan import scan_references
from vmcore_tools.refs.tiers import inferred_holds, known_holds

#: referenced allocations listed, largest first
REFERENCED_LISTED = 200


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


#: allocations named per group of the inferred tier
INFERRED_SAMPLE = 8


@dataclass
class InferredGroup:
    """Allocations of the inferred tier held by one rule, of one order and
    refcount pattern: what they look like if they are leaks."""

    rule: str
    order: int
    refcount: int           # 1, or -1 for more than one
    allocations: int = 0
    pages: int = 0
    sample: list[int] = field(default_factory=list)   # head PFNs

    @property
    def label(self) -> str:
        refs = "refcount 1" if self.refcount == 1 else "refcount > 1"
        return f"{self.pages} pages in {self.allocations} order-{self.order} allocations ({refs}) held by {self.rule}"


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
    #: referenced candidates held only by inference (refs.tiers), largest first,
    #: and the rule each rests on: not in ``referenced_heads``
    inferred_heads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inferred_rules: dict[int, str] = field(default_factory=dict)
    #: False when the reference scan failed: no candidate was checked, no orphan is known
    scanned: bool = True

    @property
    def orphaned_pages(self) -> int:
        return self.found.pages

    @cached_property
    def _node(self) -> Callable[[np.ndarray], np.ndarray]:
        return node_of(self.census)

    @cached_property
    def _describe(self) -> Describer:
        return Describer(self.census)

    def evidence(self, pfns: np.ndarray, suspects: np.ndarray | None = None) -> list[PageEvidence]:
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
        return self.evidence(f.pfn, f.suspect)

    def listed_orphans(self) -> list[PageEvidence]:
        """The orphans the report lists: each suspect's sample."""
        f = self.found
        pick = in_sorted(f.pfn, np.fromiter(self.sampled, np.int64, len(self.sampled)))
        return self.evidence(f.pfn[pick], f.suspect[pick])

    @cached_property
    def referenced(self) -> list[PageEvidence]:
        """Every unattributed but referenced allocation, largest first, with
        where it is referenced from."""
        return self.evidence(self.referenced_heads)

    @cached_property
    def held_by_inference(self) -> list[PageEvidence]:
        """Every allocation of the inferred tier, largest first, with the
        references that hold it (each resting on a rule)."""
        return self.evidence(self.inferred_heads)

    @property
    def referenced_pages(self) -> int:
        orders = self.census.memmap.order_of(self.referenced_heads).astype(np.int64)
        return int((np.int64(1) << orders).sum())

    @property
    def inferred_pages(self) -> int:
        return int((np.int64(1) << self.census.memmap.order_of(self.inferred_heads).astype(np.int64)).sum())

    @cached_property
    def inferred(self) -> list[InferredGroup]:
        """The inferred tier by rule and by what its allocations look like
        (order, and refcount 1 or more), most pages first."""
        heads = self.inferred_heads
        orders = self.census.memmap.order_of(heads).tolist()
        refcounts = self.census.refcounts(heads).tolist()
        groups: dict[tuple[str, int, bool], InferredGroup] = {}
        for head, order, refcount in zip(heads.tolist(), orders, refcounts):
            key = (self.inferred_rules[head], order, refcount == 1)
            g = groups.setdefault(key, InferredGroup(key[0], order, refcount if refcount == 1 else -1))
            g.allocations += 1
            g.pages += 1 << order
            if len(g.sample) < INFERRED_SAMPLE:
                g.sample.append(head)
        return sorted(groups.values(), key=lambda g: (-g.pages, g.rule, g.order))

    def pfn_lines(self) -> Iterator[str]:
        """Every orphan as a line ``PFN ORDER REFCOUNT SUSPECT``, a slice at a
        time (the refcounts read again from the memmap, a slice at a time)."""
        f = self.found
        return _pfn_lines(self.census, f.pfn, f.order, f.suspect)

    def inferred_pfn_lines(self) -> Iterator[str]:
        """Every allocation of the inferred tier in the ``pfn_lines`` format (suspect -1)."""
        heads = self.inferred_heads
        return _pfn_lines(self.census, heads, self.census.memmap.order_of(heads), np.full(heads.size, -1, np.int64))


def _pfn_lines(c: Census, pfn: np.ndarray, order: np.ndarray, suspect: np.ndarray) -> Iterator[str]:
    step = 1 << 16
    for lo in range(0, pfn.size, step):
        sl = slice(lo, lo + step)
        rows = np.stack([pfn[sl], order[sl].astype(np.int64), c.refcounts(pfn[sl]).astype(np.int64),
                         suspect[sl].astype(np.int64)], axis=1)
        yield "".join(f"{p} {o} {r} {s}\n" for p, o, r, s in rows.tolist())



def orphans(prog: drgn.Program, census: Census | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> OrphanReport:
    """Census (unless given), reference scan, evidence and suspects."""
    t0 = time.monotonic()
    c = census if census is not None else run_census(prog, progress)
    a = c.memmap
    problems: list[str] = []

    def scan_candidates() -> tuple[np.ndarray, np.ndarray, ScanResult]:
        heads = candidate_heads(c)
        head_refcounts = c.refcounts(heads)     # read once: the scan's run rule and the orphans need them
        return heads, head_refcounts, scan_references(c, heads, progress, head_refcounts)
    scanned = run_stage("reference scan", scan_candidates, None, problems)
    if scanned is None:     # no candidate checked: no orphan known, none claimed
        none = np.zeros(0, np.int64)
        return OrphanReport(c, ScanResult({}), Orphans(none, none.astype(np.uint8), none.astype(np.uint8),
                                                        none.astype(np.int16)),
                            none, {}, [], {}, {}, time.monotonic() - t0, problems, c.page_owner_state,
                            scanned=False)
    heads, head_refcounts, scan = scanned
    del scanned
    problems += scan.problems
    references = dict(scan.references)
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        kept, changed = confirm_live(c, heads, references, progress)
        head_refcounts, heads = head_refcounts[in_sorted(heads, kept)], kept
        if changed:
            problems.append(f"{changed} unreferenced allocation(s) changed owner or size while read (live): "
                            "not reported")
    checked = int(heads.size)
    is_ref = in_sorted(heads, np.fromiter(references, np.int64, len(references)))
    ref_heads = heads[is_ref]
    ref_heads = ref_heads[c.classes[ref_heads] == PageClass.UNATTRIBUTED]   # a held page_pool page is owned
    tier = inferred_holds(references, known_holds(references))
    by_inference = in_sorted(ref_heads, np.array(sorted(tier), np.int64))
    inferred = largest_first(a, ref_heads[by_inference])
    ref_heads = largest_first(a, ref_heads[~by_inference])
    unref = ~is_ref
    del is_ref
    # the orphans' part of each candidate array, kept in the array's own memory
    pfn, refcount = compact(heads, unref), compact(head_refcounts.astype(np.int32, copy=False), unref)
    del heads, head_refcounts, unref
    order = a.order_of(pfn).astype(np.uint8, copy=False)
    summary = refcount_summary(pfn, order, refcount)
    del refcount        # what grouping needs of it is in the summary
    found = Orphans(pfn, order, summary.pattern, np.full(pfn.size, -1, np.int16), summary.ranges, summary.few)
    sampled: dict[int, PageSample] = {}
    records: dict[int, PageOwner] = {}
    suspects = run_stage("suspects", lambda: group_suspects(c, found, sampled, records, problems), [], problems)
    return OrphanReport(c, scan, found, ref_heads, references, suspects, sampled, records,
                        time.monotonic() - t0, problems, c.page_owner_state, checked,
                        inferred, {h: tier[h] for h in inferred.tolist()})


def largest_first(a: Memmap, heads: np.ndarray) -> np.ndarray:
    """``heads`` by order, largest first, then by PFN."""
    return heads[np.lexsort((heads, -a.order_of(heads).astype(np.int64)))]



