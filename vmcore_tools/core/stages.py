"""Stages of an analysis, each run under one guard.

An analysis is a chain of walks and scans over memory we do not control: a
dump can be filtered or truncated, a live kernel changes while it is read,
and a kernel newer than any we tested can have a layout no walker expected.
Whatever one stage meets, the others go on, and the output says what is
missing:

* a **fault** (memory the stage needs is unreadable) loses that stage's
  evidence and is reported as a problem, as it always was;
* any **other error** fails the stage: the result is *partial* and the
  problem says which stage failed and what its loss means.  The command then
  exits with ``EXIT_PARTIAL`` instead of printing a traceback.

Every stage is named in ``STAGES`` with what it contributes, so a failure
can say what the result lacks.  ``VMCORE_TOOLS_FAIL_STAGE=NAME`` (a
comma-separated list) makes the named stages fail on purpose: the
failure-injection test runs each stage that way on a real core.
``VMCORE_TOOLS_DEBUG=1`` prints the traceback of a failed stage on stderr.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

import drgn

T = TypeVar("T")

#: exit codes of every command
EXIT_OK, EXIT_LEAK, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 1, 2, 3

#: stage name -> what the result lacks when it fails
STAGES: dict[str, str] = {
    "device pages": "ZONE_DEVICE pages (pmem, device memory) may be counted as kernel memory",
    "free lists": "free pages may be counted as allocated",
    "page tables": "page-table pages and the kernel's own mappings are not known",
    "ring walkers": "ring pages may look unattributed",
    "per-CPU free lists": "pages on per-CPU free lists may look unattributed",
    "vmap areas": "vmalloc'd pages and stacks may look unattributed",
    "page_ext tables": "page_ext tables may look unattributed",
    "page_frag caches": "page_frag cache pages may look unattributed",
    "struct pages": "pages are not classified",
    "multi-page blocks": "blocks allocated without __GFP_COMP are not known: a pointer into one's tail holds "
                         "nothing, its tail is not read, and its tail pages count as zero_ref",
    "slab caches": "slab caches are missing from the list",
    "kernel counters": "the census is not compared with the kernel's counters",
    "reference scan": "no candidate page was checked for references: which pages are orphaned is not known",
    "scan: kernel data": "references from the kernel image are not seen",
    "scan: dead interrupt stack frames": "the dead frames of interrupt stacks are read: a page a "
                                         "finished interrupt handler worked on may look referenced",
    "scan: stale sheaf slots": "the stale slots of slab sheaves are read as holders: a page an object "
                               "handed out since named may look referenced",
    "scan: per-cpu batches": "the dead slots of per-CPU folio and skb batches, and the free skbs cached "
                             "for reuse, are read: a page a freed folio or skb was on may look referenced",
    "scan: kvfree_rcu page cache": "the pages kvfree_rcu() keeps for reuse are read: a page their stale "
                                   "contents name may look referenced",
    "scan: free per-cpu areas": "the free areas of per-cpu chunks are read: a page a freed per-cpu "
                                "allocation named may look referenced",
    "scan: per-cpu areas": "references from per-CPU data are not seen",
    "scan: task stacks": "references from task stacks are not seen",
    "scan: page_pool DMA index": "page_pool DMA indexes are read as holders: pages leaked from a pool "
                                 "may look referenced",
    "scan: bio caches": "bios cached for reuse are read as holders: a page a freed bio last did I/O to "
                        "may look referenced",
    "scan: LRU list heads": "the LRU's list heads are read as holders: a page released while still on "
                            "the LRU may look referenced",
    "scan: slab": "references from slab objects are not seen",
    "scan: KFENCE objects": "references from objects KFENCE served are not seen",
    "scan: vmalloc": "references from vmalloc areas and modules are not seen",
    "scan: kernel pages": "references from large kmalloc and page_frag pages are not seen",
    "scan: rx buffers": "references from rx buffers (skb frags) are not seen",
    "scan: virtqueues": "virtqueue buffers are not seen, and their rings are read as plain pages",
    "scan: blk-mq requests": "blk-mq's request pages are read as plain pages: a request's packed fields "
                             "may read as a physical address that holds a leaked page",
    "scan: GICv3 ITS tables": "the level-2 tables of an indirect GICv3 ITS table look unreferenced",
    "scan: iommu page tables": "IOMMU page tables are read as plain pages: pages leaked while DMA-mapped "
                               "may look referenced",
    "scan: kernel mappings": "pages mapped outside the direct map are not seen",
    "scan: referenced pages": "references held by referenced pages are not followed",
    "scan: memmap links": "pages listed through the struct page of a referenced page are not seen",
    "scan: CMA allocations": "the pages of CMA allocations after their first may be reported as orphaned",
    "scan: allocation runs": "alloc_pages_exact() tails may be reported as orphaned",
    "scan: boot memory not read": "the coverage does not say how much boot memory the scan left unread",
    "scan: live re-check": "references that changed while read are kept",
    "scan: panic vmcoreinfo": "the vmcoreinfo page a kdump panic dropped may be reported as orphaned",
    "evidence: frames": "orphans are not matched to a device by their contents",
    "evidence: page_owner": "orphans carry no allocating stack",
    "evidence: contents": "orphan groups carry no contents evidence",
    "evidence: history": "orphans are not told apart by what their flags say they were (released page cache, pins)",
    "evidence: page_pool": "orphaned page_pool pages do not name the device their pool serves",
    "suspects": "orphans are not grouped into suspects",
    "reachability: object table": "no allocated object is known: nothing is traced, and no object is called "
                                  "unreachable",
    "reachability: boot memory": "objects named from the image and memblock memory may be called unreachable",
    "reachability: task stacks": "objects named from task stacks may be called unreachable",
    "reachability: vmalloc": "objects named from vmalloc areas and modules may be called unreachable",
    "reachability: page frags": "objects named from skb heads in page frags may be called unreachable",
    "reachability: held pages": "objects named from held pages may be called unreachable",
    "reachability: slab objects": "slab objects are not traced: what they reach may be called unreachable",
    "reachability: KFENCE objects": "objects KFENCE served are not traced: what they reach may be called "
                                    "unreachable",
    "reachability: large kmalloc": "large kmalloc buffers are not traced",
    "reachability: hidden pages": "pages held only by unreachable objects are not named",
    "pictures": "no memory map or class bar is drawn",
}


class StageFailure(str):
    """A problem line that says a stage failed: the result is partial."""

    stage: str
    label: str      # the stage and its part ("ring walkers (page_pool)")

    def __new__(cls, stage: str, text: str, label: str = "") -> StageFailure:
        self = super().__new__(cls, text)
        self.stage = stage
        self.label = label or stage
        return self

    def __reduce__(self):       # copies (dataclasses.asdict) keep the stage
        return type(self), (self.stage, str(self), self.label)


class StageAbandoned(StageFailure):
    """A problem line that says a stage stopped at memory the dump lacks
    (makedumpfile ``-d`` or ``-e``, a truncated core): its evidence is
    missing, and the coverage says so."""


class StageDamaged(StageFailure):
    """A problem line that says a stage met a structure no kernel writes (a
    cyclic list, a count past its bound: ``walk.bounded``) and stopped
    following it: the result is partial."""


#: drgn's fault for a virtual address the kernel's page tables do not
#: translate: a kernel pointer that leads nowhere, where memory the dump
#: lacks faults as a missing segment or page (makedumpfile's filtering keeps
#: the page tables)
NOT_MAPPED = "address is not mapped"

#: whether the program analysed is the running kernel: there a pointer that
#: leads nowhere is a race with the kernel (an area freed between two
#: reads), not damage (``set_live``)
_live: ContextVar[bool] = ContextVar("live_program", default=False)


def set_live(prog: drgn.Program) -> None:
    """Say whether the program the stages read is the running kernel."""
    _live.set(bool(prog.flags & drgn.ProgramFlags.IS_LIVE))


#: the stage running now and its problems list (``run_stage``), for ``record_damage``
_running: ContextVar[tuple[str, str, list[str]] | None] = ContextVar("running_stage", default=None)


def damage_line(stage: str, text: str) -> StageDamaged:
    """The problem line of ``stage`` meeting damage (``text``: what, and where)."""
    return StageDamaged(stage, f"{stage}: {text}; partial result, {STAGES[stage]}")


def record_damage(text: str) -> bool:
    """Add ``text`` (what is damaged, and where) to the running stage's
    problems as a ``StageDamaged`` line; False when no stage runs."""
    running = _running.get()
    if running is None:
        return False
    name, _, problems = running
    # said once per stage, not per part of it: every walker meets the same damaged list
    line = damage_line(name, text)
    if line not in problems:
        problems.append(line)
    return True


def failed_stages(problems: list[str]) -> list[str]:
    """The stages whose failure ``problems`` records (an error, not a fault)."""
    return sorted({p.stage for p in problems if isinstance(p, StageFailure) and not isinstance(p, StageAbandoned)})


def abandoned_stages(problems: list[str]) -> list[str]:
    """The stages ``problems`` records as stopped at unreadable memory, with
    the part (walker, region) where one is named."""
    return sorted({p.label for p in problems if isinstance(p, StageAbandoned)})


def _injected(name: str) -> bool:
    return name in os.environ.get("VMCORE_TOOLS_FAIL_STAGE", "").split(",")


def run_stage(name: str, fn: Callable[[], T], default: T, problems: list[str], detail: str = "") -> T:
    """``fn()``, or ``default`` when it fails; the failure goes to ``problems``.

    ``detail`` names the part of the stage (a walker, a region) in the line."""
    if name not in STAGES:
        raise KeyError(f"stage {name!r} is not in STAGES")
    label = f"{name} ({detail})" if detail else name
    running = _running.set((name, label, problems))
    try:
        if _injected(name):
            raise RuntimeError("failure injected by VMCORE_TOOLS_FAIL_STAGE")
        return fn()
    except drgn.FaultError as e:
        if NOT_MAPPED in str(e) and not _live.get():
            line = StageDamaged(name, f"{label}: a pointer leads where the kernel's own page tables map "
                                f"nothing ({e}): the dump is damaged there; partial result, {STAGES[name]}",
                                label)
        else:
            line = StageAbandoned(name, f"{label}: abandoned, memory unreadable ({e})", label)
    except Exception as e:      # noqa: BLE001 -- the point of the guard
        if os.environ.get("VMCORE_TOOLS_DEBUG"):
            traceback.print_exc(file=sys.stderr)
        line = StageFailure(name, f"{label} failed ({type(e).__name__}: {e}): partial result, {STAGES[name]}",
                            label)
    finally:
        _running.reset(running)
    if line not in problems:        # a stage run once per group or per pass says it once
        problems.append(line)
    return default
