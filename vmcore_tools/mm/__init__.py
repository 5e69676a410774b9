"""Layer 2, memory-management readers without policy: the memmap (``struct
page`` in bulk), page flags and types, page tables, slab, page_owner, CMA
and the kernel's counters.  They say what the dump holds; they decide
nothing about owners or leaks.
"""
