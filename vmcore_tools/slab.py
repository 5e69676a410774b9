"""Slab caches, slabtop-style: objects, active objects, object size, slabs and
memory per cache, with the names merged into each cache.

Fact: SLUB keeps per node ``nr_slabs`` and ``total_objects``; free objects
are on the partial lists and the per-CPU slabs, which drgn's
``slab_cache_usage()`` walks.  Caches with compatible size and flags are
merged at creation: the merged names exist only as sysfs aliases, which
``get_slab_cache_aliases()`` recovers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.cpumask import for_each_online_cpu
from drgn.helpers.linux.percpu import per_cpu_ptr
from drgn.helpers.linux.slab import (for_each_slab_cache, get_slab_cache_aliases,
                                     slab_cache_pages_per_slab, slab_cache_usage, slab_object_info)

from .features import has_member, has_type
from .pages import Memmap


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
        usage = _usage(prog, cache, name)
        out.append(SlabCache(name, usage.num_objs, usage.num_objs - usage.free_objs,
                             cache.size.value_(), usage.num_slabs,
                             slab_cache_pages_per_slab(cache), page_size, sorted(merged.get(name, []))))
    return sorted(out, key=SORT_KEYS[sort])


#: how many times a live kernel's cache is read again when its freelists changed under the walk
LIVE_ATTEMPTS = 10


def _usage(prog: drgn.Program, cache: drgn.Object, name: str):
    """``slab_cache_usage(cache)``, read again while a live kernel tears it.

    Fact: drgn counts free objects by following each freelist pointer by
    pointer; on a live kernel an allocation or a free between two reads can
    leave the walk on a pointer of an older state (it faults, or the chain
    does not end).  The same walk a moment later is consistent again."""
    attempts = LIVE_ATTEMPTS if prog.flags & drgn.ProgramFlags.IS_LIVE else 1
    for _ in range(attempts):
        try:
            return slab_cache_usage(cache)
        except (drgn.FaultError, ValueError) as e:
            error = e
    raise ValueError(f"slab cache {name}: {error}"
                     + (f" ({attempts} reads, the kernel changed it each time)" if attempts > 1 else ""))


@dataclass
class SlabObject:
    cache: str
    address: int              # start of the object (slot) the address is in
    allocated: bool | None    # None: the freelists could not be read consistently


class SlabObjects:
    """Which slab object an address is in, and whether it is allocated.

    Fact (SLUB): an object is free exactly when it is on its slab's
    ``freelist`` or on the per-CPU ``freelist`` of the CPU whose active slab
    it is in.  The chain's next pointer sits at ``object + cache->offset``;
    with CONFIG_SLAB_FREELIST_HARDENED it is stored as ``next ^ cache->random
    ^ swab(&next)`` (plain ``&next`` before 5.7; no field tells which, so the
    decoding that keeps the chain inside its slab is kept).  Objects start at
    the slab's address plus ``cache->red_left_pad``, ``cache->size`` apart.

    drgn's ``slab_object_info()`` answers the same question but walks every
    CPU and the slab's freelist again for each address; here each slab's
    freelist and each cache's per-CPU freelists are walked once.  Kernels with
    per-CPU sheaves (6.18+) or SLAB go through ``slab_object_info()``.
    """

    #: a freelist that keeps changing under a live read is given up after this many tries
    TRIES = 20
    #: slabs whose free objects are remembered: a scan asks about the slab it
    #: is reading, so a short memory serves it and keeps it from growing with slab
    MAX_SLABS = 4096

    def __init__(self, prog: drgn.Program, pages: Memmap):
        self.prog, self.a = prog, pages
        self.live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE)
        self.slub = (has_member(prog, "struct kmem_cache", "cpu_slab")
                     and not has_member(prog, "struct kmem_cache", "cpu_sheaves"))
        slab = prog.type("struct slab" if has_type(prog, "struct slab") else "struct page")
        self.slab_cache_offset = drgn.offsetof(slab, "slab_cache")
        self.freelist_offset = drgn.offsetof(slab, "freelist")
        self.hardened = has_member(prog, "struct kmem_cache", "random")    # CONFIG_SLAB_FREELIST_HARDENED
        self.has_red_left_pad = has_member(prog, "struct kmem_cache", "red_left_pad")
        self.cpu_slab_member = "slab" if has_member(prog, "struct kmem_cache_cpu", "slab") else "page"
        self.swab: bool | None = None         # decided on the first hardened chain
        self.caches: dict[int, _Cache] = {}
        self.slabs: dict[int, tuple[_Cache, set[int] | None]] = {}

    def __call__(self, addr: int) -> SlabObject | None:
        """The object ``addr`` (a direct-map address) is in, or None outside slab."""
        if not self.slub:
            return self._from_drgn(addr)
        a = self.a
        pfn = a.pfn_of_virt(addr)
        if pfn < 0:
            return None
        head = a.head_of(pfn)
        if head not in self.slabs:
            if len(self.slabs) >= self.MAX_SLABS:
                del self.slabs[next(iter(self.slabs))]      # the oldest
            self.slabs[head] = self._slab(head)
        cache, free = self.slabs[head]
        first = a.virt_of_pfn(head) + cache.red_left_pad
        if addr < first:
            return SlabObject(cache.name, first, False)      # left redzone of the first object
        obj = first + (addr - first) // cache.size * cache.size
        allocated = None if free is None or cache.cpu_free is None else (
            obj not in free and obj not in cache.cpu_free)
        return SlabObject(cache.name, obj, allocated)

    def _slab(self, head: int) -> tuple["_Cache", set[int] | None]:
        a, prog = self.a, self.prog
        struct = a.memmap + head * a.struct_size
        addr = prog.read_u64(struct + self.slab_cache_offset)
        if addr not in self.caches:
            self.caches[addr] = self._cache(addr)
        cache = self.caches[addr]
        return cache, self._chain(cache, lambda: prog.read_u64(struct + self.freelist_offset), *self._span(head))

    def _cache(self, addr: int) -> "_Cache":
        prog = self.prog
        s = drgn.Object(prog, "struct kmem_cache *", addr)
        cache = _Cache(s.name.string_().decode(errors="replace"), s.size.value_(), s.offset.value_(),
                       s.random.value_() if self.hardened else None,
                       s.red_left_pad.value_() if self.has_red_left_pad else 0)
        cache.cpu_free = set()
        for cpu in for_each_online_cpu(prog):
            c = per_cpu_ptr(s.cpu_slab, cpu)
            slab = c.member_(self.cpu_slab_member).value_()
            if not slab:
                continue
            if prog.read_u64(slab + self.slab_cache_offset) != addr:
                continue
            head = self.a.pfn_of_page_ptr(slab)
            chain = self._chain(cache, lambda c=c: c.freelist.value_(), *self._span(head))
            if chain is None:
                cache.cpu_free = None
                break
            cache.cpu_free |= chain
        return cache

    def _span(self, head: int) -> tuple[int, int]:
        """Direct-map addresses ``[lo, hi)`` of the slab whose head page is ``head``."""
        return self.a.virt_of_pfn(head), self.a.virt_of_pfn(head + (1 << self.a.order_of(head)))

    def _chain(self, cache: "_Cache", start: Callable[[], int], lo: int, hi: int) -> set[int] | None:
        """The free objects on a freelist whose objects lie in ``[lo, hi)``;
        None if it cannot be followed (corrupt, or changing under a live read)."""
        for _ in range(self.TRIES if self.live else 1):
            seen: set[int] = set()
            try:
                ptr = start()
                while ptr:
                    if ptr in seen or not lo <= ptr < hi:
                        break
                    seen.add(ptr)
                    ptr = self._next(cache, ptr + cache.offset, lo, hi)
                else:
                    return seen
            except drgn.FaultError:
                pass
        return None

    def _next(self, cache: "_Cache", where: int, lo: int, hi: int) -> int:
        stored = self.prog.read_u64(where)
        if cache.random is None:
            return stored
        swabbed = stored ^ cache.random ^ int.from_bytes(where.to_bytes(8, "little"), "big")
        if self.swab is None:
            plain = stored ^ cache.random ^ where
            if swabbed == 0 or lo <= swabbed < hi:
                self.swab = True
            elif plain == 0 or lo <= plain < hi:
                self.swab = False
            else:
                return swabbed       # neither: the chain is cut here, decide on the next one
        return swabbed if self.swab else stored ^ cache.random ^ where

    def _from_drgn(self, addr: int) -> SlabObject | None:
        info = slab_object_info(self.prog, addr)
        if info is None:
            return None
        name = info.slab_cache.name.string_().decode(errors="replace") if info.slab_cache else "?"
        return SlabObject(name, info.address, info.allocated)


@dataclass
class _Cache:
    name: str
    size: int
    offset: int               # of the free pointer in a free object
    random: int | None        # CONFIG_SLAB_FREELIST_HARDENED's key
    red_left_pad: int
    cpu_free: set[int] | None = None
