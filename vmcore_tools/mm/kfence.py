"""KFENCE: the sampled slab objects, each alone in a page of its own pool.

Facts (``mm/kfence/core.c``, 5.12+):

* With KFENCE on (``CONFIG_KFENCE`` and a non-zero
  ``kfence.sample_interval``; Debian builds it with the interval 0, so off
  unless booted with one), one slab allocation per interval is served
  from ``__kfence_pool``: memblock memory (``PG_reserved`` in the memmap,
  so "reserved" in the census) of ``(n + 1) * 2`` pages, ``n`` objects.
  Object ``i`` lives in page ``2 * (i + 1)`` of the pool, the odd pages
  are guards.
* Its state is in ``kfence_metadata[i]`` (a static array up to 6.5, a
  pointer to one allocated at boot from 6.6): ``state``
  (``KFENCE_OBJECT_ALLOCATED`` while in use), ``addr`` -- the object's
  start, at the page's start or placed against its end -- and ``size``,
  the size asked for.  ``addr`` always lies in the object's own page,
  from initialisation on.
* The object's page is typed slab with the cache in ``slab_cache`` and no
  freelist, allocated or not: freeing the object leaves the page and its
  bytes as they were (cleared only with ``init_on_free``).  So the slab
  fields cannot say whether the object is in use, or where it is; only
  the metadata can.
"""

from __future__ import annotations

from dataclasses import dataclass

import drgn
import numpy as np

from vmcore_tools.core.features import constant, has_object
from vmcore_tools.mm.memmap import Memmap

#: ``CONFIG_KFENCE_NUM_OBJECTS`` is at most this (its Kconfig range)
MAX_OBJECTS = 65535


@dataclass(frozen=True)
class KfenceObject:
    cache: str
    address: int
    allocated: bool


