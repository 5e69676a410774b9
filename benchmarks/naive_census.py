"""The naive baseline for benchmarks/peers.py: what one writes in a drgn
session without vmcore-tools -- one drgn Object per page, drgn's own page
helpers to classify it.  It answers far less (no owners of kernel pages, no
rings, no orphans); it is here to measure what a per-page Object costs.

    drgn -c VMCORE -s VMLINUX benchmarks/naive_census.py
"""

from collections import Counter

from drgn.helpers.linux.mm import (PageCompound, PageLRU, PageReserved, PageSlab, PageSwapBacked, PageTail,
                                   compound_head, for_each_page)

counts: Counter[str] = Counter()
for page in for_each_page(prog):  # noqa: F821 (drgn provides prog)
    try:
        if page._refcount.counter.value_() == 0:
            kind = "free (refcount 0)"
        elif PageSlab(page) or (PageTail(page) and PageSlab(compound_head(page))):
            kind = "slab"
        elif PageReserved(page):
            kind = "reserved"
        elif PageLRU(page) and page.mapping.value_() & 1:       # PAGE_MAPPING_ANON
            kind = "anon"
        elif PageLRU(page) and PageSwapBacked(page):
            kind = "shmem"
        elif PageLRU(page):
            kind = "file"
        elif PageCompound(page):
            kind = "other compound"
        else:
            kind = "other"
    except Exception:  # a page drgn cannot read: counted, not guessed
        kind = "unreadable"
    counts[kind] += 1
for kind, n in counts.most_common():
    print(f"{kind:20} {n}")
print(f"{'total':20} {sum(counts.values())}")
