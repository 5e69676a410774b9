"""kmalloc's size classes, and the bytes of an object its user never wrote.

Fact: ``kmalloc(size)`` serves a request from the smallest of its caches
that fits it (``kmalloc_caches[type][kmalloc_index(size)]``: 8, 16, 32, 64,
96, 128, 192, 256, 512 ... bytes, the classes below ``KMALLOC_MIN_SIZE``
left out), so an object of kmalloc-128 was asked for with 97 to 128 bytes.
SLUB keeps no requested size outside slub_debug's kmalloc redzone
(``orig_size``), so the bytes past the next smaller class may lie past the
request: bytes the user never writes.  Unless the kernel zeroes objects
when it hands them out (``slab_zeroed_on_alloc``), they keep what the
object's previous user left there, a page pointer among it.

Not read: the bucket sets of ``kmem_buckets_create()`` (6.11+, outside
``kmalloc_caches``): their objects' words are taken as written, like those
of any cache whose objects are the size their users ask for.
"""

from __future__ import annotations

import drgn

from vmcore_tools.core.features import has_object


def slab_zeroed_on_alloc(prog: drgn.Program) -> bool:
    """Whether the kernel zeroes every slab object it hands out.

    Fact: with ``init_on_alloc`` (5.3+, the static key of that name; on by
    default where CONFIG_INIT_ON_ALLOC_DEFAULT_ON, as in Debian's kernels)
    an allocated object holds only what its user wrote or zeros.  Without
    it, the bytes a user does not write -- the tail of a kmalloc object
    past the size asked for (``slack_offsets``) -- keep what the object's
    previous user left, and a stale copy of a page pointer there reads as a
    reference."""
    if not has_object(prog, "init_on_alloc"):
        return False
    return prog["init_on_alloc"].key.enabled.counter.value_() > 0


def slack_offsets(prog: drgn.Program) -> dict[int, int]:
    """Each kmalloc cache (its ``struct kmem_cache`` address) -> the offset
    in its objects from which a word may lie past the request: the object
    size of the next smaller cache of the same kmalloc type (0 for the
    smallest, whose every request may be shorter than a word).

    ``kmalloc_caches`` is ``[NR_KMALLOC_TYPES][KMALLOC_SHIFT_HIGH + 1]``
    (4.20+; ``kmem_buckets`` rows from 6.10, the same shape), one row of a
    single type before 4.20; empty slots are NULL."""
    if not has_object(prog, "kmalloc_caches"):
        return {}
    table = prog["kmalloc_caches"]
    rows = [table] if table.type_.type.unaliased_kind() == drgn.TypeKind.POINTER else list(table)
    out: dict[int, int] = {}
    for row in rows:
        sizes = sorted({(c.object_size.value_(), c.value_()) for c in row if c.value_()})
        below = 0
        for size, cache in sizes:
            out.setdefault(cache, below)
            below = size
    return out