@dataclass(frozen=True)
class KfencePool:
    """The pool's extent and its objects, by index."""

    start: int                 # direct-map address of the pool
    end: int
    addr: np.ndarray           # uint64: each object's start
    size: np.ndarray           # uint64: the size its user asked for
    allocated: np.ndarray      # bool
    caches: list[str]          # each object's cache name ("" where unused)
    page_size: int
    #: indexes of entries of a metadata array whose ``addr`` lies outside its page (damage): not read
    damaged: tuple[int, ...] = ()

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end

    def index_of(self, address: int) -> int | None:
        """The object whose page holds ``address``; None in a guard page."""
        page = (address - self.start) // self.page_size
        i = page // 2 - 1
        return i if page % 2 == 0 and 0 <= i < self.addr.size else None

    def object_at(self, address: int) -> KfenceObject | None:
        """The object ``address`` lies in, allocated or not; None outside
        every object (guard pages, the canary bytes around an object)."""
        i = self.index_of(address)
        if i is None or not self.addr[i] <= address < self.addr[i] + max(int(self.size[i]), 1):
            return None
        return KfenceObject(self.caches[i], int(self.addr[i]), bool(self.allocated[i]))

    def allocated_in(self, address: int) -> tuple[str, int, np.ndarray]:
        """The cache, size and start (none if free) of the object whose page holds ``address``."""
        i = self.index_of(address)
        if i is None or not self.allocated[i]:
            return (self.caches[i] if i is not None else ""), 0, np.zeros(0, np.uint64)
        return self.caches[i], int(self.size[i]), self.addr[i:i + 1]

    def allocated_spans(self) -> list[tuple[int, int]]:
        """``[start, end)`` of every object in use."""
        return [(lo, hi) for _, lo, hi in self.in_use()]

    def in_use(self, read_elsewhere: np.ndarray | None = None) -> list[tuple[str, int, int]]:
        """The cache, start and end of every object in use, less those whose
        page ``read_elsewhere`` marks (a bool per page of the pool: pages a
        census took for slab, whose objects are read with the slabs)."""
        pick = np.flatnonzero(self.allocated).tolist()
        if read_elsewhere is not None:
            pick = [i for i in pick if not read_elsewhere[2 * (i + 1)]]
        return [(self.caches[i], int(self.addr[i]), int(self.addr[i] + self.size[i])) for i in pick]

    def pfns(self, memmap: Memmap) -> np.ndarray:
        """The pool's pages."""
        lo = memmap.pfn_of_virt(self.start)
        return np.arange(lo, lo + (self.end - self.start) // self.page_size, dtype=np.int64)


def kfence_pool(prog: drgn.Program, memmap: Memmap) -> KfencePool | None:
    """The KFENCE pool and its objects' metadata; None where the kernel has
    no KFENCE or it is off (no pool).

    The number of objects comes from the array's length where
    ``kfence_metadata`` is one; where it is a pointer, entries are taken
    while each one's ``addr`` lies in the page its index gives (true of
    every entry from initialisation on), up to the Kconfig maximum: the
    first entry past the array fails that test.  An entry that fails it
    with a good one after it, within a page's worth of entries, is inside
    the array and damaged (a stray write); a page's worth in a row that
    fail is the array's end."""
    if not has_object(prog, "__kfence_pool") or not has_object(prog, "kfence_metadata"):
        return None
    pool = prog["__kfence_pool"]
    start = pool.value_() if pool.type_.kind == drgn.TypeKind.POINTER else pool.address_
    if not start:
        return None
    meta = prog["kfence_metadata"]
    ps = memmap.page_size
    if meta.type_.kind == drgn.TypeKind.ARRAY:
        n, base = meta.type_.length, meta.address_
    else:
        n, base = MAX_OBJECTS, meta.value_()
    if not base:
        return None
    entry = prog.type("struct kfence_metadata")
    off = {m: drgn.offsetof(entry, m) for m in ("state", "addr", "size", "cache")}
    allocated_state = constant(prog, "KFENCE_OBJECT_ALLOCATED")
    addr, size, allocated, caches, damaged = [], [], [], [], []
    names: dict[int, str] = {}
    def read(i: int) -> bytes:
        try:
            return prog.read(base + i * entry.size, entry.size)
        except drgn.FaultError:
            return b""

    def in_its_page(i: int, raw: bytes) -> bool:
        """Whether entry ``i`` (its bytes) has its object in the page its index gives."""
        page = start + 2 * (i + 1) * ps
        return bool(raw) and page <= int.from_bytes(raw[off["addr"]:off["addr"] + 8], "little") < page + ps

    lookahead = max(1, ps // entry.size)
    for i in range(n):
        page = start + 2 * (i + 1) * ps
        raw = read(i)
        word = lambda m: int.from_bytes(raw[off[m]:off[m] + 8], "little")  # noqa: E731
        a = word("addr") if raw else 0
        if not in_its_page(i, raw):
            if meta.type_.kind != drgn.TypeKind.ARRAY and \
                    not any(in_its_page(j, read(j)) for j in range(i + 1, min(n, i + 1 + lookahead))):
                break                   # past the allocated array
            damaged.append(i)
            a, raw = page, b""
        state = int.from_bytes(raw[off["state"]:off["state"] + 4], "little") if raw else None
        cache = word("cache") if raw else 0
        if cache not in names:
            names[cache] = _cache_name(prog, cache)
        addr.append(a)
        size.append(min(word("size") if raw else 0, page + ps - a))   # an object ends in its page
        allocated.append(state == allocated_state)
        caches.append(names[cache])
    return KfencePool(start, start + (len(addr) + 1) * 2 * ps, np.array(addr, np.uint64),
                      np.array(size, np.uint64), np.array(allocated, bool), caches, ps, tuple(damaged))


def _cache_name(prog: drgn.Program, cache: int) -> str:
    if not cache:
        return ""
    try:
        return drgn.Object(prog, "struct kmem_cache *", cache).name.string_().decode(errors="replace")
    except drgn.FaultError:
        return "?"
