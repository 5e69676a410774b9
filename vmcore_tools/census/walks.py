"""The census's evidence walks: lists and tables the kernel keeps of pages it
owns -- buddy free lists, per-CPU free lists, vmap areas and their pages
(stacks, per-cpu chunks), page_frag caches -- each giving PFNs for a class.
``classify.py`` holds the rules that turn this evidence into classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
import numpy as np
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.mm import for_each_vmap_area, vmalloc_to_pfn
from drgn.helpers.linux.mmzone import for_each_online_pgdat
from drgn.helpers.linux.percpu import per_cpu, per_cpu_ptr
from drgn.helpers.linux.xarray import xa_for_each

from vmcore_tools.core.stages import record_damage
from vmcore_tools.core.walk import bounded, damaged, max_entries, max_pages, tasks, xa_index
from vmcore_tools.kernel.stacks import all_tasks
from vmcore_tools.census.classify import claim, claim_range
from vmcore_tools.census.classes import PageClass
from vmcore_tools.core.features import constant, has_member, has_object, has_symbol, vmcoreinfo_numbers
from vmcore_tools.mm.memmap import Memmap, max_buddy_order
from vmcore_tools.net.rings import RingScan
from vmcore_tools.core.arrays import unique


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


def _migratetype_names(prog: drgn.Program) -> list[str]:
    n = constant(prog, "MIGRATE_TYPES") or 0
    names = [""] * n
    for e in prog.type("enum migratetype").enumerators or ():
        if e.value < n:
            names[e.value] = e.name.removeprefix("MIGRATE_").lower()
    return names


def page_list_pfns(m: Memmap, head: int, member: str, where: str, problems: list[str],
                   limit: int | None = None) -> np.ndarray:
    """PFNs of the pages on the ``struct page`` list at address ``head``,
    linked through ``member``, read one ``next`` word at a time (no drgn
    object per entry: a fragmented host has millions of free pages).

    A list that faults (a live kernel changed it under us: LIST_POISON, a
    torn pointer), leaves the memmap, or does not come back to its head
    within ``limit`` entries -- the kernel's own count of what the list
    holds (``nr_free``, a per-CPU list's ``count``) where it keeps one in a
    dump, else as many as there are pages -- is reported in ``problems``; a
    corrupted list is a finding, not a crash, and in a dump it is damage:
    the running stage's result is partial (``stages.record_damage``).  A
    cycle away from the head stops at the bound, so the walk costs what
    the kernel's count says, never a trip round the cycle per page of the
    machine.  The list is doubly linked (``list_head``), so the part after
    the break is then read backwards from the head through ``prev``, up to
    the break or the part already read: one damaged ``struct page`` loses
    itself, not the rest of its list."""
    offset = drgn.offsetof(m.prog.type("struct page"), member)
    live = bool(m.prog.flags & drgn.ProgramFlags.IS_LIVE)
    bound = m.nr if limit is None or live else min(limit, m.nr)
    out, broken = _follow(m, head, offset, 0, bound)
    if broken:
        problems.append(f"{where}: {broken}")
        if not live:
            record_damage(f"the page list {where} is damaged: {broken}")
        out = list(dict.fromkeys(out))      # a cycle met its entries more than once
        back, _ = _follow(m, head, offset, 8, bound, stop=set(out))
        out += back
    return np.array(out, np.int64)


def _follow(m: Memmap, head: int, offset: int, link: int, limit: int,
            stop: set[int] = frozenset()) -> tuple[list[int], str]:
    """The PFNs a ``list_head`` walk from ``head`` meets through the word at
    ``link`` (0: ``next``, 8: ``prev``), up to the head, a PFN in ``stop``,
    ``limit`` entries, or the first entry that is no page (what went
    wrong: the second item)."""
    read = m.prog.read_u64
    out: list[int] = []
    try:
        node = read(head + link)
        while node != head:
            pfn = m.pfn_of_page_ptr(node - offset)
            if pfn in stop:
                break
            if pfn < 0:
                return out, f"list leaves the memmap at entry {len(out) + 1} (pfn {pfn})"
            if len(out) >= limit:
                return out, f"list does not come back to its head within {limit} entries (the kernel's count)"
            out.append(pfn)
            node = read(node + link)
    except drgn.FaultError as e:
        return out, f"list unreadable at entry {len(out)} ({e})"
    return out, ""


def _claim_blocks(classes: np.ndarray, pfns: np.ndarray, order: int, klass: PageClass) -> None:
    """``claim`` every page of the ``1 << order``-page blocks that start at
    ``pfns``, about a million pages at a time."""
    span = np.arange(1 << order, dtype=np.int64)
    step = max(1, (1 << 20) >> order)
    for i in range(0, pfns.size, step):
        claim(classes, (pfns[i:i + step, None] + span).reshape(-1), klass)


def walk_free_lists(prog: drgn.Program, m: Memmap, classes: np.ndarray | None = None) -> list[ZoneFree]:
    """Every zone's ``free_area[order].free_list[migratetype]``, claiming
    each free block's pages in ``classes`` when given.

    Fact: PageBuddy is set only on the first page of a free block and
    ``page_private`` holds its order; the block's other pages are free too.
    Lists are read by ``page_list_pfns``, which reports a broken list instead of
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
                    pfns = page_list_pfns(m, head.address_of_().value_(), "lru", where, zprob, counted[order])
                    if classes is not None:
                        _claim_blocks(classes, pfns, order, PageClass.FREE)
                    walked[order] += pfns.size
                    by_mt[mt_names[mt]][order] += pfns.size
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
    # pageblock_order where it is a variable, else a PMD's order (HPAGE_PMD_ORDER: a
    # table of PAGE_SIZE / 8 entries), at most the buddy allocator's largest
    thp_order = (prog["pageblock_order"].value_() if has_object(prog, "pageblock_order")
                 else min(m.page_shift - 3, max_buddy_order(prog)))
    pageset = "per_cpu_pageset" if has_member(prog, "struct zone", "per_cpu_pageset") else "pageset"
    list_head = prog.type("struct list_head").size
    cpus = list(for_each_possible_cpu(prog))
    zi = iter(zones)
    for pgdat in for_each_online_pgdat(prog):
        for zone in pgdat.node_zones:
            if not zone.present_pages:
                continue
            zf = next(zi)
            pset = getattr(zone, pageset)
            for cpu in cpus:
                pcp = per_cpu_ptr(pset, cpu)
                if pcp.type_.type.has_member("pcp"):
                    pcp = pcp.pcp.address_of_()
                nr_lists = len(pcp.lists)
                lists = pcp.lists.address_of_().value_()
                count = pcp.count.value_()          # pages on all its lists: no list has more entries
                for i in range(nr_lists):
                    order = 0
                    if nr_lists > pcptypes:
                        order = i // pcptypes if i < pcptypes * (costly + 1) else thp_order
                    where = f"{zf.zone} cpu {cpu} pcp list {i}"
                    pfns = page_list_pfns(m, lists + i * list_head, member, where, zf.problems, count)
                    if classes is not None:
                        _claim_blocks(classes, pfns, order, PageClass.FREE_PCP)
                    zf.pcp_pages += pfns.size << order


@dataclass
class DeviceRange:
    """PFNs ``[start, end)`` of one range of a ``struct dev_pagemap``."""

    start: int
    end: int
    kind: str           # enum memory_type without MEMORY_DEVICE_ (fs_dax, private, ...)
    pgmap: int          # address of the dev_pagemap

    def to_json(self) -> dict:
        return {"start_pfn": self.start, "end_pfn": self.end, "type": self.kind, "pgmap": f"{self.pgmap:#x}"}


def walk_device_pages(prog: drgn.Program, m: Memmap, classes: np.ndarray | None = None) -> list[DeviceRange]:
    """The ZONE_DEVICE ranges of every ``struct dev_pagemap``, claimed as
    DEVICE in ``classes`` when given.

    Fact: ``memremap_pages()`` (pmem in fsdax or devdax mode, HMM
    device-private memory, P2P DMA BARs) gives a device's memory struct
    pages in ZONE_DEVICE and records each of its ranges in the xarray
    ``pgmap_array``, indexed by PFN, for ``get_dev_pagemap()``.  The page
    allocator never owns these pages.  A pagemap has ``nr_range`` ranges
    from 5.10 (``ranges[]``, or its one ``range``); before, one ``res``.
    A kernel without ``pgmap_array`` (no CONFIG_ZONE_DEVICE) has none."""
    if not has_object(prog, "pgmap_array"):
        return []
    kinds = {e.value: e.name.removeprefix("MEMORY_DEVICE_").lower()
             for e in prog.type("enum memory_type").enumerators or ()}
    ranges = has_member(prog, "struct dev_pagemap", "nr_range")
    seen: set[int] = set()
    out: list[DeviceRange] = []
    for _, entry in bounded(xa_for_each(prog["pgmap_array"].address_of_()), "the device page maps (pgmap_array)",
                            max_pages(prog), key=xa_index):
        addr = entry.value_()
        if addr in seen:
            continue
        seen.add(addr)
        pgmap = drgn.Object(prog, "struct dev_pagemap *", addr)
        if ranges:
            spans = [(r.start.value_(), r.end.value_()) for r in
                     (pgmap.ranges[i] for i in range(pgmap.nr_range.value_()))]
        else:
            spans = [(pgmap.res.start.value_(), pgmap.res.end.value_())]
        kind = kinds.get(pgmap.type.value_(), str(pgmap.type.value_()))
        for start, end in spans:      # end is inclusive
            r = DeviceRange(start >> m.page_shift, (end + 1) >> m.page_shift, kind, addr)
            out.append(r)
            if classes is not None:
                claim_range(classes, r.start, r.end, PageClass.DEVICE)
    return sorted(out, key=lambda r: r.start)


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
    stack_bases = {task.stack.value_() for task in all_tasks(prog)}
    has_caller = has_member(prog, "struct vm_struct", "caller")
    pcpu = prog.symbol("pcpu_get_vm_areas") if has_symbol(prog, "pcpu_get_vm_areas") else None
    pfns, vas, callers, percpu = [], [], [], []
    for va in bounded(for_each_vmap_area(prog), "the vmap areas (vmap_area_list)",
                      max_entries(prog, "struct vmap_area")):
        vm = va.vm.read_()     # once: live, the area may be freed between reads
        if not vm:
            continue
        caller = vm.caller.value_() if has_caller else 0
        start = va.va_start.value_()
        nr = vm.nr_pages.value_()
        if nr > (va.va_end.value_() - start) >> page_shift:
            damaged("the vmap areas (vm_struct.nr_pages)", f"{nr} pages in the area at {start:#x} of "
                    f"{(va.va_end.value_() - start) >> page_shift}: not read")
            continue
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
    for task in tasks(prog):
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
    return unique(m.read(rings.held_pfns()).head_pfn)
