"""The page census: every physical page classified by owner, and reconciled
with the kernel's own counters.

    >>> from vmcore_tools import census
    >>> c = census(prog)
    >>> c.totals()["slab"]
    11235
    >>> c.class_of(pfn)
    <PageClass.UNATTRIBUTED: 20>

``walks.py`` gathers the evidence (free lists, vmap areas, per-cpu chunks,
page_frag caches), ``classify.py`` holds the rules that turn it into
classes, and ``counters.py`` reads the kernel's own counters to reconcile
with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import drgn
import numpy as np

from vmcore_tools.census.blocks import claim_blocks
from vmcore_tools.census.classify import Evidence, ShmemMappings, claim, classify
from vmcore_tools.census.classes import KERNEL_CLASSES, UNCLAIMED, PageClass, class_counts, pfns_in
from vmcore_tools.census.damage import pfn_runs
from vmcore_tools.core.features import kernel_release
from vmcore_tools.mm.page_owner import PageOwners, page_ext_pfns, page_owner_state
from vmcore_tools.mm.memmap import CHUNK_PAGES, Memmap, max_block_pages
from vmcore_tools.mm.pagetables import PageTableWalk, walk_page_tables
from vmcore_tools.net.rings import RingScan, walk_rings
from vmcore_tools.core.stages import damage_line, run_stage
from vmcore_tools.mm.counters import kernel_counters
from vmcore_tools.core.arrays import unique
from vmcore_tools.census.walks import (DeviceRange, VmapPages, ZoneFree, hugetlb_dtor, ring_heads,
                                       walk_device_pages, walk_free_lists, walk_page_frags, walk_pcp_lists,
                                       walk_vmalloc)


#: runs of damaged struct pages listed, in the census and its problem line
DAMAGED_LISTED = 32

@dataclass
class Census:
    prog: drgn.Program
    memmap: Memmap                # where the struct pages are; compound heads and orders
    classes: np.ndarray           # uint8 PageClass per PFN (the census's only per-page array)
    zones: list[ZoneFree]
    counters: dict[str, int]      # kernel's own counters, in pages
    problems: list[str]
    rings: RingScan               # NIC rings and other page holders found by the walkers
    page_tables: PageTableWalk    # page-table pages and the kernel's own mappings
    vmap: "VmapPages"             # which vmap area maps each vmalloc'd page
    device: list[DeviceRange]     # ZONE_DEVICE ranges (pmem, device memory): not RAM
    #: the first DAMAGED_LISTED runs of damaged struct pages (census/damage.py): [first PFN, pages]
    damaged: list[list[int]] = field(default_factory=list)

    @cached_property
    def page_owner_state(self) -> str:
        """``page_owner.page_owner_state()`` of this kernel."""
        return page_owner_state(self.prog)

    @cached_property
    def page_owners(self) -> PageOwners | None:
        """The page_owner reader, one per census so that each stack is
        resolved once; None unless the kernel keeps records (``on``)."""
        return PageOwners(self.prog) if self.page_owner_state == "on" else None

    def class_of(self, pfn: int) -> PageClass:
        return PageClass(int(self.classes[pfn]))

    def totals(self) -> dict[str, int]:
        counts = class_counts(self.classes)
        return {c.label: int(counts[c]) for c in PageClass if c != PageClass.NO_PAGE}

    @property
    def total_pages(self) -> int:
        return int(self.classes.size - class_counts(self.classes)[PageClass.NO_PAGE])

    def pfns_of(self, *klasses: PageClass, keep: Callable[[np.ndarray], np.ndarray] | None = None,
                step: int = 1 << 20, dtype: np.dtype = np.dtype(np.int64)) -> np.ndarray:
        """PFNs in any of ``klasses`` (``classes.pfns_in``)."""
        return pfns_in(self.classes, *klasses, keep=keep, step=step, dtype=dtype)

    def decomposition(self) -> dict[str, int]:
        """``T = U + K + S + C + F`` in pages: user (anon), kernel, shared
        (shmem), cache (file), free.  T is RAM: device pages are not in it."""
        t = self.totals()
        kernel = sum(t[c.label] for c in KERNEL_CLASSES)
        return {
            "T": self.total_pages - t["unreadable"] - t["device"] - t["damaged"],
            "U": t["anon"],
            "K": kernel,
            "S": t["shmem"],
            "C": t["file"],
            "F": t["free"] + t["free_pcp"],
            "unreadable": t["unreadable"],
            "damaged": t["damaged"],
        }

    def meminfo(self) -> dict[str, dict]:
        """``/proc/meminfo``-style figures from the census beside the
        kernel's own counter for each (kB; ``kernel_kb`` None where the
        kernel keeps none), with why they may differ."""
        t = self.totals()
        kb = (1 << self.memmap.page_shift) // 1024
        k = self.counters

        def row(ours: int, kernel: int | None, note: str = "") -> dict:
            return {"census_kb": ours * kb, "kernel_kb": None if kernel is None else kernel * kb,
                    "note": note}
        return {
            "MemTotal": row(self.total_pages - t["reserved"] - t["unreadable"] - t["device"], k.get("totalram"),
                            "pages not reserved, device memory left out"),
            "MemFree": row(t["free"], k.get("free"), "buddy free lists"),
            "FreePcp": row(t["free_pcp"], None, "per-CPU lists, not in MemFree"),
            "Cached+Shmem": row(t["file"] + t["shmem"], k.get("file"), "NR_FILE_PAGES"),
            "Shmem": row(t["shmem"], k.get("shmem")),
            "AnonPages": row(t["anon"], k.get("anon")),
            "Slab": row(t["slab"], k.get("slab"), "the kernel adds large kmalloc"),
            "KernelStack": row(t["kernel_stack"], None if "kernel_stack_kb" not in k
                               else k["kernel_stack_kb"] // kb),
            "PageTables": row(t["page_table"], k.get("page_tables")),
            "KernelPageTables": row(t["kernel_page_table"], None, "untyped tables, counted nowhere"),
            "VmallocUsed": row(t["vmalloc"] + t["kernel_stack"], k.get("vmalloc"), "stacks included"),
            "NicRings": row(t["nic_ring"], None),
            "Unexplained": row(t["unattributed"], None, "unattributed kernel memory"),
        }

    def by_zone(self) -> dict[str, dict[str, int]]:
        """Class totals per ``node N zone NAME`` (pages)."""
        out = {}
        for z in self.zones:
            counts = class_counts(self.classes[z.start_pfn:z.end_pfn])
            out[f"node {z.node} {z.zone}"] = {c.label: int(counts[c]) for c in PageClass
                                              if c != PageClass.NO_PAGE and counts[c]}
        return out

    def ring_rows(self) -> list[dict]:
        """One row per ring: slots, pages and the bias sanity check.

        ``page_count - pagecnt_bias`` is what the stack holds of a slot's page; a
        negative value means the ring believes it owns more references than the
        page has (a double put, or a page reused behind the ring's back)."""
        m = self.memmap
        rows = []
        for r in self.rings.rings:
            refcount = self.refcounts(r.pfn)
            has_bias = r.bias >= 0
            stack = refcount[has_bias] - r.bias[has_bias]
            heads = unique(m.heads_of(r.all_pfns()))
            orders = m.order_of(heads).astype(np.int64)
            outside = np.setdiff1d(r.extra_heads(m), m.heads_of(r.pfn))
            rows.append({
                "driver": r.driver, "device": r.device, "kind": r.kind, "queue": r.queue,
                "slots": r.count, "populated": r.populated, "pages": int((1 << orders).sum()),
                "orders": sorted(set(orders.tolist())),
                "outside_slots": int(outside.size),
                "stack_held_slots": int(np.count_nonzero(stack > 0)),
                "bias_anomalies": int(np.count_nonzero(stack < 0)),
                "indices": r.indices, "stats": r.stats, "problems": r.problems,
            })
        return rows

    def refcounts(self, pfns: np.ndarray) -> np.ndarray:
        """``_refcount`` of each PFN (int32, in the order given), read now from the memmap."""
        return self.memmap.refcounts(pfns)

    def to_json(self) -> dict:
        return {
            "schema": "vmcore-tools/census/1",
            "release": kernel_release(self.prog),
            "page_size": 1 << self.prog["PAGE_SHIFT"].value_(),
            "total_pages": self.total_pages,
            "classes": self.totals(),
            "decomposition": self.decomposition(),
            "counters": self.counters,
            "meminfo": self.meminfo(),
            "by_zone": self.by_zone(),
            "zones": [z.to_json() for z in self.zones],
            "device_ranges": [r.to_json() for r in self.device],
            "damaged_ranges": self.damaged,
            "problems": self.problems,
        }


# --- the census ----------------------------------------------------------------

def free_memory(prog: drgn.Program, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The free lists alone (what ``buddy`` shows): every zone's buddy and
    per-CPU free pages, checked against ``nr_free`` and NR_FREE_PAGES,
    without classifying the other pages."""
    m = Memmap.from_program(prog)
    problems: list[str] = []
    zones = run_stage("free lists", lambda: walk_free_lists(prog, m), [], problems)
    problems += [p for z in zones for p in z.problems]
    run_stage("per-CPU free lists", lambda: walk_pcp_lists(prog, m, zones), None, problems)
    walked = sum(z.free_pages for z in zones)
    counted = run_stage("kernel counters", lambda: kernel_counters(prog), {}, problems).get("free")
    if counted is not None and counted != walked:
        problems.append(f"buddy walk found {walked} free pages, NR_FREE_PAGES says {counted}")
    return {"schema": "vmcore-tools/buddy/1",
            "release": kernel_release(prog),
            "page_size": 1 << m.page_shift, "free_pages_walked": walked, "nr_free_pages": counted,
            "pcp_pages": sum(z.pcp_pages for z in zones),
            "zones": [z.to_json() for z in zones], "problems": problems}


def no_pages(m: Memmap) -> np.ndarray:
    """The class array of ``m`` before any walk: UNCLAIMED where a struct
    page exists (``m.ranges``), NO_PAGE (0) elsewhere.

    Fact: ``np.zeros`` takes fresh anonymous memory, which the kernel backs
    with its shared zero page until a byte of it is written, and a read
    does not commit it either.  The holes between the memory sections are
    NO_PAGE and nothing writes there (``classify.classify``), so the array
    costs RAM for the pages that exist, however high the highest PFN.
    """
    classes = np.zeros(m.nr, np.uint8)
    for start, end in m.ranges:
        classes[start:end] = UNCLAIMED
    return classes


def census(prog: drgn.Program, progress: Callable[[str, int, int], None] | None = None,
           chunk_pages: int = CHUNK_PAGES) -> Census:
    """Classify every physical page of ``prog``'s kernel, reading
    ``chunk_pages`` struct pages at a time.

    The walks come first and claim the pages they find in the class array;
    then one pass over the memmap, a chunk at a time, decides every page's
    class (``classify``).  No decoded memmap is kept.
    """
    m = Memmap.from_program(prog)
    classes = no_pages(m)
    problems: list[str] = []
    if m.sections_damaged:
        problems.append(damage_line("struct pages", f"the memory sections (mem_section) are damaged "
                                    f"({m.sections_damaged}): the memmap is read through vmemmap up to max_pfn, "
                                    "a hole's struct pages as unreadable"))
    if m.beyond:
        problems.append(damage_line("struct pages", f"{len(m.beyond)} memory section range(s) present past max_pfn "
                                    f"(first: pfn {m.beyond[0][0]}..{m.beyond[0][1]}): a damaged mem_section "
                                    "entry, left out"))

    def stage(name: str, walk, default):
        return run_stage(name, walk, default, problems)

    device = stage("device pages", lambda: walk_device_pages(prog, m, classes), [])
    zones = stage("free lists", lambda: walk_free_lists(prog, m, classes), [])
    none = np.zeros(0, np.int64)
    tables = stage("page tables", lambda: walk_page_tables(prog, m),
                   PageTableWalk(none, none, np.zeros(0, np.uint64)))
    claim(classes, tables.tables, PageClass.KERNEL_PAGE_TABLE)
    rings = walk_rings(prog, m)
    problems += rings.problems
    stage("per-CPU free lists", lambda: walk_pcp_lists(prog, m, zones, classes), None)
    vmap = stage("vmap areas", lambda: walk_vmalloc(prog, m, classes),
                 VmapPages(prog, none, np.zeros(0, np.uint64), np.zeros(0, np.uint64)))
    claim(classes, stage("page_ext tables", lambda: page_ext_pfns(prog, m), none), PageClass.PAGE_EXT)
    ev = Evidence(
        classes=classes,
        page_frag=stage("page_frag caches", lambda: walk_page_frags(prog, m), none),
        nic_ring=ring_heads(m, rings),
        shmem=ShmemMappings(prog),
        hugetlb_dtor=hugetlb_dtor(prog),
    )
    problems[:0] = [p for z in zones for p in z.problems]
    classified = stage("struct pages", lambda: classify(
        prog, m, ev, (lambda d, t: progress("reading struct pages", d, t)) if progress else None,
        chunk_pages) is not None, False)
    if not classified:      # what no walk claimed was not read: not a candidate for a leak
        for start, end in m.ranges:
            span = classes[start:end]
            span[span == UNCLAIMED] = PageClass.UNREADABLE
    damaged = pfn_runs(ev.damaged if ev.damaged is not None else np.zeros(0, np.int64))
    if damaged:
        listed = ", ".join(f"{p}+{n}" for p, n in damaged[:DAMAGED_LISTED])
        problems.append(damage_line("struct pages", f"{sum(n for _, n in damaged)} struct page(s) in "
                                    f"{len(damaged)} range(s) hold a state no kernel writes, counted as damaged: "
                                    f"pfn {listed}{' ...' if len(damaged) > DAMAGED_LISTED else ''}"))
    counters = stage("kernel counters", lambda: kernel_counters(prog), {})
    walked_free = sum(z.free_pages for z in zones)
    if "free" in counters and counters["free"] != walked_free:
        problems.append(f"buddy walk found {walked_free} free pages, NR_FREE_PAGES says {counters['free']}")
    c = Census(prog, m, classes, zones, counters, problems, rings, tables, vmap, device, damaged[:DAMAGED_LISTED])
    if classified:
        stage("multi-page blocks", lambda: claim_blocks(m, classes, max_block_pages(prog), c.page_owners), 0)
    return c
