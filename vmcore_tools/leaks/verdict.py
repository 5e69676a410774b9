"""The verdict: the answer in a sentence or two, and the coverage that says
how far to trust it (what this core let the analysis see, and what not);
and the orphans report as the JSON document that carries both
(``orphans_json``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from vmcore_tools.census.classes import KERNEL_CLASSES
from vmcore_tools.core.features import kernel_release
from vmcore_tools.core.stages import abandoned_stages, failed_stages
from vmcore_tools.leaks.orphans import REFERENCED_LISTED, OrphanReport
from vmcore_tools.mm.kmalloc import slab_zeroed_on_alloc
from vmcore_tools.refs.unread import BY_DESIGN, OTHER
from vmcore_tools.core.arrays import unique


def coverage(r: OrphanReport) -> dict:
    """What this core let the analysis see, and what it did not: the part of
    a verdict that says how far to trust it."""
    c = r.census
    return {
        "architecture": c.prog.platform.arch.name.lower(),
        "unreadable_pages": c.totals()["unreadable"],
        "damaged_pages": c.totals()["damaged"],
        "rings_walked": list(c.rings.walked),
        "rings_not_walked": sorted({p.split(":")[0] for p in c.rings.problems
                                    if "rings are not walked" in p or "debug info lacks" in p}),
        "failed_stages": failed_stages(c.problems + r.problems),
        "stopped_by_missing_memory": abandoned_stages(c.problems + r.problems),
        "iommu_domains_read": r.scan.iommu_domains_read,
        "iommu_domains_not_read": r.scan.iommu_domains_not_read,
        "held_through": held_through(r),
        "device_pages": c.totals()["device"],
        "slab_zeroed_on_alloc": slab_zeroed_on_alloc(c.prog),
        "boot_memory_not_read": r.scan.boot_memory_not_read,
    }


#: where a reference was found -> the owner class that holds a page there
#: without a plain pointer next to it (registry.OWNERS and the layout roots)
OWNER_REGIONS = {"run": "allocation runs", "struct page": "page->lru/private links",
                 "page tables": "kernel mappings", "iommu": "IOMMU tables", "virtqueue": "virtqueues",
                 "panic": "the panic's vmcoreinfo"}


def held_through(r: OrphanReport) -> dict[str, int]:
    """Referenced candidate allocations by where their first reference was
    found (a region of the scan): which kinds of holder this core has."""
    out: dict[str, int] = {}
    for refs in r.references.values():
        if refs:
            out[refs[0].region] = out.get(refs[0].region, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def coverage_text(cov: dict, page_size: int) -> str:
    """The coverage in one sentence."""
    return "Coverage: " + "; ".join(coverage_parts(cov, page_size)) + "."


def coverage_parts(cov: dict, page_size: int) -> list[str]:
    """The coverage, one statement each: what the core let the analysis see, and what not."""
    stopped = cov["stopped_by_missing_memory"]
    parts = [f"architecture {cov['architecture']}",
             f"{_size(cov['unreadable_pages'] * page_size)} of memory unreadable (filtered or excluded from "
             "the dump)" if cov["unreadable_pages"] else
             "memory missing from the dump" if stopped else "all memory readable",
             *([f"{_size(cov['damaged_pages'] * page_size)} of struct pages damaged (states no kernel writes: "
                "not classed, out of the verdict)"] if cov.get("damaged_pages") else []),
             f"rings walked: {', '.join(cov['rings_walked']) or 'none'}"]
    if stopped:
        parts.append(f"STOPPED by memory missing from the dump: {', '.join(stopped)} (their pages may look "
                     "orphaned)")
    if cov.get("iommu_domains_read"):
        parts.append(f"IOMMU page tables read for {cov['iommu_domains_read']} DMA domains")
    if cov.get("iommu_domains_not_read"):
        parts.append(f"NOT read: IOMMU page tables of {cov['iommu_domains_not_read']} DMA domains (pages leaked "
                     "while mapped may look referenced)")
    if cov.get("slab_zeroed_on_alloc") is False:
        parts.append("slab objects are not zeroed when allocated (init_on_alloc off): a word in a kmalloc "
                     "object past its next smaller size class may be a stale copy left by a previous user (the "
                     "pages held only so are in the inferred tier, rule kmalloc slack)")
    if cov.get("device_pages"):
        parts.append(f"{_size(cov['device_pages'] * page_size)} of device memory (ZONE_DEVICE: pmem, device "
                     "pages) left out: no page allocator owns it")
    parts += boot_memory_parts(cov.get("boot_memory_not_read", {}))
    owners = [f"{n} by {OWNER_REGIONS[region]}" for region, n in cov.get("held_through", {}).items()
              if region in OWNER_REGIONS]
    if owners:
        parts.append(f"held without a plain pointer: {', '.join(owners)}")
    if cov["rings_not_walked"]:
        parts.append(f"NOT walked: {', '.join(cov['rings_not_walked'])} (their pages may look orphaned)")
    if cov["failed_stages"]:
        parts.append(f"PARTIAL: failed stages {', '.join(cov['failed_stages'])}")
    return parts


def boot_memory_parts(not_read: dict[str, int]) -> list[str]:
    """What of boot memory the scan did not read (``unread``): the part with
    no allocation map first -- a page named only there looks orphaned --,
    then what is left unread by design."""
    parts = []
    if not_read.get(OTHER):
        parts.append(f"NOT read: {_size(not_read[OTHER])} of boot memory with no allocation map ({OTHER}: a "
                     "page named only there looks orphaned)")
    known = [f"{name} {_size(n)} ({BY_DESIGN[name]})" for name, n in not_read.items()
             if name != OTHER]
    if known:
        parts.append(f"boot memory left unread: {', '.join(known)}")
    return parts


def verdict(r: OrphanReport) -> str:
    """The answer in one plain sentence or two, and what it covers."""
    c = r.census
    ps = c.memmap.page_size
    return f"{answer(r)} {coverage_text(coverage(r), ps)}"


def answer(r: OrphanReport) -> str:
    """The answer alone, without its coverage."""
    c = r.census
    ps = c.memmap.page_size
    t = c.totals()
    kernel = sum(t[k.label] for k in KERNEL_CLASSES)
    slab_share = t["slab"] / max(kernel, 1)
    if not r.scanned:
        return (f"Not known whether pages leaked: the reference scan failed, so no unattributed page was "
                f"checked ({_size(t['unattributed'] * ps)} unattributed). Slab holds {_size(t['slab'] * ps)}.")
    if not len(r.found):
        if r.inferred_heads.size:
            return (f"No orphaned page: every unattributed page is referenced, but {inferred_text(r)} Slab holds "
                    f"{_size(t['slab'] * ps)}.")
        return (f"No page-allocator leak: every unattributed page ({r.referenced_pages} "
                f"pages) is referenced from live kernel memory. Slab holds {_size(t['slab'] * ps)}.")
    named = [s for s in r.suspects if s.netdev]
    if named:
        # the driver whose devices' frames fill the most pages, and those devices, most first
        # (the ports of one NIC, bonded or not, leak the same way)
        by_driver, by_device = Counter(), Counter()
        for s in named:
            by_driver[s.driver] += s.pages
            by_device[s.driver, s.netdev] += s.pages
        driver, pages = by_driver.most_common(1)[0]
        devices = [dev for (d, dev), _ in by_device.most_common() if d == driver]
        them = f"{devices[0]} (stale frames sent to it)" if len(devices) == 1 else \
            f"{', '.join(devices[:-1])} and {devices[-1]} (stale frames sent to them)"
        who = f"{100 * pages / r.orphaned_pages:.0f}% look like {driver} rx buffers of {them}"
    else:
        who = "no device could be named from their contents"
    orders = "/".join(str(o) for o in unique(r.found.order).tolist())
    more = f" Besides, {inferred_text(r)}" if r.inferred_heads.size else ""
    return (f"{_size(r.orphaned_pages * ps)} in {len(r.found)} order-{orders} allocations leaked from "
            f"the page allocator (orphaned: nothing references them); {who}. Slab is "
            f"{'not ' if slab_share < 0.5 else ''}the bulk of kernel memory ({_size(t['slab'] * ps)} "
            f"of {_size(kernel * ps)}).{more}")


def inferred_text(r: OrphanReport) -> str:
    """The inferred tier in a sentence: how much, and what it looks like."""
    groups = r.inferred
    looks = "; ".join(g.label for g in groups[:3]) + ("; ..." if len(groups) > 3 else "")
    return (f"{r.inferred_pages} pages ({len(r.inferred_heads)} allocations) are held only by inference, "
            f"and a leak of that size could hide there; if they are leaks, they look like: {looks} "
            f"(orphans --inferred-pfns FILE lists them).")


def _size(nbytes: int) -> str:
    for unit, div in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if nbytes >= div:
            return f"{nbytes / div:.1f} {unit}"
    return f"{nbytes} B"


def orphans_json(r: OrphanReport) -> dict:
    """The orphans report as ``orphans --json`` writes it (schema orphans/3)."""
    c = r.census
    return {
        "schema": "vmcore-tools/orphans/3",
        "release": kernel_release(c.prog),
        "page_size": c.memmap.page_size,
        "candidates": r.candidates,
        "scanned": r.scanned,
        "orphaned_pages": r.orphaned_pages,
        "orphaned_allocations": len(r.found),
        "referenced_pages": r.referenced_pages,
        "referenced_allocations": int(r.referenced_heads.size),
        "inferred_pages": r.inferred_pages,
        "inferred_allocations": int(r.inferred_heads.size),
        "inferred": [asdict(g) for g in r.inferred],
        "suspects": [asdict(s) for s in r.suspects],
        "orphans": [asdict(o) for o in r.listed_orphans()],
        "referenced": [asdict(e) for e in r.evidence(r.referenced_heads[:REFERENCED_LISTED])],
        "scan": {"bytes": r.scan.bytes_scanned, "seconds": round(r.scan.seconds, 3),
                 "gb_per_s": round(r.scan.gb_per_s, 3), "bytes_by_root": r.scan.bytes_by_root},
        "seconds": round(r.seconds, 3),
        "verdict": verdict(r),
        "coverage": coverage(r),
        "page_owner": r.page_owner,
        "problems": r.problems,
    }
