"""IOMMU page tables by their layout: which pages are tables (held by the
entry above them) and which are only mapped for a device.

Fact (include/linux/iommu.h, drivers/iommu/dma-iommu.c): a domain that
serves the DMA API (``__IOMMU_DOMAIN_DMA_API``, bit 1 of
``iommu_domain.type``: DMA and DMA_FQ domains) maps the pages a driver hands
to ``dma_map_*()``; the mapping takes no reference on the page, and the
driver keeps the page and its DMA address.  A leaf entry of such a domain
therefore holds nothing: a page a driver leaked while it was mapped (i40e's
rx pages are mapped for their lifetime) is named by a leaf, and is still
orphaned.  Its upper entries do hold the next level: table pages are plain
pages named only by that entry.  An unmanaged domain (VFIO type1, drivers
with domains of their own) may keep the only record of its pages in the
leaves (VFIO unpins by ``iommu_iova_to_phys()``): it is left to the generic
table-entry rule, which counts every entry.

Intel VT-d (drivers/iommu/intel): ``struct dmar_domain`` embeds the
``iommu_domain``.  Up to 6.x it keeps ``pgd`` (the top table's kernel
address) and ``agaw`` (levels = agaw + 2).  From the generic IOMMU page
table library (7.x), it is a ``pt_iommu_vtdss`` (second stage) or
``pt_iommu_x86_64`` (first stage, ``intel_fs_*`` ops) whose
``pt_common.top_of_table`` is the top table's address with its level (0:
the level whose entries map 4 KiB pages) in the low ``PT_TOP_LEVEL_MASK``
bits.  In both formats an entry holds the next level's or the page's
physical address in bits 12-51, is present when bit 0 or 1 is set (read,
write; x86's present, writable), and bit 7 marks a superpage above the
lowest level.  Domains are found from the IOMMU groups
(``iommu_group_kset``): each group's default and current domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
import numpy as np
from drgn.helpers.linux.list import list_for_each_entry

from vmcore_tools.core.walk import bounded, max_entries
from vmcore_tools.core.features import constant, has_member, has_object, has_type
from vmcore_tools.mm.memmap import Memmap

#: ``__IOMMU_DOMAIN_DMA_API``: a macro, so not in DWARF; the same bit from 5.x to 7.x
DOMAIN_DMA_API = 1 << 1
#: bits 12-51 of a VT-d entry: the next level's or the page's physical address
ENTRY_ADDRESS = np.uint64(0x000FFFFFFFFFF000)
#: VT-d entry bits: read, write (present when either is set) and superpage
ENTRY_RW, ENTRY_SUPERPAGE = np.uint64(3), np.uint64(1 << 7)


@dataclass
class IommuTables:
    """The table pages of the DMA-API domains, and what their leaves map."""

    #: PFN of each table page -> (the entry's address that names it, or 0 for a
    #: top table, which its domain holds by pointer; what it is)
    tables: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: PFN of each page a leaf maps -> (IOVA, the leaf entry)
    mapped: dict[int, tuple[int, int]] = field(default_factory=dict)
    domains: int = 0
    problems: list[str] = field(default_factory=list)


def dma_domains(prog: drgn.Program) -> list[tuple[int, drgn.Object]]:
    """``(group id, iommu_domain)`` of every DMA-API domain in use, once each."""
    if not has_object(prog, "iommu_group_kset") or not prog["iommu_group_kset"].value_():
        return []
    seen, out = set(), []
    groups = list_for_each_entry("struct kobject", prog["iommu_group_kset"].list.address_of_(), "entry")
    for kobj in bounded(groups, "the IOMMU groups (iommu_group_kset)", max_entries(prog, "struct iommu_group")):
        group = drgn.container_of(kobj, "struct iommu_group", "kobj")
        for member in ("default_domain", "domain"):
            domain = group.member_(member)
            if domain.value_() and domain.value_() not in seen and domain.type.value_() & DOMAIN_DMA_API:
                seen.add(domain.value_())
                out.append((group.id.value_(), domain))
    return out


def iommu_tables(prog: drgn.Program, m: Memmap) -> IommuTables:
    """Walk the page tables of every DMA-API domain whose layout we know
    (Intel VT-d, ``vtd_top_table``); a domain of another IOMMU is named in
    ``problems`` and left to the generic rule."""
    out = IommuTables()
    for group, domain in dma_domains(prog):
        top = vtd_top_table(prog, domain)
        if top is None:
            out.problems.append(f"iommu group {group}: a DMA domain whose page tables we do not read; "
                                "pages it maps may look referenced")
            continue
        table, levels = top
        if table:
            out.domains += 1
            _walk(prog, m, out, table, levels, 0, 0, f"iommu group {group}")
    return out


def vtd_top_table(prog: drgn.Program, domain: drgn.Object) -> tuple[int, int] | None:
    """``(kernel address of the top table, levels)`` of a VT-d domain; None
    for another IOMMU's domain or a layout we do not know."""
    name = _ops_name(prog, domain)
    if not name.startswith("intel_") or not has_type(prog, "struct dmar_domain"):
        return None
    dmar = drgn.container_of(domain, "struct dmar_domain", "domain")
    if has_member(prog, "struct dmar_domain", "pgd"):
        return dmar.pgd.value_(), dmar.agaw.value_() + 2
    mask = constant(prog, "PT_TOP_LEVEL_MASK")
    if has_member(prog, "struct dmar_domain", "sspt") and mask is not None:
        pt = dmar.fspt.x86_64_pt if "_fs_" in name else dmar.sspt.vtdss_pt
        top = pt.common.top_of_table.value_()
        return top & ~mask, (top & mask) + 1
    return None


def _ops_name(prog: drgn.Program, domain: drgn.Object) -> str:
    """The symbol of a domain's ops (``iommu_ops`` before 5.19, then
    ``iommu_domain_ops``; a compound literal has no telling name, so its
    ``iova_to_phys`` function's is taken)."""
    ops = domain.ops
    for addr in (ops.value_(), ops.iova_to_phys.value_() if ops.type_.type.has_member("iova_to_phys") else 0):
        try:
            name = prog.symbol(addr).name if addr else ""
        except LookupError:
            continue
        if not name.startswith("__compound_literal"):
            return name
    return ""


def _walk(prog: drgn.Program, m: Memmap, out: IommuTables, table: int, level: int, iova: int,
          named_at: int, label: str) -> None:
    """One table page at kernel address ``table``, at ``level`` (1: its
    entries map 4 KiB pages), covering IOVAs from ``iova``."""
    pfn = m.pfn_of_virt(table)
    if pfn < 0 or pfn in out.tables:
        return
    out.tables[pfn] = (named_at, f"{label} level {level} table")
    try:
        entries = np.frombuffer(prog.read(table, 1 << m.page_shift), "<u8")
    except drgn.FaultError:
        out.problems.append(f"{label}: level {level} table at {table:#x} unreadable")
        return
    present = np.flatnonzero(entries & ENTRY_RW)
    span = 1 << (m.page_shift + 9 * (level - 1))       # IOVA bytes one entry covers
    for i in present.tolist():
        e = entries[i]
        phys = int(e & ENTRY_ADDRESS)
        if level > 1 and not e & ENTRY_SUPERPAGE:
            _walk(prog, m, out, m.direct_map + phys, level - 1, iova + i * span, table + 8 * i, label)
        else:
            out.mapped[phys >> m.page_shift] = (iova + i * span, int(e))
