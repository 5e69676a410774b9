"""The page census: every physical page classified by owner, and reconciled
with the kernel's own counters.

    >>> from vmcore_tools import census
    >>> c = census(prog)
    >>> c.totals()["slab"]
    11235
    >>> c.class_of(pfn)
    <PageClass.UNATTRIBUTED: 20>

Walks here gather evidence (free lists, vmap areas, per-cpu chunks,
page_frag caches); ``classify.py`` holds the rules that turn it into classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import drgn
import numpy as np
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.mm import for_each_vmap_area, vmalloc_to_pfn
from drgn.helpers.linux.mmzone import for_each_online_pgdat
from drgn.helpers.linux.percpu import per_cpu, per_cpu_ptr
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.pid import for_each_task

from .classify import (KERNEL_CLASSES, UNCLAIMED, Evidence, PageClass, ShmemMappings, claim, claim_range,
                       class_counts, classify)
from .features import constant, has_member, has_object, has_symbol, kernel_release, vmcoreinfo_numbers
from .page_owner import PageOwners, page_ext_pfns, page_owner_state
from .pages import CHUNK_PAGES, Memmap
from .pagetables import PageTableWalk, walk_page_tables
from .rings import RingScan, walk_rings
from .stages import run_stage


@dataclass
class ZoneFree:
    node: int
    zone: str
    start_pfn: int
    end_pfn: int
    #: free blocks per order, from walking free_area[order].free_list[mt]
    blocks_walked: list[int]
    #: free_area[order].nr_free as the kernel keeps it
    blocks_counted: list[int]
    #: blocks per (migratetype name, order)
    by_migratetype: dict[str, list[int]]
    pcp_pages: int
    problems: list[str] = field(default_factory=list)

    @property
    def free_pages(self) -> int:
        return sum(n << o for o, n in enumerate(self.blocks_walked))

    def to_json(self) -> dict:
        return {"node": self.node, "zone": self.zone, "start_pfn": self.start_pfn, "end_pfn": self.end_pfn,
                "free_blocks": self.blocks_walked, "nr_free": self.blocks_counted,
                "free_pages": self.free_pages, "pcp_pages": self.pcp_pages,
                "free_by_migratetype": self.by_migratetype, "problems": self.problems}


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

    def pfns_of(self, *klasses: PageClass, step: int = 1 << 20) -> np.ndarray:
        """PFNs in any of ``klasses``, found a slice at a time (no
        page-sized temporary)."""
        wanted = np.array(klasses, np.uint8)
        out = [lo + np.flatnonzero(np.isin(self.classes[lo:lo + step], wanted))
               for lo in range(0, self.classes.size, step)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def decomposition(self) -> dict[str, int]:
        """``T = U + K + S + C + F`` in pages: user (anon), kernel, shared
        (shmem), cache (file), free."""
        t = self.totals()
        kernel = sum(t[c.label] for c in KERNEL_CLASSES)
        return {
            "T": self.total_pages - t["unreadable"],
            "U": t["anon"],
            "K": kernel,
            "S": t["shmem"],
            "C": t["file"],
            "F": t["free"] + t["free_pcp"],
            "unreadable": t["unreadable"],
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
            "MemTotal": row(self.total_pages - t["reserved"] - t["unreadable"], k.get("totalram"),
                            "pages not reserved"),
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
            heads = np.unique(m.heads_of(r.all_pfns()))
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
            "problems": self.problems,
        }


# --- evidence walks ---------------------------------------------------------

def _migratetype_names(prog: drgn.Program) -> list[str]:
    n = constant(prog, "MIGRATE_TYPES") or 0
    names = [""] * n
    for e in prog.type("enum migratetype").enumerators or ():
        if e.value < n:
            names[e.value] = e.name.removeprefix("MIGRATE_").lower()
    return names


def _list_pfns(m: Memmap, head: drgn.Object, member: str, where: str,
               problems: list[str]):
    """PFNs of the pages on a ``struct page`` list.

    A list that faults (a live kernel changed it under us: LIST_POISON, a
    torn pointer) or does not come back to its head within as many steps as
    there are pages is reported in ``problems`` and left; a corrupted list is
    a finding, not a crash.
    """
    seen = 0
    try:
        for page in list_for_each_entry("struct page", head, member):
            pfn = m.pfn_of_page_ptr(page.value_())
            seen += 1
            if seen > m.nr or not 0 <= pfn < m.nr:
                problems.append(f"{where}: list leaves the memmap at entry {seen} (pfn {pfn})")
                return
            yield pfn
    except drgn.FaultError as e:
        problems.append(f"{where}: list unreadable at entry {seen} ({e})")


def walk_free_lists(prog: drgn.Program, m: Memmap, classes: np.ndarray | None = None) -> list[ZoneFree]:
    """Every zone's ``free_area[order].free_list[migratetype]``, claiming
    each free block's pages in ``classes`` when given.

    Fact: PageBuddy is set only on the first page of a free block and
    ``page_private`` holds its order; the block's other pages are free too.
    Lists are read by ``_list_pfns``, which reports a broken list instead of
    following it forever.
    """
    zones = []
    mt_names = _migratetype_names(prog)
    for pgdat in for_each_online_pgdat(prog):
        node = pgdat.node_id.value_()
        for zone in pgdat.node_zones:
            if not zone.present_pages:
                continue
            name = zone.name.string_().decode()
            nr_orders = len(zone.free_area)
            walked = [0] * nr_orders
            counted = [zone.free_area[o].nr_free.value_() for o in range(nr_orders)]
            by_mt = {mt: [0] * nr_orders for mt in mt_names}
            zprob = []
            for order in range(nr_orders):
                for mt, head in enumerate(zone.free_area[order].free_list):
                    where = f"{name} order {order} {mt_names[mt]}"
                    for pfn in _list_pfns(m, head.address_of_(), "lru", where, zprob):
                        if classes is not None:
                            claim_range(classes, pfn, pfn + (1 << order), PageClass.FREE)
                        walked[order] += 1
                        by_mt[mt_names[mt]][order] += 1
                if walked[order] != counted[order]:
                    zprob.append(f"{name} order {order}: walked {walked[order]} free blocks, "
                                 f"nr_free says {counted[order]}")
            zones.append(ZoneFree(node, name, zone.zone_start_pfn.value_(),
                                  zone.zone_start_pfn.value_() + zone.spanned_pages.value_(),
                                  walked, counted, by_mt, 0, zprob))
    return zones


def walk_pcp_lists(prog: drgn.Program, m: Memmap, zones: list[ZoneFree],
                   classes: np.ndarray | None = None) -> None:
    """Free pages on per-CPU lists.

    Fact: the per-CPU pageset is ``zone->per_cpu_pageset`` (5.14+) or
    ``zone->pageset``; pages link through ``page->pcp_list`` (6.1+) or
    ``page->lru``.  With more lists than ``MIGRATE_PCPTYPES`` (5.14+) list
    ``i`` holds order ``i // MIGRATE_PCPTYPES`` blocks, the last ones THP
    blocks (``pageblock_order``).
    Their pages are claimed in ``classes`` when given.
    """
    member = "pcp_list" if has_member(prog, "struct page", "pcp_list") else "lru"
    pcptypes = constant(prog, "MIGRATE_PCPTYPES") or 3
    costly = 3  # PAGE_ALLOC_COSTLY_ORDER
    zi = iter(zones)
    for pgdat in for_each_online_pgdat(prog):
        for zone in pgdat.node_zones:
            if not zone.present_pages:
                continue
            zf = next(zi)
            pset = zone.per_cpu_pageset if has_member(prog, "struct zone", "per_cpu_pageset") else zone.pageset
            for cpu in for_each_possible_cpu(prog):
                pcp = per_cpu_ptr(pset, cpu)
                if pcp.type_.type.has_member("pcp"):
                    pcp = pcp.pcp.address_of_()
                lists = pcp.lists
                for i in range(len(lists)):
                    order = 0
                    if len(lists) > pcptypes:
                        order = i // pcptypes if i < pcptypes * (costly + 1) else (
                            prog["pageblock_order"].value_() if has_object(prog, "pageblock_order") else 9)
                    where = f"{zf.zone} cpu {cpu} pcp list {i}"
                    for pfn in _list_pfns(m, lists[i].address_of_(), member, where, zf.problems):
                        if classes is not None:
                            claim_range(classes, pfn, pfn + (1 << order), PageClass.FREE_PCP)
                        zf.pcp_pages += 1 << order


@dataclass
class VmapPages:
    """Which vmap area maps each page of a ``vm_struct.pages`` array, to name
    it (the area's address and ``vm_struct.caller``); sorted by PFN."""

    prog: drgn.Program
    pfns: np.ndarray        # int64, sorted
    vas: np.ndarray         # uint64: the virtual address mapping each of those pages
    callers: np.ndarray     # uint64: vm_struct.caller of its area (0 where unknown)
    _names: dict[int, str] = field(default_factory=dict)

    def where(self, pfn: int) -> tuple[int, str] | None:
        """(virtual address, caller's name) of a vmalloc'd page, or None."""
        i = int(np.searchsorted(self.pfns, pfn))
        if i == self.pfns.size or self.pfns[i] != pfn:
            return None
        caller = int(self.callers[i])
        if caller not in self._names:
            # a caller without a symbol: a BPF JIT image, freed module init text
            self._names[caller] = (_symbol_name(self.prog, caller) or f"{caller:#x}") if caller else ""
        return int(self.vas[i]), self._names[caller]


def walk_vmalloc(prog: drgn.Program, m: Memmap, classes: np.ndarray) -> VmapPages:
    """Pages of busy vmap areas, ``vm_struct.pages[nr_pages]``, claimed as
    vmalloc, kernel stack or per-cpu in ``classes``; returns which area maps
    each page.

    Thread stacks (VMAP_STACK) are the areas that start at a task's
    ``task_struct.stack`` (their recorded caller differs between versions:
    ``kernel_clone``, ``copy_process``, ...); per-cpu chunks are mapped by
    ``pcpu_get_vm_areas`` (the caller is a return address inside it) without
    a pages array, so their pages are found through the page tables.
    """
    page_shift = prog["PAGE_SHIFT"].value_()
    stack_bases = {task.stack.value_() for task in _all_tasks(prog)}
    has_caller = has_member(prog, "struct vm_struct", "caller")
    pcpu = prog.symbol("pcpu_get_vm_areas") if has_symbol(prog, "pcpu_get_vm_areas") else None
    pfns, vas, callers, percpu = [], [], [], []
    for va in for_each_vmap_area(prog):
        vm = va.vm.read_()     # once: live, the area may be freed between reads
        if not vm:
            continue
        caller = vm.caller.value_() if has_caller else 0
        start = va.va_start.value_()
        nr = vm.nr_pages.value_()
        if vm.pages and nr:
            try:
                ptrs = np.frombuffer(prog.read(vm.pages.value_(), nr * 8), "<u8")
            except drgn.FaultError:
                continue
            area = m.pfns_of_page_ptrs(ptrs)
            ok = area >= 0
            claim(classes, area[ok], PageClass.KERNEL_STACK if start in stack_bases else PageClass.VMALLOC)
            pfns.append(area[ok])
            vas.append(np.uint64(start) + (np.flatnonzero(ok).astype(np.uint64) << np.uint64(page_shift)))
            callers.append(np.full(int(ok.sum()), caller, np.uint64))
        elif pcpu is not None and pcpu.address <= caller < pcpu.address + pcpu.size:
            for addr in range(start, va.va_end.value_(), 1 << page_shift):
                try:
                    percpu.append(vmalloc_to_pfn(prog, addr).value_())
                except drgn.FaultError:
                    continue
    claim(classes, np.array(percpu, np.int64), PageClass.PERCPU)
    if not pfns:
        return VmapPages(prog, np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    all_pfns = np.concatenate(pfns)
    order = np.argsort(all_pfns, kind="stable")
    return VmapPages(prog, all_pfns[order], np.concatenate(vas)[order], np.concatenate(callers)[order])


def _all_tasks(prog: drgn.Program):
    """Every task, including the per-CPU idle tasks that ``for_each_task`` skips."""
    yield from for_each_task(prog)
    if has_object(prog, "runqueues"):
        for cpu in for_each_possible_cpu(prog):
            idle = per_cpu(prog["runqueues"], cpu).idle
            if idle:
                yield idle


def _symbol_name(prog: drgn.Program, addr: int) -> str:
    try:
        return prog.symbol(addr).name
    except LookupError:
        return ""


def walk_page_frags(prog: drgn.Program, m: Memmap) -> np.ndarray:
    """Pages of page_frag caches (sorted PFNs): per-CPU ``netdev_alloc_cache``
    and ``napi_alloc_cache.page`` and each task's ``task_frag.page``.  The
    cache holds a reference on its (order-3 compound) page while ``va`` is set."""
    found = set()
    for cpu in for_each_possible_cpu(prog):
        for name, path in (("netdev_alloc_cache", ()), ("napi_alloc_cache", ("page",))):
            if not has_object(prog, name):
                continue
            cache = per_cpu(prog[name], cpu)
            for p in path:
                if cache.type_.has_member(p):
                    cache = getattr(cache, p)
            if cache.type_.has_member("va") and cache.va.value_():
                found.add(m.pfn_of_virt(cache.va.value_()))
    for task in for_each_task(prog):
        found.add(m.pfn_of_page_ptr(task.task_frag.page.value_()))
    return np.array(sorted(p for p in found if p >= 0), np.int64)


def hugetlb_dtor(prog: drgn.Program) -> int | None:
    """Before the hugetlb page type: the first tail's ``compound_dtor`` is
    ``HUGETLB_PAGE_DTOR`` (VMCOREINFO) on hugetlb pages."""
    if not has_member(prog, "struct page", "compound_dtor"):
        return None
    return vmcoreinfo_numbers(prog).get("HUGETLB_PAGE_DTOR")


def ring_heads(m: Memmap, rings: RingScan) -> np.ndarray:
    """Compound heads (sorted PFNs) of the pages the ring walkers found (a
    virtqueue descriptor may point into a tail of an order-3 frag page),
    read from those pages' ``compound_head``."""
    return np.unique(m.read(rings.held_pfns()).head_pfn)


# --- the kernel's own counters -----------------------------------------------

COUNTERS = {
    # our name: vmstat enumerator (values are pages, except where the name says kb)
    "free": "NR_FREE_PAGES",
    "slab_reclaimable": "NR_SLAB_RECLAIMABLE_B",
    "slab_unreclaimable": "NR_SLAB_UNRECLAIMABLE_B",
    "file": "NR_FILE_PAGES",
    "shmem": "NR_SHMEM",
    "anon": "NR_ANON_MAPPED",
    "page_tables": "NR_PAGETABLE",
    "kernel_stack_kb": "NR_KERNEL_STACK_KB",
    "vmalloc": "NR_VMALLOC",
}


def kernel_counters(prog: drgn.Program) -> dict[str, int]:
    """vmstat counters, global value plus the per-CPU deltas not yet folded in.

    Fact: zone counters live in ``vm_zone_stat``, node counters in
    ``vm_node_stat``; each CPU keeps a small delta (``vm_stat_diff``) in
    ``zone->per_cpu_zonestats`` (5.14+) / ``zone->pageset`` or
    ``pgdat->per_cpu_nodestats``.
    """
    zone_items = {e.name: e.value for e in prog.type("enum zone_stat_item").enumerators}
    node_items = {e.name: e.value for e in prog.type("enum node_stat_item").enumerators}
    zone_diff = "per_cpu_zonestats" if has_member(prog, "struct zone", "per_cpu_zonestats") else "pageset"
    out = {}
    for name, item in COUNTERS.items():
        if item in zone_items:
            idx = zone_items[item]
            value = prog["vm_zone_stat"][idx].counter.value_()
            for pgdat in for_each_online_pgdat(prog):
                for zone in pgdat.node_zones:
                    if not zone.present_pages:
                        continue
                    for cpu in for_each_possible_cpu(prog):
                        value += per_cpu_ptr(getattr(zone, zone_diff), cpu).vm_stat_diff[idx].value_()
        elif item in node_items:
            idx = node_items[item]
            value = prog["vm_node_stat"][idx].counter.value_()
            for pgdat in for_each_online_pgdat(prog):
                for cpu in for_each_possible_cpu(prog):
                    value += per_cpu_ptr(pgdat.per_cpu_nodestats, cpu).vm_node_stat_diff[idx].value_()
        else:
            continue
        out[name] = value
    if "slab_reclaimable" in out:
        out["slab"] = out.pop("slab_reclaimable") + out.pop("slab_unreclaimable", 0)
    if "vmalloc" not in out and has_object(prog, "nr_vmalloc_pages"):
        # before NR_VMALLOC (6.7?) VmallocUsed came from this atomic counter
        out["vmalloc"] = prog["nr_vmalloc_pages"].counter.value_()
    out["totalram"] = totalram_pages(prog)
    return out


def totalram_pages(prog: drgn.Program) -> int:
    """MemTotal: ``_totalram_pages`` is an atomic_long_t since 5.0 (``totalram_pages`` before)."""
    if has_object(prog, "_totalram_pages"):
        return prog["_totalram_pages"].counter.value_()
    return prog["totalram_pages"].value_()


# --- the census ----------------------------------------------------------------

def free_memory(prog: drgn.Program, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The free lists alone (what ``buddy`` shows): every zone's buddy and
    per-CPU free pages, checked against ``nr_free`` and NR_FREE_PAGES,
    without classifying the other pages."""
    m = Memmap.from_program(prog)
    zones = walk_free_lists(prog, m)
    problems = [p for z in zones for p in z.problems]
    try:
        walk_pcp_lists(prog, m, zones)
    except drgn.FaultError as e:
        problems.append(f"per-CPU free lists: walk abandoned, memory unreadable ({e})")
    walked = sum(z.free_pages for z in zones)
    counted = kernel_counters(prog).get("free")
    if counted is not None and counted != walked:
        problems.append(f"buddy walk found {walked} free pages, NR_FREE_PAGES says {counted}")
    return {"schema": "vmcore-tools/buddy/1",
            "release": kernel_release(prog),
            "page_size": 1 << m.page_shift, "free_pages_walked": walked, "nr_free_pages": counted,
            "pcp_pages": sum(z.pcp_pages for z in zones),
            "zones": [z.to_json() for z in zones], "problems": problems}


def census(prog: drgn.Program, progress: Callable[[str, int, int], None] | None = None,
           chunk_pages: int = CHUNK_PAGES) -> Census:
    """Classify every physical page of ``prog``'s kernel, reading
    ``chunk_pages`` struct pages at a time.

    The walks come first and claim the pages they find in the class array;
    then one pass over the memmap, a chunk at a time, decides every page's
    class (``classify``).  No decoded memmap is kept.
    """
    m = Memmap.from_program(prog)
    classes = np.full(m.nr, UNCLAIMED, np.uint8)
    problems: list[str] = []

    def stage(name: str, walk, default):
        return run_stage(name, walk, default, problems)

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
        classes[classes == UNCLAIMED] = PageClass.UNREADABLE
    counters = stage("kernel counters", lambda: kernel_counters(prog), {})
    walked_free = sum(z.free_pages for z in zones)
    if "free" in counters and counters["free"] != walked_free:
        problems.append(f"buddy walk found {walked_free} free pages, NR_FREE_PAGES says {counters['free']}")
    return Census(prog, m, classes, zones, counters, problems, rings, tables, vmap)
