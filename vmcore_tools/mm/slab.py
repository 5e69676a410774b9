"""Slab caches, slabtop-style: objects, active objects, object size, slabs and
memory per cache, with the names merged into each cache.

Fact: SLUB keeps per node ``nr_slabs`` and ``total_objects``; free objects
are on the partial lists and the per-CPU slabs, which drgn's
``slab_cache_usage()`` walks.  Caches with compatible size and flags are
merged at creation: the merged names exist only as sysfs aliases, which
``get_slab_cache_aliases()`` recovers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import drgn
import numpy as np
from drgn.helpers.linux.cpumask import for_each_online_cpu
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.percpu import per_cpu_ptr
from drgn.helpers.linux.slab import (for_each_slab_cache, get_slab_cache_aliases,
                                     slab_cache_pages_per_slab, slab_cache_usage, slab_object_info)

from vmcore_tools.core.stages import record_damage
from vmcore_tools.core.walk import bounded, max_entries
from vmcore_tools.core.features import has_member, has_object, has_type
from vmcore_tools.mm.kfence import KfencePool, kfence_pool
from vmcore_tools.mm.kmalloc import slack_offsets
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.core.arrays import unique


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


def all_slab_caches(prog: drgn.Program) -> Iterator[drgn.Object]:
    """Every slab cache (``slab_caches``, a list the kernel keeps no count
    of: bounded by how many caches memory could hold)."""
    return bounded(for_each_slab_cache(prog), "the slab cache list (slab_caches)",
                   max_entries(prog, "struct kmem_cache"))


def slab_caches(prog: drgn.Program, sort: str = "size") -> list[SlabCache]:
    """Every slab cache, sorted by ``sort`` (a key of ``SORT_KEYS``)."""
    try:
        aliases = get_slab_cache_aliases(prog)
    except (LookupError, ValueError):   # no sysfs aliases to read (SLAB, no sysfs)
        aliases = {}
    except drgn.FaultError as e:        # a cache's name or kobject leads nowhere
        if not record_damage(f"the merged names of slab caches (sysfs aliases) cannot be read ({e})"):
            raise
        aliases = {}
    merged: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        merged.setdefault(target, []).append(alias)
    page_size = prog["PAGE_SIZE"].value_()
    out = []
    for cache in all_slab_caches(prog):
        try:
            name = cache.name.string_().decode(errors="replace")
            usage = _usage(prog, cache, name)
        except (drgn.FaultError, ValueError) as e:
            # one damaged cache is left out and said; the others are listed
            if not record_damage(f"the slab cache at {cache.value_():#x} is damaged ({e}), left out"):
                raise
            continue
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
    #: a kmalloc cache's object: the offset from which its words may lie past
    #: the request (``kmalloc.slack_offsets``); None for other caches
    slack: int | None = None
    #: bytes of the slot that are the object (``kmem_cache.object_size``);
    #: past them, SLUB's metadata and padding; None where not known
    object_size: int | None = None


class SlabObjects:
    """Which slab object an address is in, and whether it is allocated.

    Fact (SLUB): an object is free exactly when it is on its slab's
    ``freelist`` or on the per-CPU ``freelist`` of the CPU whose active slab
    it is in.  The chain's next pointer sits at ``object + cache->offset``;
    with CONFIG_SLAB_FREELIST_HARDENED it is stored as ``next ^ cache->random
    ^ swab(&next)`` (plain ``&next`` before 5.7; no field tells which, so the
    decoding that keeps the chain inside its slab is kept).  Objects start at
    the slab's address plus ``cache->red_left_pad``, ``cache->size`` apart.

    Fact (SLUB with sheaves, 6.18+): free objects are also cached as arrays,
    ``slab_sheaf.objects[0..size)``: each CPU's ``main`` and ``spare`` sheaf
    (``kmem_cache.cpu_sheaves``) and the full sheaves of each node's barn
    (``barn.sheaves_full``, the barn in ``kmem_cache.node[n]`` until 7.0,
    ``kmem_cache.per_node[n]`` from 7.1).  From 7.0 there are no per-CPU
    slabs (``cpu_slab``) at all.

    drgn's ``slab_object_info()`` answers the same question but walks every
    CPU and the slab's freelist again for each address; here each slab's
    freelist and each cache's per-CPU freelists and sheaves are read once.
    Kernels with SLAB (gone in 6.8) go through ``slab_object_info()``."""

    #: a freelist that keeps changing under a live read is given up after this many tries
    TRIES = 20
    #: slabs whose free objects are remembered: a scan asks about the slab it
    #: is reading, so a short memory serves it and keeps it from growing with slab
    MAX_SLABS = 4096

    def __init__(self, prog: drgn.Program, pages: Memmap):
        self.prog, self.a = prog, pages
        self.live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE)
        self.cpu_slabs = has_member(prog, "struct kmem_cache", "cpu_slab")
        self.sheaves = has_member(prog, "struct kmem_cache", "cpu_sheaves")
        #: a sheaf holds at most sheaf_capacity objects: a larger size is damage, read no further
        self.capacity = has_member(prog, "struct kmem_cache", "sheaf_capacity")
        self.slub = self.cpu_slabs or self.sheaves
        slab = prog.type("struct slab" if has_type(prog, "struct slab") else "struct page")
        self.slab_cache_offset = drgn.offsetof(slab, "slab_cache")
        self.freelist_offset = drgn.offsetof(slab, "freelist")
        self.hardened = has_member(prog, "struct kmem_cache", "random")    # CONFIG_SLAB_FREELIST_HARDENED
        self.has_red_left_pad = has_member(prog, "struct kmem_cache", "red_left_pad")
        self.cpu_slab_member = ("slab" if self.cpu_slabs and has_member(prog, "struct kmem_cache_cpu", "slab")
                                else "page")
        self.swab: bool | None = None         # decided on the first hardened chain
        self.caches: dict[int, _Cache] = {}
        self.slabs: dict[int, tuple[_Cache, set[int] | None]] = {}
        self.kmalloc_slack = slack_offsets(prog)     # kmalloc cache -> where its objects' slack may start

    @cached_property
    def kfence(self) -> KfencePool | None:
        """The KFENCE pool (``kfence.kfence_pool``): its pages are typed slab whether
        or not their one object is in use, so they are read by its metadata, never as slabs."""
        return kfence_pool(self.prog, self.a)

    def __call__(self, addr: int) -> SlabObject | None:
        """The object ``addr`` (a direct-map address) is in, or None outside slab."""
        if not self.slub:
            return self._from_drgn(addr)
        if self.kfence is not None and self.kfence.contains(addr):
            obj = self.kfence.object_at(addr)
            return None if obj is None else SlabObject(obj.cache, obj.address, obj.allocated)
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
        return SlabObject(cache.name, obj, allocated, cache.slack, cache.object_size)

    def allocated(self, head: int) -> tuple[str, int, np.ndarray] | None:
        """The cache name, the slot size and the start addresses of the
        allocated objects of the slab whose head page is ``head``; None where
        its freelists cannot be read (or the kernel has SLAB)."""
        if not self.slub:
            return None
        if self.kfence is not None and self.kfence.contains(self.a.virt_of_pfn(head)):
            return self.kfence.allocated_in(self.a.virt_of_pfn(head))
        cache, free = self._slab(head)
        if free is None or cache.cpu_free is None:
            return None
        lo, hi = self._span(head)
        first = lo + cache.red_left_pad
        starts = np.arange(first, hi - cache.size + 1, cache.size, dtype=np.uint64)
        return cache.name, cache.size, without(starts, free | cache.cpu_free)

    def allocated_slabs(self, heads: np.ndarray) -> Iterator[tuple[str, int, np.ndarray] | None]:
        """``allocated()`` of every slab whose head page is in ``heads``, as
        groups of (cache name, slot size, object starts); None for each slab
        whose freelists cannot be read.

        Fact: a SLUB slab whose own ``freelist`` is NULL has no free object
        but those of the CPU it is active on (``cpu_free``): it is full, or
        it is that CPU's slab.  On a slab-heavy host nearly every slab is
        such, so those are read from the memmap in bulk (the cache pointer
        and the freelist of every head at once) and laid out per cache and
        order with numpy, ``cache->size`` apart from ``red_left_pad`` on;
        only the slabs with a freelist of their own walk it, one by one."""
        heads = np.asarray(heads, np.int64)
        if not self.slub:
            yield from (None for _ in range(heads.size))
            return
        a = self.a
        # both words in one read of the memmap
        lo = min(self.slab_cache_offset, self.freelist_offset)
        raw = a.struct_pages(heads, lo, max(self.slab_cache_offset, self.freelist_offset) + 8)
        word = lambda off: np.ascontiguousarray(raw[:, off - lo:off - lo + 8]).view("<u8").reshape(-1)  # noqa: E731
        cache_of, own_free = word(self.slab_cache_offset), word(self.freelist_offset)
        full = own_free == 0
        if self.kfence is not None:        # a KFENCE page has no freelist, in use or not
            pool = self.kfence.pfns(a)
            full &= (heads < pool[0]) | (heads > pool[-1])
        for addr in unique(cache_of[full]).tolist():
            pick = heads[full & (cache_of == addr)]
            try:
                if addr not in self.caches:
                    self.caches[addr] = self._cache(addr)
                cache = self.caches[addr]
            except (drgn.FaultError, ValueError, LookupError):
                cache = None
            if cache is None or cache.cpu_free is None or cache.size <= 0:
                yield from (None for _ in range(pick.size))
                continue
            orders = a.order_of(pick)
            for order in unique(orders).tolist():
                yield cache.name, cache.size, laid_out(a, pick[orders == order], order, cache)
        for head in heads[~full].tolist():
            try:
                yield self.allocated(head)
            except (drgn.FaultError, ValueError):
                yield None

    def _slab(self, head: int) -> tuple["_Cache", set[int] | None]:
        a, prog = self.a, self.prog
        struct = a.memmap + head * a.struct_size
        addr = prog.read_u64(struct + self.slab_cache_offset)
        if addr not in self.caches:
            self.caches[addr] = self._cache(addr)
        cache = self.caches[addr]
        return cache, self._chain(cache, lambda: prog.read_u64(struct + self.freelist_offset), *self._span(head))

    def _cache(self, addr: int) -> "_Cache":
        s = drgn.Object(self.prog, "struct kmem_cache *", addr)
        cache = _Cache(s.name.string_().decode(errors="replace"), s.size.value_(), s.offset.value_(),
                       s.random.value_() if self.hardened else None,
                       s.red_left_pad.value_() if self.has_red_left_pad else 0,
                       slack=self.kmalloc_slack.get(addr), object_size=s.object_size.value_())
        cache.cpu_free = self._sheaf_objects(s) if self.sheaves else set()
        for cpu in for_each_online_cpu(self.prog) if self.cpu_slabs else ():
            if cache.cpu_free is None:
                break
            c = per_cpu_ptr(s.cpu_slab, cpu)
            slab = c.member_(self.cpu_slab_member).value_()
            if not slab:
                continue
            if self.prog.read_u64(slab + self.slab_cache_offset) != addr:
                continue
            head = self.a.pfn_of_page_ptr(slab)
            chain = self._chain(cache, lambda c=c: c.freelist.value_(), *self._span(head))
            if chain is None:
                cache.cpu_free = None
                break
            cache.cpu_free |= chain
        return cache

    def _sheaves(self, s: drgn.Object, every: bool = False) -> list[int]:
        """The addresses of the cache's sheaves that cache free objects: each
        CPU's ``main`` and ``spare``, the full sheaves of each node's barn;
        with ``every``, also each CPU's ``rcu_free`` and the barns' empty
        sheaves."""
        prog = self.prog
        out: list[int] = []
        if s.cpu_sheaves.value_():
            members = ("main", "spare", "rcu_free") if every else ("main", "spare")
            for cpu in for_each_online_cpu(prog):
                pcs = per_cpu_ptr(s.cpu_sheaves, cpu)
                out += [pcs.member_(m).value_() for m in members if has_member(prog, "struct slub_percpu_sheaves", m)]
        nodes = prog["nr_node_ids"].value_() if has_object(prog, "nr_node_ids") else 1
        per_node = s.per_node if has_member(prog, "struct kmem_cache", "per_node") else s.node
        for i in range(nodes):
            entry = per_node[i]        # a struct from 7.1, a pointer to kmem_cache_node before
            if entry.type_.kind == drgn.TypeKind.POINTER and not entry.value_():
                continue
            barn = entry.barn.read_()
            if barn:
                for which in ("sheaves_full", "sheaves_empty") if every else ("sheaves_full",):
                    sheaves = list_for_each_entry("struct slab_sheaf", barn.member_(which).address_of_(), "barn_list")
                    out += [sh.value_() for sh in bounded(sheaves, f"a barn's {which} list",
                                                          max_entries(prog, "struct slab_sheaf"))]
        return [x for x in out if x]

    def _sheaf_objects(self, s: drgn.Object) -> set[int] | None:
        """The objects cached in the cache's sheaves (``_sheaves``)."""
        prog = self.prog
        try:
            out: set[int] = set()
            for addr in self._sheaves(s):
                sheaf = drgn.Object(prog, "struct slab_sheaf *", addr)
                n = min(sheaf.size.value_(), s.sheaf_capacity.value_()) if self.capacity else sheaf.size.value_()
                out.update(np.frombuffer(prog.read(sheaf.objects.address_, 8 * n), "<u8").tolist())
            return out
        except (drgn.FaultError, ValueError):
            return None

    def stale_sheaf_words(self) -> list[tuple[int, int]]:
        """``(sheaf, first stale word)`` for every sheaf of every cache (6.18+).

        Fact: a sheaf is a kmalloc'd ``slab_sheaf`` whose ``objects[0..size)``
        are the free objects it caches; allocating from it decrements
        ``size`` and leaves the pointer in ``objects[size]``, so the slots
        from ``size`` to the end of the sheaf name objects handed out since:
        stale words that would keep a leaked object reachable."""
        if not self.sheaves:
            return []
        prog, out = self.prog, []
        for cache in all_slab_caches(prog):
            try:
                for addr in self._sheaves(cache, every=True):
                    sheaf = drgn.Object(prog, "struct slab_sheaf *", addr)
                    out.append((addr, sheaf.objects.address_ + 8 * sheaf.size.value_()))
            except (drgn.FaultError, ValueError):
                continue
        return out

    def stale_sheaf_spans(self) -> list[tuple[int, int]]:
        """``[first stale word, end)`` of every sheaf (6.18+): ``stale_sheaf_words``
        up to the end of the sheaf's ``objects[]``, ``sheaf_capacity`` slots
        of the cache it serves (``slab_sheaf.cache``: a sheaf is allocated
        with ``struct_size(sheaf, objects, s->sheaf_capacity)``).  A sheaf
        that serves no cache has no slots: the static ``bootstrap_sheaf``,
        every CPU's main sheaf until its cache has sheaves of its own."""
        if not (self.sheaves and has_member(self.prog, "struct slab_sheaf", "cache")
                and has_member(self.prog, "struct kmem_cache", "sheaf_capacity")):
            return []
        out = []
        for addr, first in self.stale_sheaf_words():
            try:
                sheaf = drgn.Object(self.prog, "struct slab_sheaf *", addr)
                if not sheaf.cache:
                    continue
                end = sheaf.objects.address_ + 8 * sheaf.cache.sheaf_capacity.value_()
            except drgn.FaultError:
                continue
            if first < end:
                out.append((first, end))
        return out

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


