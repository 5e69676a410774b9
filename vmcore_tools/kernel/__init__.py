"""Layer 3, subsystem readers: kernel structures outside mm that hold or name
pages -- task and interrupt stacks, the LRU's list heads, per-CPU batches,
bio caches, blk-mq requests, IOMMU page tables and virtqueues.
"""
