"""The per-CPU caches of freed bios: slab objects allocated but free.

Fact: a bio_set created with ``BIOSET_PERCPU_CACHE`` (``fs_bio_set``, the
one ``bio_alloc()`` takes from, among them; 5.15+) has a per-CPU ``struct
bio_alloc_cache`` (``bs->cache``).  ``bio_put()`` of a bio that was
allocated with ``REQ_ALLOC_CACHE`` does not free it: it goes on this CPU's
``free_list`` (``free_list_irq`` when put in interrupt context), linked
through ``bi_next``, for the next allocation to take.  Its slab object stays
allocated, and its inline ``bio_vec`` array (a cached bio never has another)
still names the pages of its last I/O, since freed, used again or lost.
Up to 6.x only polled and io_uring I/O asked for ``REQ_ALLOC_CACHE``; on
Debian's 7.3 every ``bio_alloc()`` from ``fs_bio_set`` does (a
``submit_bio_wait()`` read leaves its bio at the head of the cache).

Fact: ``bioset_init()`` adds every bio_set with a cache to the
``CPUHP_BIO_DEAD`` hotplug state's instances (``bs->cpuhp_dead``, on
``cpuhp_hp_states[CPUHP_BIO_DEAD].list``), so that a dying CPU's cache is
emptied: that list names them all.
"""

from __future__ import annotations

import drgn
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.list import hlist_for_each_entry
from drgn.helpers.linux.percpu import per_cpu_ptr

from vmcore_tools.core.walk import bounded, max_entries
from vmcore_tools.core.features import has_member, has_object

#: bios read from one CPU's list, at most (the kernel keeps ALLOC_CACHE_MAX, 256)
MAX_CACHED = 4096


def bio_sets_with_cache(prog: drgn.Program) -> list[drgn.Object]:
    """Every bio_set with a per-CPU cache: the ``CPUHP_BIO_DEAD`` state's
    instances, or ``fs_bio_set`` alone where that list is not in the debug
    info; none before 5.15."""
    if not has_member(prog, "struct bio_set", "cache"):
        return []
    try:
        state = prog["cpuhp_hp_states"][prog["CPUHP_BIO_DEAD"].value_()]
        sets = hlist_for_each_entry("struct bio_set", state.list.address_of_(), "cpuhp_dead")
        return list(bounded(sets, "the bio sets with a cache (CPUHP_BIO_DEAD)", max_entries(prog, "struct bio_set")))
    except (KeyError, LookupError):
        return [prog["fs_bio_set"].address_of_()] if has_object(prog, "fs_bio_set") else []


def cached_bios(prog: drgn.Program) -> set[int]:
    """The slab objects (the bio less its set's ``front_pad``) of every bio
    waiting in a per-CPU cache."""
    out: set[int] = set()
    sets = bio_sets_with_cache(prog)
    heads = [h for h in ("free_list", "free_list_irq") if sets and has_member(prog, "struct bio_alloc_cache", h)]
    for bs in sets:
        if not bs.cache:
            continue
        pad = bs.front_pad.value_()
        for cpu in for_each_possible_cpu(prog):
            cache = per_cpu_ptr(bs.cache, cpu)
            for head in heads:
                bio, n = getattr(cache, head), 0
                while bio and n < MAX_CACHED:
                    out.add(bio.value_() - pad)
                    bio, n = bio.bi_next, n + 1
    return out
