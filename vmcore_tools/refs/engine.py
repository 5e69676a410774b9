"""The page scan's engine, kmemleak-style: does any kernel memory still
point at a candidate page?

kmemleak cannot see pages taken straight from the page allocator.  We do
what it would do for them: read the memory the kernel can reach as 64-bit
words and look for words that name a candidate page.  *What* is read and
*how* a word counts there is the registry's (``registry.ROOTS``, read by
``roots.py``); who holds pages without any such word is too
(``registry.OWNERS``: ``owners.py``, ``runs.py``); the order they run in is
``scan.py``'s.  This module is the state they share and the small API they
use -- never its attributes behind it:

* ``read`` (a ``reader.MemoryReader``): read memory, whose words are then
  matched the way the root being read counts them (``counts``);
* ``add_reference``: a word found naming a page; ``hold``: an owner's claim;
* ``exclude``: memory whose words count in no root; ``naming_only``: slab
  objects whose words name pages without holding them;
* ``read_by_layout``: pages a root read by their layout, not to be read
  again as plain pages;
* ``candidate_of``, ``is_single``, ``references``: what the owners ask.

Stale values are the enemy of a leak detector, so memory that is not live
is not read: free slab objects (a hit in a slab page is confirmed as an
allocated object, ``slab.SlabObjects``), stack below the saved stack
pointer, the cached stacks of dead tasks, and what ``exclude`` names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import drgn
import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.mm.kmalloc import slab_zeroed_on_alloc
from vmcore_tools.mm.memmap import max_block_pages
from vmcore_tools.mm.page_owner import PageOwners
from vmcore_tools.mm.pageflags import were_user_or_cache
from vmcore_tools.mm.slab import SlabObjects
from vmcore_tools.net.skb import skb_head_words
from vmcore_tools.refs.matcher import Matcher, bit_pfns, frag_entries, set_pfn_bits
from vmcore_tools.refs.reader import MemoryReader, Progress, in_spans, merged_spans
from vmcore_tools.refs.references import (KMALLOC_SLACK, PHYSICAL, SKB_FRAG, STRUCT_PAGE, TABLE_ENTRY, Reference,
                                          ScanResult)

#: References kept per page: enough to show where it is held (``_kept``).
MAX_REFS = 4


def _kept(found: list[Reference], source: int, rule: str) -> bool:
    """Whether a reference from ``source`` resting on ``rule``
    (``Reference``) is kept beside the references ``found`` to its page:
    the first ``MAX_REFS``, and past them, up to twice as many, a proved
    one (no ``rule``) from a holder none of those kept is from, as long as
    none of them is a proved one from memory outside the candidates -- so
    that a page a proved word holds is never taken for one that only
    inference holds (``tiers.known_holds``) for want of room."""
    if len(found) < MAX_REFS:
        return True
    if rule or len(found) >= 2 * MAX_REFS:
        return False
    return all(r.source != source and (r.rule or r.source >= 0) for r in found)


def single_bits(census: Census, heads: np.ndarray, refcounts: np.ndarray, step: int = 1 << 18) -> np.ndarray:
    """The unattributed order-0 candidates of refcount 1 among ``heads``
    (sorted, with their ``refcounts``), one bit per PFN, found a slice of
    them at a time: when most of memory is leaked as such pages, a mask
    and a list of them all would be tens of bytes a page."""
    a = census.memmap
    bits = np.zeros(-(-a.nr // 8), np.uint8)
    for lo in range(0, heads.size, step):
        h = heads[lo:lo + step]
        keep = ((a.order_of(h) == 0) & (refcounts[lo:lo + step] == 1)
                & (census.classes[h] == PageClass.UNATTRIBUTED))
        set_pfn_bits(bits, h[keep])
    return bits


class ScanEngine:
    """The state of one page scan: the candidates, the references found,
    and what the roots so far said about the memory still to read."""

    def __init__(self, census: Census, heads: np.ndarray, progress: Progress | None = None,
                 refcounts: np.ndarray | None = None):
        self.census = census
        self.prog = census.prog
        self.memmap = a = census.memmap
        self.matcher = Matcher(a, heads)
        #: unattributed order-0 candidates with refcount 1 (one bit per PFN): what an
        #: alloc_pages_exact() run is made of (a page_pool page is an allocation of its own)
        refcounts = census.refcounts(heads) if refcounts is None else refcounts
        self.singles = single_bits(census, heads, refcounts)
        self.result = ScanResult({})
        self.read = MemoryReader(self.prog, a, self._match, self.result.problems, progress)
        self.read.fork = self
        self.slab_objects = SlabObjects(self.prog, a)
        #: whether a word in a kmalloc object's slack may be stale (registry.INFERENCES, KMALLOC_SLACK)
        self.slack_is_stale = not slab_zeroed_on_alloc(self.prog)
        #: pages in a largest buddy block
        self.max_block = max_block_pages(self.prog)
        #: bytes of a largest buddy block: bounds an skb frag's length and offset
        self.frag_limit = self.max_block << a.page_shift
        #: how words count in the root being read (registry.Root.counts)
        self.counts: frozenset[str] = frozenset()
        #: the kinds of word that are inference in the root being read, and
        #: the rule each rests on (registry.Root.infers)
        self.infers: dict[str, str] = {}
        #: the registry entry being read: its bytes are counted under its name
        self.entry = "setup"
        #: what a root keeps from one closure round to the next (its own key)
        self.scratch: dict[str, Any] = {}
        self._by_layout: set[int] = set()
        self._naming_only: set[int] = set()
        self._excluded: list[tuple[int, int]] = []
        self._excluded_spans: tuple[int, np.ndarray, np.ndarray] = (0, np.zeros(0, np.uint64),
                                                                     np.zeros(0, np.uint64))

    # -- the API of roots and owners -------------------------------------------

    @property
    def references(self) -> dict[int, list[Reference]]:
        """Candidate head PFN -> the references found so far."""
        return self.result.references

    @property
    def problems(self) -> list[str]:
        return self.result.problems

    @property
    def page_owners(self) -> PageOwners | None:
        return self.census.page_owners

    def add_reference(self, ref: Reference) -> None:
        """A word found naming candidate ``ref.target`` (``_kept`` says how many are kept per page)."""
        if ref.source < 0:
            ref.source = self.source_of(ref.address)
        found = self.result.references.setdefault(ref.target, [])
        if _kept(found, ref.source, ref.rule):
            found.append(ref)

    def hold(self, ref: Reference) -> None:
        """An owner's claim on ``ref.target``: always recorded."""
        if ref.source < 0:
            ref.source = self.source_of(ref.address)
        self.result.references.setdefault(ref.target, []).append(ref)

    def source_of(self, address: int) -> int:
        """The candidate (head PFN) whose memory holds ``address`` -- its
        page, by the direct map, or its ``struct page`` --, -1 for none."""
        return int(self._sources(np.array([address], np.uint64))[0])

    def exclude(self, spans: Iterable[tuple[int, int]]) -> None:
        """``[start, end)`` spans whose words count in no root: not read where
        a root can leave them out, and dropped where it reads them."""
        self._excluded.extend(spans)

    @property
    def excluded(self) -> list[tuple[int, int]]:
        return self._excluded

    def naming_only(self, objects: Iterable[int]) -> None:
        """Slab objects (their addresses) whose words name pages without holding them."""
        self._naming_only |= set(objects)

    def read_by_layout(self, pfns: Iterable[int]) -> None:
        """Pages a root read by their layout: not read again as plain pages."""
        self._by_layout.update(pfns)

    @property
    def by_layout(self) -> np.ndarray:
        return np.fromiter(self._by_layout, np.int64, len(self._by_layout))

    def candidate_of(self, pfns: np.ndarray) -> np.ndarray:
        """The candidate (head PFN) each PFN lies in, -1 where none."""
        return self.matcher.candidate(pfns)

    def is_single(self, pfn: int) -> bool:
        """Whether ``pfn`` is an unattributed order-0 candidate of refcount 1."""
        return pfn < self.memmap.nr and bool(self.singles[pfn >> 3] >> (pfn & 7) & 1)

    def match(self, words: np.ndarray, physical: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """The hits in ``words`` a root reads itself (``Matcher.match``), counted as scanned."""
        self._count(words.size * 8)
        return self.matcher.match(words, physical)

    def _count(self, nbytes: int) -> None:
        by = self.result.bytes_by_root
        self.result.bytes_scanned += nbytes
        by[self.entry] = by.get(self.entry, 0) + nbytes

    def were_user_or_cache(self, pfns: np.ndarray) -> np.ndarray:
        """Whether each of the sorted ``pfns`` was page cache or anonymous
        memory since it was allocated (``pageflags.were_user_or_cache``):
        read in one pass over their struct pages."""
        w = self.memmap.read(pfns)
        return np.isin(pfns, w.pfn[were_user_or_cache(self.prog, w.flags, w.mapping)])

    def is_skb_head(self, ref: Reference) -> bool:
        """Whether ``ref`` is an allocated skb's ``head`` pointer
        (``skb.skb_head_words``): a page given back alone."""
        if ref.region != "slab" or not ref.holder:
            return False
        try:
            obj = self.slab_objects(ref.holder)
        except (drgn.FaultError, ValueError):      # a slab that cannot be read names no skb
            return False
        return obj is not None and ref.address - ref.holder == self.skb_head_words.get(obj.cache)

    @cached_property
    def skb_head_words(self) -> dict[str, int]:
        """The skb caches and where each object's ``head`` is (``skb.skb_head_words``)."""
        return skb_head_words(self.prog)

    def single_pfns(self) -> np.ndarray:
        return bit_pfns(self.singles, self.memmap.nr)

    @contextmanager
    def counting(self, counts: frozenset[str]) -> Iterator[None]:
        """Words read inside the block count as ``counts``."""
        kept, self.counts = self.counts, counts
        try:
            yield
        finally:
            self.counts = kept

    # -- a read split over forked processes (reader.Fork) ---------------------------

    def begin(self) -> None:
        """In a forked process: find references apart from those found before."""
        self.result.references = {}
        self.result.bytes_scanned, self.result.bytes_by_root = 0, {}

    def collect(self) -> tuple[dict[int, list[Reference]], int, dict[str, int]]:
        """In a forked process: what it found and read."""
        return self.result.references, self.result.bytes_scanned, self.result.bytes_by_root

    def merge(self, found: tuple[dict[int, list[Reference]], int, dict[str, int]]) -> None:
        """What a forked process found, kept as ``_match`` keeps a reference."""
        refs, scanned, by_root = found
        for head, new in refs.items():
            kept = self.result.references.setdefault(head, [])
            for r in new:
                if _kept(kept, r.source, r.rule):
                    kept.append(r)
            if not kept:
                del self.result.references[head]
        self.result.bytes_scanned += scanned
        for entry, n in by_root.items():
            self.result.bytes_by_root[entry] = self.result.bytes_by_root.get(entry, 0) + n

    # -- matching ----------------------------------------------------------------

    def _match(self, data: bytes, base: int, region: str) -> None:
        """Match the words of ``data`` (read at ``base``) the way the root
        being read counts them (``counts``)."""
        words = np.frombuffer(data, "<u8", len(data) // 8)
        self._count(len(data))
        refs, counts = self.result.references, self.counts
        physical = PHYSICAL in counts or TABLE_ENTRY in counts
        for idx, heads, kind in self.matcher.match(words, physical):
            if kind == STRUCT_PAGE and SKB_FRAG in counts and STRUCT_PAGE not in counts:
                keep = frag_entries(words, idx, self.frag_limit,
                                    (int(self.matcher.memmap), int(self.matcher.memmap_end)))
            else:
                keep = np.full(idx.size, kind in counts)
            if self._excluded:
                keep &= ~self._in_excluded(np.uint64(base) + idx.astype(np.uint64) * np.uint64(8))
            idx, heads = idx[keep], heads[keep]
            sources = self._sources(np.uint64(base) + idx.astype(np.uint64) * np.uint64(8)).tolist()
            rule = self.infers.get(kind, "")
            for i, head, value, source in zip(idx.tolist(), heads.tolist(), words[idx].tolist(), sources):
                found = refs.setdefault(head, [])
                if _kept(found, source, rule):       # a slab word's own rule (_in_live_object) only narrows it
                    ref = Reference(head, kind, base + 8 * i, region, value=value, source=source, rule=rule)
                    if (region != "slab" or self._in_live_object(ref)) and _kept(found, source, ref.rule):
                        found.append(ref)
                if not found:
                    del refs[head]

    def _sources(self, addresses: np.ndarray) -> np.ndarray:
        """``source_of`` for each of ``addresses`` (uint64)."""
        a = self.memmap
        pfns = a.pfns_of_virts(addresses)
        in_memmap = pfns < 0
        if in_memmap.any():
            pfns[in_memmap] = a.pfns_of_page_ptrs(addresses[in_memmap])
        out = np.full(pfns.size, -1, np.int64)
        some = pfns >= 0
        out[some] = self.candidate_of(pfns[some])
        return out

    def _in_excluded(self, addresses: np.ndarray) -> np.ndarray:
        """Whether each address lies in an excluded span (merged and sorted once per change)."""
        n, lo, hi = self._excluded_spans
        if n != len(self._excluded):
            lo, hi = merged_spans(self._excluded)
            self._excluded_spans = (len(self._excluded), lo, hi)
        return in_spans(addresses, lo, hi)

    def _in_live_object(self, ref: Reference) -> bool:
        """Whether a hit in a slab page is in an allocated object (naming it);
        a free object's words are stale, and so are those of an object
        ``naming_only`` named, and those past the object in its slot
        (``object_size`` on: SLUB's free pointer, redzones and tracking, and
        alignment padding, which keeps what the slab page held before --
        kmemleak too scans an object's ``object_size`` bytes alone).  On a
        kernel that does not zero objects it hands out, a word in a kmalloc
        object's slack (``kmalloc``) holds only by inference
        (``KMALLOC_SLACK``)."""
        try:
            obj = self.slab_objects(ref.address)
        except (drgn.FaultError, ValueError) as e:
            ref.where = f"slab page (object not identified: {e})"
            return True
        if obj is None or obj.allocated is False or obj.address in self._naming_only:
            return False
        offset = ref.address - obj.address
        if obj.object_size is not None and offset >= obj.object_size:
            return False        # the slot's metadata or padding: no word of the object's user
        ref.where = f"slab {obj.cache} object {obj.address:#x}+{offset:#x}"
        ref.holder = obj.address
        if self.slack_is_stale and obj.slack is not None and offset >= obj.slack and not ref.rule:
            ref.rule = KMALLOC_SLACK
            ref.where += f" (past {obj.slack} bytes: may be past the request, unwritten)"
        return True
