"""Layer 6, the reference model: the registry (data: what the scan reads, how a
word counts there, who holds pages without a word), the matcher, the scan
engine and its small API, the roots, the owners, the allocation runs and the
live re-check.
"""
