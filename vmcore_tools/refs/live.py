"""The live re-check: on a running kernel, a word read once may have
changed by the time the scan ends."""

from __future__ import annotations

import drgn
import numpy as np

from vmcore_tools.refs.engine import ScanEngine

#: regions whose references are not words in memory: nothing to re-read
NOT_WORDS = ("page tables", "run", "panic")


def drop_unstable(ctx: ScanEngine) -> None:
    """Live kernel: re-read every referring word and drop the references
    that no longer point at their page.  Reading ``/proc/kcore`` itself
    copies kernel memory (the memmap included) through a bounce buffer
    that is a slab object while the read lasts, so a copy of a stale
    pointer can be seen once; the re-read (which finds the buffer zeroed
    and reused) does not see it again."""
    refs = ctx.references
    for head, found in list(refs.items()):
        keep = []
        for ref in found:
            if ref.region in NOT_WORDS:
                keep.append(ref)
                continue
            try:
                word = np.array([ctx.prog.read_u64(ref.address)], np.uint64)
            except drgn.FaultError:
                continue
            if ctx.matcher.still_points(word, ref.kind, head, ref.value):
                keep.append(ref)
        if keep:
            refs[head] = keep
        else:
            del refs[head]
            ctx.problems.append(f"pfn {head}: its only references changed while read (live)")