def laid_out(a: Memmap, slabs: np.ndarray, order: int, cache: "_Cache") -> np.ndarray:
    """The objects of full slabs of ``cache`` (head PFNs ``slabs``, sorted,
    of ``order``), the free ones of the CPU slabs (``cpu_free``) taken out:
    ``cache->size`` apart from ``red_left_pad`` on, sorted."""
    per_slab = max(0, ((a.page_size << order) - cache.red_left_pad) // cache.size)
    first = a.virts_of_pfns(slabs) + np.uint64(cache.red_left_pad)
    starts = (first[:, None] + np.arange(per_slab, dtype=np.uint64) * np.uint64(cache.size)).reshape(-1)
    return without(starts, cache.cpu_free)


def without(starts: np.ndarray, free: set[int]) -> np.ndarray:
    """The sorted object starts ``starts`` less the few in ``free``: found by
    place, the slices between them joined in one copy (no mask as long as
    ``starts``, no set operation over it)."""
    if not free or not starts.size:
        return starts
    taken = np.fromiter(free, np.uint64, len(free))
    at = np.minimum(np.searchsorted(starts, taken), starts.size - 1)
    drop = unique(at[starts[at] == taken])
    if not drop.size:
        return starts
    bounds = np.concatenate([[-1], drop, [starts.size]])
    return np.concatenate([starts[b + 1:e] for b, e in zip(bounds[:-1].tolist(), bounds[1:].tolist())])


@dataclass
class _Cache:
    name: str
    size: int
    offset: int               # of the free pointer in a free object
    random: int | None        # CONFIG_SLAB_FREELIST_HARDENED's key
    red_left_pad: int
    cpu_free: set[int] | None = None
    slack: int | None = None  # SlabObject.slack
    object_size: int | None = None
