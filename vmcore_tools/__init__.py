"""vmcore-tools: where did every page go, and who leaked it?

Python API (usable from a drgn REPL)::

    from vmcore_tools import open_program, census
    prog = open_program("vmcore", vmlinux="vmlinux-6.1.0-56-amd64")
    c = census(prog)            # or census(prog) inside a drgn session
    c.totals()["unattributed"]  # pages per owner class
    c.class_of(pfn)             # PageClass of one page (1 byte per page kept)
    c.decomposition()           # T = U + K + S + C + F, in pages
"""

from .census import Census, census
from .classify import PageClass
from .target import TargetError, open_program

__all__ = ["Census", "PageClass", "TargetError", "census", "open_program"]
__version__ = "0.1.0"
