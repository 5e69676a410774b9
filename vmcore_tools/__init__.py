"""vmcore-tools: where did every page go, and who leaked it?

Python API (usable from a drgn REPL)::

    from vmcore_tools import open_program, census
    prog = open_program("vmcore", vmlinux="vmlinux-6.1.0-56-amd64")
    c = census(prog)            # or census(prog) inside a drgn session
    c.totals()["unattributed"]  # pages per owner class
    c.class_of(pfn)             # PageClass of one page (1 byte per page kept)
    c.decomposition()           # T = U + K + S + C + F, in pages
    c.rings.rings               # NIC rx rings and the pages each holds
    r = orphans(prog, c)        # reference scan over the census' unattributed pages
    r.suspects[0].label         # "22 order-0 allocations ... frames addressed to eth2 (i40e)"
    [o.pfn for o in r.orphans]
"""

from vmcore_tools.census.census import Census, census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.orphans import OrphanReport, orphans
from vmcore_tools.net.rings import walk_rings as rings
from vmcore_tools.core.target import TargetError, open_program

__all__ = ["Census", "OrphanReport", "PageClass", "TargetError", "census", "open_program",
           "orphans", "rings"]
__version__ = "0.1.0"
