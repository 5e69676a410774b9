"""Slab caches, slabtop-style: objects, active objects, object size, slabs and
memory per cache, with the names merged into each cache.

Fact: SLUB keeps per node ``nr_slabs`` and ``total_objects``; free objects
are on the partial lists and the per-CPU slabs, which drgn's
``slab_cache_usage()`` walks.  Caches with compatible size and flags are
merged at creation: the merged names exist only as sysfs aliases, which
``get_slab_cache_aliases()`` recovers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.slab import (for_each_slab_cache, get_slab_cache_aliases,
                                     slab_cache_pages_per_slab, slab_cache_usage)


@dataclass
class SlabCache:
    name: str
    objects: int
    active: int
    object_size: int        # bytes per object slot with metadata (kmem_cache.size, /proc/slabinfo's objsize)
    slabs: int
    pages_per_slab: int
    page_size: int
    aliases: list[str] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return self.slabs * self.pages_per_slab

    @property
    def total_bytes(self) -> int:
        """Memory of the cache's slabs (what slabtop calls CACHE SIZE)."""
        return self.pages * self.page_size


SORT_KEYS = {
    "size": lambda c: -c.total_bytes,
    "objects": lambda c: -c.objects,
    "active": lambda c: -c.active,
    "objsize": lambda c: -c.object_size,
    "slabs": lambda c: -c.slabs,
    "name": lambda c: c.name,
}


def slab_caches(prog: drgn.Program, sort: str = "size") -> list[SlabCache]:
    """Every slab cache, sorted by ``sort`` (a key of ``SORT_KEYS``)."""
    try:
        aliases = get_slab_cache_aliases(prog)
    except (LookupError, ValueError):   # no sysfs aliases to read (SLAB, no sysfs)
        aliases = {}
    merged: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        merged.setdefault(target, []).append(alias)
    page_size = prog["PAGE_SIZE"].value_()
    out = []
    for cache in for_each_slab_cache(prog):
        name = cache.name.string_().decode(errors="replace")
        try:
            usage = slab_cache_usage(cache)
        except (drgn.FaultError, ValueError) as e:
            raise ValueError(f"slab cache {name}: {e}") from e
        out.append(SlabCache(name, usage.num_objs, usage.num_objs - usage.free_objs,
                             cache.size.value_(), usage.num_slabs,
                             slab_cache_pages_per_slab(cache), page_size, sorted(merged.get(name, []))))
    return sorted(out, key=SORT_KEYS[sort])
