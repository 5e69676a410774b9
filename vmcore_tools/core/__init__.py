"""Layer 1, the ground: opening a target (a vmcore or the live kernel) with its
debug info, asking drgn what this kernel has (feature detection), running
each stage under one guard, and reading kernel structs by their DWARF
layout.  Imports nothing else of the package.
"""
