"""Damage a sample core the way a stray write does, in memory only, and run
one ``vmcore-tools`` command on it: the corpus of damaged dumps.

The dump file is never written.  The damaged bytes are a physical memory
segment drgn reads in place of the core's own (``add_memory_segment``: a
later segment takes precedence), so the kernel's page tables lead every
virtual read of them to the damage, as they would in a damaged dump.

    python -m tests.kernels.damage '{"core": ..., "vmlinux": ..., "debug": [...],
                                     "case": "vmap areas", "args": ["report", "--json", "--quiet"]}'

prints the command's output, says on stderr what it damaged (a line
``DAMAGED: ...``) and exits with the command's exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import drgn
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.mm import follow_phys

Write = tuple[int, bytes]


def physical(prog: drgn.Program, addr: int) -> int:
    """Where the kernel's page tables map ``addr``."""
    return follow_phys(prog["init_mm"].address_of_(), addr).value_()


def cycle(prog: drgn.Program, entries: list[drgn.Object], member: str, what: str) -> tuple[str, list[Write]]:
    """Point the ``next`` of a later entry's ``member`` back at an earlier
    entry: a cycle away from the list's head."""
    if len(entries) < 2:
        raise SystemExit(f"{what}: {len(entries)} entries, too few to make a cycle of")
    early, late = entries[len(entries) // 3], entries[2 * len(entries) // 3]
    target = early.member_(member).address_
    at = late.member_(member).next.address_
    return (f"{what}: {late.value_():#x}'s {member}.next -> {early.value_():#x}",
            [(physical(prog, at), target.to_bytes(8, "little"))])


def vmap_areas(prog: drgn.Program):
    return cycle(prog, list(list_for_each_entry("struct vmap_area", prog["vmap_area_list"].address_of_(), "list")),
                 "list", "vmap areas")


def slab_caches(prog: drgn.Program):
    return cycle(prog, list(list_for_each_entry("struct kmem_cache", prog["slab_caches"].address_of_(), "list")),
                 "list", "slab caches")


def slab_cache_node(prog: drgn.Program):
    """A slab cache's first ``kmem_cache_node`` pointer (the middle cache
    of the list) overwritten with list poison: its slabs cannot be
    counted."""
    caches = list(list_for_each_entry("struct kmem_cache", prog["slab_caches"].address_of_(), "list"))
    cache = caches[len(caches) // 2]
    at = cache.node[0].address_
    return (f"slab caches: {cache.name.string_().decode()}'s node[0] -> 0xdead000000000100",
            [(physical(prog, at), (0xdead000000000100).to_bytes(8, "little"))])


def net_devices(prog: drgn.Program):
    head = prog["init_net"].dev_base_head.address_of_()
    return cycle(prog, list(list_for_each_entry("struct net_device", head, "dev_list")), "dev_list", "net devices")


def virtio_queues(prog: drgn.Program):
    from drgn.helpers.linux.device import bus_for_each_dev

    from vmcore_tools.core.debuginfo import load_module_debug_info
    load_module_debug_info(prog, ("virtio", "virtio_ring"))
    for dev in bus_for_each_dev(prog["virtio_bus"].address_of_()):
        vdev = drgn.container_of(dev, "struct virtio_device", "dev")
        vqs = list(list_for_each_entry("struct virtqueue", vdev.vqs.address_of_(), "list"))
        if len(vqs) >= 3:
            return cycle(prog, vqs, "list", "virtio queues")
    raise SystemExit("no virtio device with 3 queues")


def free_list(prog: drgn.Program):
    """A cycle in the longest buddy free list of the largest zone, through
    its pages' ``lru`` links: the list_del() of a corrupted free path."""
    from drgn.helpers.linux.mmzone import for_each_online_pgdat
    best: list[drgn.Object] = []
    for pgdat in for_each_online_pgdat(prog):
        for zone in pgdat.node_zones:
            if not zone.present_pages:
                continue
            for area in zone.free_area:
                for head in area.free_list:
                    pages = list(list_for_each_entry("struct page", head.address_of_(), "lru"))
                    if len(pages) > len(best):
                        best = pages
    return cycle(prog, best, "lru", "free list")


def mem_section(prog: drgn.Program):
    """A memory section far past ``max_pfn`` marked present, with a memmap
    (section 0's ``section_mem_map`` word copied there), and
    ``__highest_present_section_nr`` raised to it: what one stray write
    over ``mem_section`` and one over the counter leave."""
    sections = prog["mem_section"]
    per_root = prog["SECTIONS_PER_ROOT"].value_()
    nr = min(per_root - 1, 4 * (prog["__highest_present_section_nr"].value_() + 1))
    root = sections[0]
    at = root[nr].section_mem_map.address_
    word = root[0].section_mem_map.value_()
    counter = prog["__highest_present_section_nr"].address_
    return (f"mem_section: section {nr} marked present with section 0's memmap word, "
            f"__highest_present_section_nr -> {nr}",
            [(physical(prog, at), word.to_bytes(8, "little")), (physical(prog, counter), nr.to_bytes(8, "little"))])


def mem_section_root(prog: drgn.Program):
    """The first root of ``mem_section`` (SPARSEMEM_EXTREME: an array of
    pointers to pages of sections) overwritten with list poison: no
    section's memmap can be found through it."""
    at = prog["mem_section"].value_()
    return (f"mem_section: root 0 at {at:#x} -> 0xdead000000000100",
            [(physical(prog, at), (0xdead000000000100).to_bytes(8, "little"))])


def virtqueue_size(prog: drgn.Program):
    """A split virtqueue's ``vring.num`` set to 2^30: its descriptor table
    would be read for 16 GiB."""
    from drgn.helpers.linux.device import bus_for_each_dev

    from vmcore_tools.core.debuginfo import load_module_debug_info
    load_module_debug_info(prog, ("virtio", "virtio_ring"))
    for dev in bus_for_each_dev(prog["virtio_bus"].address_of_()):
        vdev = drgn.container_of(dev, "struct virtio_device", "dev")
        for vq in list_for_each_entry("struct virtqueue", vdev.vqs.address_of_(), "list"):
            vvq = drgn.container_of(vq, "struct vring_virtqueue", "vq")
            at = vvq.split.vring.num.address_
            return (f"virtqueue: {vvq.value_():#x}'s vring.num -> 0x40000000",
                    [(physical(prog, at), (0x40000000).to_bytes(4, "little"))])
    raise SystemExit("no virtqueue")


def ring_count(prog: drgn.Program):
    """fake_i40e's first rx ring's ``count`` set to 65535: more slots than
    any driver of the family gives a ring."""
    from vmcore_tools.net.rings import walk_rings
    ring = next(r for r in walk_rings(prog).rings if r.driver == "i40e" and r.kind == "rx")
    at = ring.address + drgn.offsetof(prog.type("struct i40e_ring"), "count")
    return f"i40e ring {ring.address:#x}'s count -> 65535", [(physical(prog, at), (65535).to_bytes(2, "little"))]


def percpu_chunk_size(prog: drgn.Program):
    """The first per-cpu chunk's ``nr_pages`` set to 2**30: its allocation
    map would be read for 128 GiB of units."""
    chunk = prog["pcpu_first_chunk"]
    return (f"per-cpu chunk {chunk.value_():#x}'s nr_pages -> 0x40000000",
            [(physical(prog, chunk.nr_pages.address_), (0x40000000).to_bytes(4, "little"))])


#: struct pages of noise, a third of the way up memory (noise over the memmap)
NOISE_PAGES = 1024


def noise_pfns(prog: drgn.Program) -> range:
    first = prog["max_pfn"].value_() // 3 // NOISE_PAGES * NOISE_PAGES
    return range(first, first + NOISE_PAGES)


def struct_page_noise(prog: drgn.Program):
    """Random bytes (a fixed seed) over the struct pages of ``noise_pfns``:
    what a stray memset or a use-after-free of a buffer that once sat there
    leaves."""
    import numpy as np
    from drgn.helpers.linux.mm import pfn_to_page
    pfns = noise_pfns(prog)
    start = pfn_to_page(prog, pfns[0]).value_()
    size = NOISE_PAGES * drgn.sizeof(prog.type("struct page"))
    noise = np.random.default_rng(33).integers(0, 256, size, np.uint8).tobytes()
    page = 4096
    writes = [(physical(prog, start + off), noise[off:off + page]) for off in range(0, size, page)]
    return f"struct pages: {size} random bytes over pfn {pfns[0]}..{pfns[-1]}", writes


def blk_mq_pages(prog: drgn.Program):
    """A cycle in the request pages of a disk's tags (``tags->page_list``,
    through each block's first ``page->lru``)."""
    from vmcore_tools.kernel.blk_mq import hw_queues
    from drgn.helpers.linux.block import for_each_disk
    for disk in for_each_disk(prog):
        for hctx in hw_queues(disk.queue):
            for tags in (hctx.tags, hctx.sched_tags):
                if tags:
                    pages = list(list_for_each_entry("struct page", tags.page_list.address_of_(), "lru"))
                    if len(pages) >= 2:
                        return cycle(prog, pages, "lru", "blk-mq request pages")
    raise SystemExit("no disk with 2 request blocks")


def bio_sets(prog: drgn.Program):
    """A cycle in the bio sets with a per-CPU cache (the CPUHP_BIO_DEAD
    instances, an hlist): the last one's next points back at the first."""
    from drgn.helpers.linux.list import hlist_for_each_entry
    state = prog["cpuhp_hp_states"][prog["CPUHP_BIO_DEAD"].value_()]
    sets = list(hlist_for_each_entry("struct bio_set", state.list.address_of_(), "cpuhp_dead"))
    if len(sets) < 2:
        raise SystemExit("fewer than 2 bio sets")
    at = sets[-1].cpuhp_dead.next.address_
    target = sets[0].cpuhp_dead.address_
    return (f"bio sets: {sets[-1].value_():#x}'s cpuhp_dead.next -> {sets[0].value_():#x}",
            [(physical(prog, at), target.to_bytes(8, "little"))])


def vmalloc_size(prog: drgn.Program):
    """A busy vmap area's ``vm_struct.nr_pages`` set past anything the area
    can map: the pages array would be read for 8 GiB."""
    for va in list_for_each_entry("struct vmap_area", prog["vmap_area_list"].address_of_(), "list"):
        vm = va.vm.read_()
        if vm and vm.pages and vm.nr_pages.value_() > 1:
            at = vm.nr_pages.address_
            return (f"vmalloc: {va.va_start.value_():#x}'s nr_pages -> 0x40000000",
                    [(physical(prog, at), (0x40000000).to_bytes(4, "little"))])
    raise SystemExit("no vmap area with pages")


def compound_order(prog: drgn.Program):
    """The order byte of a compound page in the middle of memory set to 255:
    ``1 << order`` would drive reads and extents far past the memmap."""
    from vmcore_tools.census.census import census
    c = census(prog)
    m = c.memmap
    heads = m.heads[(m.orders > 0) & (m.heads > m.nr // 3)]
    head = int(heads[0])
    at = m.memmap + head * m.struct_size + m.layout.order_offset
    return f"compound order: pfn {head} (order {int(m.order_of(head))}) -> 255", [(physical(prog, at), b"\xff")]


#: case name -> the damage, the command that walks the damaged list, and the
#: words its problem line must say
CASES: dict[str, tuple[Callable[[drgn.Program], tuple[str, list[Write]]], str, str]] = {
    "vmap areas": (vmap_areas, "report", "the vmap areas (vmap_area_list) is damaged"),
    "free list": (free_list, "census", "is damaged: list does not come back to its head within"),
    "mem_section": (mem_section, "census", "present past max_pfn"),
    "mem_section root": (mem_section_root, "report", "the memory sections (mem_section) are damaged"),
    "virtqueue size": (virtqueue_size, "report", "ring size (vring_virtqueue"),
    "ring count": (ring_count, "report", "i40e rx rings (count) is damaged"),
    "per-cpu chunk size": (percpu_chunk_size, "report", "the per-cpu chunks (pcpu_chunk.nr_pages) is damaged"),
    "slab caches": (slab_caches, "slab", "the slab cache list (slab_caches) is damaged"),
    "slab cache node": (slab_cache_node, "slab", "is damaged (slab cache"),
    "net devices": (net_devices, "report", "a namespace's net devices (dev_base_head) is damaged"),
    "virtio queues": (virtio_queues, "report", "a virtio device's queues (vqs) is damaged"),
    "struct page noise": (struct_page_noise, "census", "hold a state no kernel writes, counted as damaged"),
    "compound order": (compound_order, "census", "hold a state no kernel writes, counted as damaged"),
    "vmalloc size": (vmalloc_size, "report", "the vmap areas (vm_struct.nr_pages) is damaged"),
    "blk-mq pages": (blk_mq_pages, "report", "blk-mq request pages (tags->page_list) is damaged"),
    "bio sets": (bio_sets, "report", "the bio sets with a cache (CPUHP_BIO_DEAD) is damaged"),
}


def damage(prog: drgn.Program, writes: list[Write]) -> None:
    for phys, data in writes:
        prog.add_memory_segment(phys, len(data), lambda address, count, offset, physical, data=data:
                                data[offset:offset + count], True)


def main() -> int:
    spec = json.loads(sys.argv[1])
    from vmcore_tools import open_program
    from vmcore_tools.cli.main import run_on
    prog = open_program(spec["core"], spec["vmlinux"], spec["debug"])
    what, writes = CASES[spec["case"]][0](prog)
    damage(prog, writes)
    print(f"DAMAGED: {what}", file=sys.stderr, flush=True)
    return run_on(prog, spec["args"])


if __name__ == "__main__":
    sys.exit(main())
