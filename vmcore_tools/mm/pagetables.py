"""Page tables: the pages they are made of, and what the kernel maps with them.

Fact: only tables built with a constructor carry the PageTable page type
(and count in NR_PAGETABLE).  The kernel's own tables (vmalloc, ioremap,
espfix, the direct map split after boot) and, on some versions, the upper
levels of process tables are plain pages that only the physical address in
a higher-level entry names: without walking the tables they look leaked.
Likewise a page the kernel maps outside the direct map without a
``vm_struct`` (espfix stacks, ``vm_map_ram``, fixmaps) is referenced only
by a leaf entry, so the leaves of ``init_mm`` count as references.

The entries' format and the levels are the architecture's
(``arch.x86_64``, ``arch.arm64``).

With page-table isolation (PTI, ``X86_FEATURE_PTI``) a PGD is an order-1
block (``PGD_ALLOCATION_ORDER``): its second page is the user PGD
(``kernel_to_user_pgdp()``: the PGD's address with ``PAGE_SIZE`` set), which
the CPU uses in user mode.  Its user half mirrors the process's entries;
its kernel half maps the entry text, ``cpu_entry_area`` and the like
through tables of its own (``pti_clone_pgtable()``).  The second page of a
non-compound block has refcount 0, and nothing points to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
import numpy as np
from drgn.helpers.linux.mm import follow_phys

from vmcore_tools.arch import table_format
from vmcore_tools.core.walk import tasks
from vmcore_tools.core.features import has_object, has_symbol, image_symbol
from vmcore_tools.mm.memmap import Memmap

#: arch/x86/include/asm/cpufeatures.h: ``X86_FEATURE_PTI`` is bit 11 of word 7
#: of ``x86_capability`` (4.15+; "pti" in /proc/cpuinfo).  A macro: not in DWARF.
X86_FEATURE_PTI = (7, 11)


def pti_enabled(prog: drgn.Program) -> bool:
    """Whether the kernel isolates its page tables from user mode (PTI)."""
    if not has_symbol(prog, "pti_init") or not has_object(prog, "boot_cpu_data"):
        return False
    word, bit = X86_FEATURE_PTI
    return bool(prog["boot_cpu_data"].x86_capability[word].value_() >> bit & 1)


@dataclass
class PageTableWalk:
    tables: np.ndarray          # sorted PFNs of the page-table pages
    kernel_leaf_pfns: np.ndarray  # PFNs init_mm maps outside the direct map (4K leaves)
    kernel_leaf_vas: np.ndarray   # the virtual address each is mapped at
    #: init_mm's huge leaves (PMD, PUD) outside the direct map: first PFN,
    #: pages mapped, virtual address.  The kernel image is mapped so, and the
    #: vmemmap: the memmap of memory added after boot (hot-add) is allocated
    #: from the page allocator in 2 MiB blocks (``vmemmap_alloc_block()``:
    #: order 9, not compound) that only such a leaf names.
    kernel_huge_pfns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kernel_huge_pages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kernel_huge_vas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def kernel_pages(self, page_shift: int) -> tuple[np.ndarray, np.ndarray]:
        """(virtual address, PFN) of every page ``init_mm`` maps outside the
        direct map: the 4K leaves, and each page of the huge ones (a huge
        leaf maps its pages one page apart)."""
        pages = self.kernel_huge_pages
        starts = np.repeat(np.cumsum(pages) - pages, pages)
        within = np.arange(int(pages.sum()), dtype=np.int64) - starts
        pfns = np.concatenate([self.kernel_leaf_pfns, np.repeat(self.kernel_huge_pfns, pages) + within])
        vas = np.concatenate([self.kernel_leaf_vas, np.repeat(self.kernel_huge_vas, pages)
                              + (within << page_shift).astype(np.uint64)])
        return vas, pfns


def walk_page_tables(prog: drgn.Program, a: Memmap) -> PageTableWalk:
    """Walk the kernel's and every process's page tables from the root, in
    the format of the dump's architecture (``arch.table_format``)."""
    tables: set[int] = set()
    empty = PageTableWalk(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64))
    fmt = table_format(prog, a.page_shift)
    if fmt is None:
        return empty
    levels, shift = fmt.levels, a.page_shift
    # a root smaller than a page is an object of a slab cache (arm64's
    # pgd_cache, 16 KiB pages and 48 bits): read, never claimed as a table
    small_root = fmt.root_entries * 8 < (1 << shift)

    def entries(phys: int, n: int) -> np.ndarray | None:
        try:
            return np.frombuffer(prog.read(phys, 8 * n, True), "<u8")
        except drgn.FaultError:
            return None

    # Kernel address spaces: init_mm, and the private mms the kernel builds
    # for itself (text_poke's poking_mm, efi_mm).  Keep virtual addresses so
    # leaves outside the direct map are known.  init_mm's root is in the
    # kernel image mapping, not the direct map: translate it.
    # (physical address, whether it maps the kernel's half: the private mms'
    # map from 0, arm64's through TTBR0)
    init_mm = prog["init_mm"].address_of_()
    roots = [(follow_phys(init_mm, init_mm.pgd.value_()).value_(), True)]
    for name in ("poking_mm", "efi_mm"):
        if has_object(prog, name):
            mm = prog[name]
            mm = mm if mm.type_.kind == drgn.TypeKind.POINTER else mm.address_of_()
            if mm and mm.pgd:
                roots.append((follow_phys(init_mm, mm.pgd.value_()).value_(), False))
    for name in fmt.image_roots:
        if has_symbol(prog, name):
            roots.append((follow_phys(init_mm, image_symbol(prog, name)).value_(), True))
    pti = pti_enabled(prog)
    if pti:     # the user PGDs, beside the kernel ones
        roots += [(phys + (1 << shift), kernel) for phys, kernel in roots]
    direct_lo, direct_hi = a.direct_map, a.direct_map + (a.nr << shift)
    leaf_pfns: list[np.ndarray] = []
    leaf_vas: list[np.ndarray] = []
    huge_pfns: list[np.ndarray] = []
    huge_pages: list[np.ndarray] = []
    huge_vas: list[np.ndarray] = []
    # (physical address of a table, virtual address its entry 0 maps; a
    # root: -1 for the kernel's half, -2 for a private mm's)
    level: list[tuple[int, int]] = [(phys, -1 if kernel else -2) for phys, kernel in roots]
    for depth in range(levels, 0, -1):
        span = fmt.span(depth)
        nxt = []
        for phys, base in level:
            pfn = phys >> shift
            if not 0 <= pfn < a.nr or pfn in tables:     # kernel halves are shared
                continue
            root = base < 0
            if not (root and small_root):
                tables.add(pfn)
            e = entries(phys, fmt.root_entries if root else fmt.entries)
            if e is None:
                continue
            vas = (fmt.root_vas(base == -1) if root
                   else np.uint64(base) + np.arange(e.size, dtype=np.uint64) * np.uint64(span))
            inside = (vas >= np.uint64(direct_lo)) & (vas + np.uint64(span) <= np.uint64(direct_hi))
            targets = fmt.pfn(e)
            if depth == 1:
                sel = fmt.page(e) & ~inside
                leaf_pfns.append(targets[sel])
                leaf_vas.append(vas[sel])
                continue
            mapped = fmt.block(e, depth) & ~inside
            if mapped.any():
                huge_pfns.append(targets[mapped])
                huge_pages.append(np.full(int(mapped.sum()), span >> shift, np.int64))
                huge_vas.append(vas[mapped])
            sel = fmt.table(e, depth)
            nxt.extend(zip((targets[sel] << shift).tolist(), vas[sel].tolist()))
        level = nxt

    # processes: only the table pages matter (their leaves are anon or file pages)
    pgds = {a.phys_of_virt(t.mm.pgd.value_()) for t in tasks(prog) if t.mm}
    if pti:
        pgds |= {p + (1 << shift) for p in pgds if p >= 0}
    frontier = [(p, True) for p in pgds if p >= 0 and (p >> shift) not in tables]
    for depth in range(levels, 0, -1):
        nxt_pfns: set[int] = set()
        for phys, root in frontier:
            if not (root and small_root):
                tables.add(phys >> shift)
            if depth == 1:
                continue
            e = entries(phys, fmt.root_entries if root else fmt.entries)
            if e is None:
                continue
            nxt_pfns.update(fmt.pfn(e[fmt.table(e, depth)]).tolist())
        frontier = [(p << shift, False) for p in nxt_pfns if 0 <= p < a.nr and p not in tables]
    pfns = np.concatenate(leaf_pfns) if leaf_pfns else np.zeros(0, np.int64)
    vas = np.concatenate(leaf_vas) if leaf_vas else np.zeros(0, np.uint64)
    ok = (pfns >= 0) & (pfns < a.nr)
    hp = np.concatenate(huge_pfns) if huge_pfns else np.zeros(0, np.int64)
    hn = np.concatenate(huge_pages) if huge_pages else np.zeros(0, np.int64)
    hv = np.concatenate(huge_vas) if huge_vas else np.zeros(0, np.uint64)
    hok = (hp >= 0) & (hp + hn <= a.nr)
    return PageTableWalk(np.array(sorted(tables), np.int64), pfns[ok], vas[ok], hp[hok], hn[hok], hv[hok])
