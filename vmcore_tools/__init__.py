"""vmcore-tools: where did every page go, and who leaked it?

Python API (usable from a drgn REPL)::

    from vmcore_tools import open_program
    prog = open_program("vmcore", vmlinux="vmlinux-6.1.0-56-amd64")
"""

from .target import TargetError, open_program

__all__ = ["TargetError", "open_program"]
__version__ = "0.1.0"
