"""One page explained: its class, flags, compound head, owner and who
references it -- what ``vmcore-tools page PFN|ADDR`` prints.

An address is taken for what it is: a PFN (below the end of the memmap), a
``struct page *`` (inside the memmap), a direct-map address, or any other
kernel virtual address, which ``init_mm``'s page tables translate (vmalloc,
module memory, the kernel image).

    >>> from vmcore_tools.page import explain_page
    >>> explain_page(prog, 0x3fe22, c).owner
    'ring i40e eth2 rx0 slot 17, offset 0x800, pagecnt_bias 65534'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import drgn
import numpy as np
from drgn.helpers.linux.fs import d_path
from drgn.helpers.linux.list import hlist_for_each_entry
from drgn.helpers.linux.mm import decode_page_flags, follow_pfn, pfn_to_page

from vmcore_tools.census.census import Census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.evidence import Describer
from vmcore_tools.mm.page_owner import PageOwner
from vmcore_tools.leaks.candidates import CANDIDATE_CLASSES, candidate_heads
from vmcore_tools.refs.scan import scan_references
from vmcore_tools.refs.tiers import inferred_holds, known_holds
from vmcore_tools.net.page_pool import page_pool_of
from vmcore_tools.mm.slab import SlabObjects


@dataclass
class PageReport:
    pfn: int
    given: str                  # how the page was asked for
    head: int                   # PFN of its compound head (itself if none)
    order: int                  # compound order of the head
    klass: str
    flags: str
    refcount: int
    mapcount: int               # _mapcount (-1: not mapped), or the page type where it holds one
    mapping: int
    owner: str                  # the owner in words, where the class has one
    #: for leak candidates (unattributed, page_pool): where they are referenced from ([] = orphaned)
    references: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    #: its page_owner record (kernels booted with page_owner=on)
    page_owner: PageOwner | None = None
    #: for a referenced candidate that only an inference holds: its rule (refs.tiers)
    inferred: str | None = None
    #: whether ``head`` heads a block allocated without __GFP_COMP (census.blocks), not a compound page
    block: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("klass")
        return {"schema": "vmcore-tools/page/1", **d}

def resolve_pfn(prog: drgn.Program, c: Census, value: int) -> tuple[int, str]:
    """The PFN ``value`` names, and what it was taken for."""
    a = c.memmap
    if 0 <= value < a.nr:
        return value, "pfn"
    if a.pfn_of_page_ptr(value) >= 0:
        return a.pfn_of_page_ptr(value), "struct page"
    if a.pfn_of_virt(value) >= 0:
        return a.pfn_of_virt(value), "direct-map address"
    try:
        return follow_pfn(prog["init_mm"].address_of_(), value).value_(), "kernel virtual address"
    except drgn.FaultError:
        raise ValueError(f"{value:#x} is not a PFN, a struct page, or a mapped kernel address") from None


def explain_page(prog: drgn.Program, value: int, c: Census, references: bool = True) -> PageReport:
    """Explain the page ``value`` names (see ``resolve_pfn``).  For a leak
    candidate (``orphans.CANDIDATE_CLASSES``), ``references`` runs the
    reference scan of ``orphans`` and keeps what it found for this page."""
    a = c.memmap
    pfn, given = resolve_pfn(prog, c, value)
    klass = c.class_of(pfn)
    if klass == PageClass.NO_PAGE:
        raise ValueError(f"pfn {pfn} has no struct page (a hole in physical memory)")
    head = a.head_of(pfn)
    words = a.read(np.array([pfn, head]))
    page = pfn_to_page(prog, pfn)
    try:
        flags = decode_page_flags(page)
    except drgn.FaultError:
        flags = "(unreadable)"
    at = {int(p): i for i, p in enumerate(words.pfn)}
    report = PageReport(pfn, given, head, a.order_of(head), klass.label, flags,
                        int(words.refcount[at[head]]), int(words.mapcount[at[pfn]].astype(np.int32)),
                        int(words.mapping[at[head]]), "", block=bool(np.isin(head, a.blocks)))
    try:
        report.owner = owner_of(prog, c, report, klass)
    except (drgn.FaultError, LookupError, ValueError) as e:
        report.problems.append(f"owner not read: {e}")
    if c.page_owners is not None:
        report.page_owner = c.page_owners.lookup(np.array([head])).get(head)
    if references and klass in CANDIDATE_CLASSES:
        # with every candidate, as ``orphans`` scans: a page can be held
        # through another candidate (a referenced page's pointer, the start
        # of its alloc_pages_exact() run)
        scan = scan_references(c, candidate_heads(c))
        where = Describer(c)
        report.references = [where(r) for r in scan.references.get(head, [])]
        if head in scan.references:
            report.inferred = inferred_holds(scan.references, known_holds(scan.references)).get(head)
        report.problems += scan.problems
    return report


def owner_of(prog: drgn.Program, c: Census, report: PageReport, klass: PageClass) -> str:
    """Who owns the page, for the classes where the kernel says (from the
    words ``report`` already holds where they suffice)."""
    a = c.memmap
    pfn, head = report.pfn, report.head
    if klass == PageClass.SLAB:
        obj = SlabObjects(prog, a)(a.virt_of_pfn(pfn))
        return f"slab cache {obj.cache}" if obj else ""
    if klass == PageClass.NIC_RING:
        for ring in c.rings.rings:
            hit = np.nonzero(ring.pfn == head)[0]
            if hit.size:
                i = int(hit[0])
                bias = f", pagecnt_bias {int(ring.bias[i])}" if ring.bias[i] >= 0 else ""
                return f"ring {ring.name} slot {int(ring.slot[i])}, offset {int(ring.offset[i]):#x}{bias}"
            if head in ring.extra_heads(a):
                return f"ring {ring.name} (outside the slots: a partly built frame or its frag cache)"
        return ""
    if klass == PageClass.PAGE_POOL:
        return page_pool_of(pfn_to_page(prog, head))
    if klass == PageClass.PERCPU:
        return "a per-cpu chunk (its pages are not listed in a vm_struct)"
    if klass == PageClass.DEVICE:
        for r in c.device:
            if r.start <= pfn < r.end:
                return f"ZONE_DEVICE range {r.start:#x}-{r.end:#x} of dev_pagemap {r.pgmap:#x} ({r.kind})"
        return ""
    if klass == PageClass.PAGE_EXT:
        return "a page_ext table of mem_section (page_owner records and other per-page extensions)"
    if klass in (PageClass.VMALLOC, PageClass.KERNEL_STACK):
        return Describer(c).vmalloc(a.virt_of_pfn(pfn))
    if klass in (PageClass.FILE, PageClass.SHMEM):
        page = pfn_to_page(prog, head)
        mapping = page.mapping
        inode = mapping.host
        path = ""
        for dentry in hlist_for_each_entry(
                "struct dentry", inode.i_dentry.address_of_(), "d_u.d_alias"):
            path = d_path(dentry).decode(errors="replace")
            break
        return f"inode {inode.i_ino.value_()} {path or '(no dentry)'} index {page.index.value_()}"
    if klass == PageClass.ANON:
        thp = f", a transparent huge page of order {report.order}" if report.order else ""
        return f"anonymous memory, anon_vma {report.mapping & ~3:#x}{thp}"
    return ""
