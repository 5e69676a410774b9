"""Per-CPU batches: arrays of pointers the kernel fills up to a count, and
whose slots past the count are dead.

Fact: the kernel keeps short per-CPU stacks of pointers that it fills and
empties by a count alone, never clearing a slot it is done with:

* ``struct folio_batch`` and, up to 6.4, ``struct pagevec``: the LRU
  batches (``cpu_fbatches``, ``lru_rotate``; ``lru_pvecs`` on 5.x) and the
  mlock batch (``mlock_pvec``, ``mlock_fbatch``).  ``nr`` counts the folios
  (pages) in ``folios[]`` (``pages[]``); moving a batch to the LRU ends in
  ``folio_batch_reinit()``/``pagevec_reinit()``, ``nr = 0``.  A slot past
  ``nr`` still names a folio that has since been freed, and perhaps
  allocated again and lost.
* ``struct napi_alloc_cache`` (``napi_alloc_cache``, softirq's cache of
  ``sk_buff`` heads): freed skbs are pushed at ``skb_count``, and a full
  array is freed in bulk from the top (its upper half; all of it on
  kernels where the cache only collects skbs to free), ``skb_count``
  lowered; ``napi_skb_cache_get()`` takes ``skb_cache[--skb_count]``.  A
  slot past ``skb_count`` names a freed ``sk_buff``, in a slab page that
  may since have been freed and handed out again.  The skbs in the live
  slots are free too: allocated in SLUB's eyes, but their words are those of
  their last use (``skb->head`` naming a page since freed, used again and
  lost), until ``napi_skb_cache_get()`` hands one out and clears it.
* ``struct page_frag_1k`` (``napi_alloc_cache.page_small``, 6.1 to 6.x,
  with 4 KiB pages; an empty struct with larger ones):
  ``page_frag_alloc_1k()`` takes a page with one reference for each of its
  four 1 KiB frags and hands them out from the top down (``offset``),
  keeping none: once ``offset`` is 0 every reference went with a frag, and
  ``va`` names a page that may since have been freed and handed out again.
  A pointer is a batch of one slot: dead when its count is 0.

The batches are found by type, wherever a static per-CPU variable holds one
(its ELF symbol lies between ``__per_cpu_start`` and ``__per_cpu_end``);
batches in memory from ``alloc_percpu()`` are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import drgn
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.percpu import per_cpu

from vmcore_tools.core.features import has_symbol


@dataclass(frozen=True)
class BatchType:
    """A count-bounded array: ``slots[count:]`` is dead (a pointer member
    is one slot: dead when the count is 0)."""

    type_name: str
    count: str
    slots: str
    free_objects: bool = False     # the live slots name free slab objects, kept for reuse


#: The batch types, by the name of their struct; each kernel has some of them.
BATCH_TYPES: tuple[BatchType, ...] = (
    BatchType("struct folio_batch", "nr", "folios"),
    BatchType("struct pagevec", "nr", "pages"),
    BatchType("struct napi_alloc_cache", "skb_count", "skb_cache", free_objects=True),
    BatchType("struct page_frag_1k", "offset", "va"),
)


def batch_paths(prog: drgn.Program) -> dict[str, list[tuple[str, BatchType]]]:
    """Each static per-CPU variable holding a batch, and the member path of
    every batch in it (``""`` when the variable is one): ``{"cpu_fbatches":
    [(".lru_add", folio_batch), ...], "napi_alloc_cache": [("",
    napi_alloc_cache)]}``.  A variable whose name DWARF gives to another
    object (two ``static`` per-CPU variables of one name) is left out."""
    wanted = {b.type_name: b for b in BATCH_TYPES}
    if not (has_symbol(prog, "__per_cpu_start") and has_symbol(prog, "__per_cpu_end")):
        return {}
    start, end = prog.symbol("__per_cpu_start").address, prog.symbol("__per_cpu_end").address
    found: dict[str, list[tuple[str, BatchType]]] = {}     # by struct tag (drgn types do not compare)

    def inside(t: drgn.Type) -> list[tuple[str, BatchType]]:
        t = t.unqualified()
        while t.kind == drgn.TypeKind.TYPEDEF:
            t = t.type.unqualified()
        if t.kind not in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION) or not t.is_complete():
            return []
        name = f"{t.kind.name.lower()} {t.tag}" if t.tag else None
        if name in found:
            return found[name]
        # a batch may hold another; a type without its members is no batch
        # (page_frag_1k is an empty struct where pages are not 4 KiB)
        members = {m.name for m in t.members}
        paths = [("", wanted[name])] if name in wanted and {wanted[name].count, wanted[name].slots} <= members \
            else []
        paths += [(f".{m.name}{path}" if m.name else path, b)    # an anonymous member's are the struct's
                  for m in t.members for path, b in inside(m.type)]
        if name:
            found[name] = paths
        return paths

    out = {}
    for sym in prog.symbols():
        if not (start <= sym.address < end and sym.size):
            continue
        try:
            var = prog.variable(sym.name)
        except LookupError:
            continue
        if var.address_ != sym.address:
            continue
        if paths := inside(var.type_):
            out[sym.name] = paths
    return out


@dataclass
class Batches:
    """What the per-CPU batches of a kernel say: their dead slots, and the
    free objects their live slots keep for reuse."""

    dead_slots: list[tuple[int, int]]     # [start, end)
    free_objects: set[int]                # addresses of slab objects


def percpu_batches(prog: drgn.Program) -> Batches:
    """Every per-CPU batch on every possible CPU.  A batch whose count is
    past its array (a live kernel changing under the read) has no dead
    slot, and its live slots are read up to the array's end."""
    out = Batches([], set())
    paths = batch_paths(prog)
    for cpu in for_each_possible_cpu(prog):
        for name, members in paths.items():
            var = per_cpu(prog.variable(name), cpu)
            for path, b in members:
                batch = var.subobject_(path.lstrip(".")) if path else var
                slots = batch.member_(b.slots)
                count = batch.member_(b.count).value_()
                if slots.type_.unqualified().kind == drgn.TypeKind.ARRAY:
                    length, size = len(slots), drgn.sizeof(slots.type_.type)
                else:
                    length, size = 1, drgn.sizeof(slots)
                if count < length:
                    out.dead_slots.append((slots.address_ + count * size, slots.address_ + length * size))
                if b.free_objects and count:
                    words = prog.read(slots.address_, min(count, length) * size)
                    out.free_objects.update(int.from_bytes(words[i:i + 8], "little")
                                            for i in range(0, len(words), 8))
    out.free_objects.discard(0)
    return out


def dead_batch_slots(prog: drgn.Program) -> list[tuple[int, int]]:
    """``[start, end)`` of the dead slots of every per-CPU batch."""
    return percpu_batches(prog).dead_slots
