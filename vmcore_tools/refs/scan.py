"""The reference scan, as the registry says it: read every root, ask every
owner, then take the closure -- a candidate page that is referenced is
itself live memory, because it may hold the only pointer to another one (a
large kmalloc'd array of buffers, a DMA descriptor ring, the next level of
a page table).

    >>> from vmcore_tools.refs.scan import scan_references
    >>> result = scan_references(census, heads)
    >>> result.references[pfn][0].where
"""

from __future__ import annotations

import time

import drgn
import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.core.stages import run_stage
from vmcore_tools.refs.engine import ScanEngine
from vmcore_tools.refs.live import drop_unstable
from vmcore_tools.refs.reader import Progress
from vmcore_tools.refs.references import ScanResult
from vmcore_tools.refs.registry import OWNERS, ROOTS, Owner, Root
from vmcore_tools.refs.unread import boot_memory_not_read


def run_scan(ctx: ScanEngine, without: frozenset[str] = frozenset()) -> ScanResult:
    """Read every root and ask every owner of the registry, then again for
    the pages found referenced until nothing new is found; entries named in
    ``without`` are left out (to test what each one holds).  Each entry runs
    as its own stage, "scan: NAME"."""
    t0 = time.monotonic()
    roots = [r for r in ROOTS if r.name not in without]
    owners = [o for o in OWNERS if o.name not in without]

    def run_root(root: Root, *args) -> None:
        ctx.counts, ctx.infers, ctx.entry = root.counts, dict(root.infers), root.name
        run_stage(f"scan: {root.name}", lambda: root.read(ctx, *args), None, ctx.problems)

    def run_owner(owner: Owner) -> None:
        ctx.entry = owner.name
        run_stage(f"scan: {owner.name}", lambda: owner.find(ctx), None, ctx.problems)

    for root in roots:
        if not root.closure:
            run_root(root)
    for owner in owners:
        if not owner.closure:
            run_owner(owner)
    # The closure owners (runs, memmap links) judge a page by what else
    # is referenced -- a run takes in unreferenced pages only -- so they
    # are asked once the referenced pages' closure is complete, and the
    # closure is taken again from what they add, until neither adds.
    scanned: set[int] = set()
    while True:
        todo = np.array(sorted(h for h in ctx.references if h not in scanned), np.int64)
        if todo.size:
            scanned.update(todo.tolist())
            for root in roots:
                if root.closure:
                    run_root(root, todo)
            continue
        known = len(ctx.references)
        for owner in owners:
            if owner.closure:
                run_owner(owner)
        if len(ctx.references) == known:
            break
    if ctx.prog.flags & drgn.ProgramFlags.IS_LIVE:
        run_stage("scan: live re-check", lambda: drop_unstable(ctx), None, ctx.problems)
    ctx.result.boot_memory_not_read = run_stage(
        "scan: boot memory not read", lambda: boot_memory_not_read(ctx.census, ctx.read.spans), {}, ctx.problems)
    ctx.result.seconds = time.monotonic() - t0
    return ctx.result


def scan_references(census: Census, heads: np.ndarray, progress: Progress | None = None,
                    refcounts: np.ndarray | None = None, without: frozenset[str] = frozenset()) -> ScanResult:
    """References to the compound heads ``heads`` anywhere in live kernel
    memory; ``refcounts``, the heads' ``_refcount``, where the caller has
    read them already (on a compressed dump, reading them is a pass over
    the memmap); the registry entries named in ``without`` are left out."""
    return run_scan(ScanEngine(census, heads, progress, refcounts), without)
