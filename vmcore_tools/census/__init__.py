"""Layer 5, the census: every physical page classed by owner (one rule per
class), the walks that claim pages for a class, and the reconciliation with
the kernel's own counters.
"""
