"""The per-cpu allocator's chunks, and which of their bytes are allocated.

Fact (4.14+, the bitmap allocator): each chunk keeps ``alloc_map``, one bit
per ``PCPU_MIN_ALLOC_SIZE`` (4) bytes of a unit, set where an area is
allocated; the parts of the first chunk outside its dynamic area (static
variables below ``start_offset``, the tail past ``end_offset``) are marked
allocated.  An offset is allocated in every CPU's unit at once: CPU c's
copy of offset o is at ``base_addr + pcpu_unit_offsets[c] + o``.
``free_percpu()`` clears the bits and leaves the bytes, so a freed area
keeps what its user wrote until ``alloc_percpu()`` hands it out again
(zeroed then): a page pointer there names a page nobody holds.

The chunks are ``pcpu_first_chunk``, ``pcpu_reserved_chunk`` (modules'
static per-cpu variables) and every chunk on the slot lists,
``pcpu_chunk_lists[0 .. pcpu_nr_slots)`` -- times ``PCPU_NR_CHUNK_TYPES``
from 5.9 to 5.13, which kept a list set per chunk type.  The first chunk
lies in the direct map (memblock memory); later chunks are vmalloc
space, mapped page by page as they are populated.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

import drgn
import numpy as np
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.list import list_for_each_entry

from vmcore_tools.core.features import has_member, has_object
from vmcore_tools.core.walk import bounded, damaged, max_entries

#: bytes per bit of a chunk's alloc_map (mm/percpu-internal.h, PCPU_MIN_ALLOC_SHIFT 2)
PCPU_MIN_ALLOC_SIZE = 4


def percpu_chunks(prog: drgn.Program) -> Iterator[drgn.Object]:
    """Every per-cpu chunk once: the first and reserved chunks, then those
    on the slot lists (each list walk bounded by how many chunks memory
    could hold)."""
    seen: set[int] = set()
    lists = prog["pcpu_chunk_lists"]
    nr = prog["pcpu_nr_slots"].value_()
    try:
        nr *= prog.constant("PCPU_NR_CHUNK_TYPES").value_()
    except LookupError:
        pass
    limit = max_entries(prog, "struct pcpu_chunk")
    heads = [prog[name] for name in ("pcpu_first_chunk", "pcpu_reserved_chunk") if has_object(prog, name)]
    listed = (chunk for slot in range(nr) for chunk in bounded(
        list_for_each_entry("struct pcpu_chunk", lists[slot].address_of_(), "list"),
        f"the per-cpu chunk list of slot {slot} (pcpu_chunk_lists)", limit))
    for chunk in chain(heads, listed):
        addr = chunk.value_()
        if addr and addr not in seen:
            seen.add(addr)
            yield chunk


def free_runs(chunk: drgn.Object, page_shift: int) -> list[tuple[int, int]]:
    """The free areas of ``chunk``: ``[start, end)`` offsets in a unit
    where its ``alloc_map`` bits are clear.  A chunk is at most a unit
    (``pcpu_unit_pages``): a larger one is damage, said and not read."""
    pages = chunk.nr_pages.value_()
    if not 0 < pages <= chunk.prog_["pcpu_unit_pages"].value_():
        damaged("the per-cpu chunks (pcpu_chunk.nr_pages)", f"{pages} pages in the chunk at "
                f"{chunk.value_():#x}: its free areas not known")
        return []
    bits = (pages << page_shift) // PCPU_MIN_ALLOC_SIZE
    raw = np.frombuffer(chunk.prog_.read(chunk.alloc_map.value_(), (bits + 7) // 8), np.uint8)
    used = np.unpackbits(raw, bitorder="little")[:bits].astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[1], used, [1]])))    # free runs start at -1, end at +1
    return [(s * PCPU_MIN_ALLOC_SIZE, e * PCPU_MIN_ALLOC_SIZE)
            for s, e in zip(edges[::2].tolist(), edges[1::2].tolist())]


def free_percpu_spans(prog: drgn.Program, page_shift: int) -> list[tuple[int, int]]:
    """The free areas of every chunk in every possible CPU's unit, as
    ``[start, end)`` per-cpu addresses (the direct map's for the first
    chunk, vmalloc space for later ones).  Empty before the bitmap
    allocator (no ``alloc_map``)."""
    if not (has_object(prog, "pcpu_chunk_lists") and has_member(prog, "struct pcpu_chunk", "alloc_map")):
        return []
    offsets = prog["pcpu_unit_offsets"]
    units = [offsets[cpu].value_() for cpu in for_each_possible_cpu(prog)]
    spans = []
    for chunk in percpu_chunks(prog):
        base = chunk.base_addr.value_()
        try:
            runs = free_runs(chunk, page_shift)
        except drgn.FaultError as e:
            damaged("the per-cpu chunks (pcpu_chunk.alloc_map)", f"the chunk at {chunk.value_():#x}: {e}")
            continue
        spans += [(base + unit + lo, base + unit + hi) for lo, hi in runs for unit in units]
    return spans
