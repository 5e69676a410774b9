"""The reference model, as data: what the scan reads and how a word counts
there (*roots*), and who holds pages without a word pointing at them
(*owners*).

This is the one place that answers "what memory does the scan read, and
what counts as a reference there?" and "who owns pages without a
pointer?".  Each entry says the kernel fact it rests on, the kernels it
applies to, and the test that fails when the entry is removed
(``tests/kernels/test_registry.py`` removes each in turn).  The scan
(``scan.run_scan``) runs the roots in order, then the owners; the
entries marked ``closure`` run again for every page found referenced, until
nothing new is found.

How a word can count (``Root.counts``):

* ``STRUCT_PAGE``: the address of a candidate's ``struct page`` (any byte);
* ``DIRECT_MAP``: a direct-map address inside the page (any offset);
* ``PHYSICAL``: its physical (DMA without an IOMMU) address, 64-byte
  aligned and not a round number (``matcher.is_round``), in an order-0
  page (``roots.scan_referenced_pages``);
* ``TABLE_ENTRY``: a hardware-style table entry, physical address with flag
  bits, in a page shaped like a table (``matcher.table_entries``);
* ``SKB_FRAG``: a ``struct page`` pointer followed by an skb frag's length
  and offset, and not preceded by another page pointer
  (``matcher.frag_entries``);
* ``OBJECT``: a direct-map address anywhere inside an allocated object's
  slot (reachability only: ``objects.ObjectTable.find``).

A root that counts nothing names memory whose words must not count where
another root reads it (the nodes of a page_pool's DMA index and the LRU's
list heads, in slab; the interrupt stacks of CPUs not in an interrupt and
the dead slots of per-CPU batches, in the per-cpu areas).

What one allocation spans (``EXTENTS``: compound pages, and blocks taken
without ``__GFP_COMP``) decides which pages a hold on one page holds; the
rules that only guess at a hold where the dump is silent (``INFERENCES``)
put the pages they hold in the inferred tier (``tiers``).

Reachability (``leaks.reachability``) has roots of its own (``REACH_ROOTS``,
wider than the page scan's: a stale word there only hides an unreachable
object, never invents one) and the memory it traces (``TRACED``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmcore_tools.refs import objects, owners, roots, runs
from vmcore_tools.refs.references import (ALLOCATION_RUN, CMA_RUN, DIRECT_MAP, KMALLOC_SLACK, OBJECT,
                                          PHYSICAL, PHYSICAL_MATCH, POINTERS, SKB_FRAG, STRUCT_PAGE,
                                          TABLE_ENTRY, TABLE_SHAPE)



@dataclass(frozen=True)
class Root:
    """Memory the scan reads, and how a word counts there."""

    name: str                 # its stage is "scan: NAME" (stages.STAGES)
    read: Callable            # reads it: read(scan) (closure roots: read(scan, heads))
    counts: frozenset[str]
    fact: str
    kernels: str
    test: str
    closure: bool = False     # read again for every page found referenced
    #: kinds of word that only infer a hold here, each with its rule (INFERENCES)
    infers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Owner:
    """Holders of pages that no scanned word points at."""

    name: str                 # its stage is "scan: NAME"
    find: Callable            # finds them: find(scan)
    fact: str
    kernels: str
    test: str
    closure: bool = False


ROOTS: tuple[Root, ...] = (
    Root("kernel data", roots.scan_image, POINTERS,
         "Globals live in the image's _sdata.._edata, __bss_start..__bss_stop and __ro_after_init "
         "(boot-time hash tables); x86 frees the unused tail of .bss..decrypted at boot, so that span "
         "is not read (FREED_IMAGE_SPANS).",
         "all", "tests/kernels/test_orphans.py::test_decoys_are_not_orphans"),
    Root("dead interrupt stack frames", roots.skip_dead_irq_stack_frames, frozenset(),
         "x86-64 runs a CPU's hard and soft interrupts on its own stack (irq_stack_backing_store, a static "
         "per-CPU variable) and records whether the CPU is on it (hardirq_stack_inuse, 5.15+, in pcpu_hot "
         "6.2 to 6.14; irq_count up to 5.14). A CPU not in an interrupt has nothing live there: what the last "
         "handlers left (the page of a block read they completed) is stale. A CPU in one has live frames only "
         "from its stack pointer up (the dump's saved registers, taken on the vmap'd alias hardirq_stack_ptr "
         "names); below it is what deeper handlers left. Those parts are not read by the per-cpu root.",
         "x86-64 (irq_stack_backing_store)",
         "tests/kernels/test_owned_shapes.py::test_a_page_left_in_a_dead_interrupt_stack_frame_is_orphaned"),
    Root("per-cpu batches", roots.skip_percpu_batches, frozenset(),
         "The kernel fills per-CPU pointer batches up to a count and empties them by the count alone: "
         "the LRU and mlock folio batches (folio_batch.nr, pagevec.nr; nr = 0 once moved to the LRU) and "
         "softirq's skb head cache (napi_alloc_cache.skb_count; the upper half freed in bulk when full). A "
         "slot past the count names a folio or sk_buff since freed, whose page may have been handed out "
         "again and lost; so does the 1 KiB frag cache's va once all four frags are out (offset 0). Those "
         "slots are not read by the per-cpu root. The skbs in the skb cache's live slots are free objects "
         "kept for reuse, their words those of their last use: not read as holders by the slab root in a "
         "dump (live, the cache turns over while the slab is read) (percpu_batches.percpu_batches).",
         "all (folio_batch, pagevec up to 6.4, napi_alloc_cache; page_frag_1k 6.1 to 6.x)",
         "tests/kernels/test_owned_shapes.py::test_a_page_a_dead_lru_batch_slot_names_is_orphaned"),
    Root("kvfree_rcu page cache", roots.skip_kvfree_rcu_cache, frozenset(),
         "kvfree_rcu() keeps a few empty pages of object pointers per CPU for its next batch (krc.bkvcache, "
         "nr_bkv_objs of them, linked through an llist_node at each page's start); the rest of a cached page "
         "is what its last use, or on a kernel that does not zero pages what its use before, left there; "
         "so is the part of a page in use (filling, or waiting for a grace period) past its nr_records "
         "records. Neither is read (kvfree_rcu.cached_bulk_pages, bulk_page_tails).",
         "5.10+ (kfree_rcu_cpu.bkvcache)",
         "tests/kernels/test_page_owner.py::test_the_pages_kvfree_rcu_keeps_for_reuse_hold_nothing"),
    Root("free per-cpu areas", roots.skip_free_percpu_areas, frozenset(),
         "The per-cpu allocator marks what it hands out in each chunk's alloc_map, one bit per 4 bytes of a "
         "unit, the same offsets in every CPU's unit; free_percpu() clears the bits and leaves the bytes, so a "
         "freed area keeps its user's words -- a page pointer among them -- until alloc_percpu() hands it out "
         "again, zeroed. The free areas of every chunk (the first, the reserved one, those on pcpu_chunk_lists) "
         "are not read by the per-cpu and vmalloc roots (percpu.free_percpu_spans).",
         "4.14+ (pcpu_chunk.alloc_map)",
         "tests/kernels/test_owned_shapes.py::test_a_page_named_only_in_a_freed_per_cpu_area_is_orphaned"),
    Root("per-cpu areas", roots.scan_percpu_first_chunk, POINTERS,
         "Each CPU's unit of the first per-cpu chunk (memblock memory, __per_cpu_offset[cpu] + "
         "__per_cpu_start) holds the static per-CPU variables, up to the first chunk's end; "
         "pcpu_embed_first_chunk() frees the rest of each pcpu_unit_size unit at boot.",
         "all", "tests/kernels/test_registry.py::test_each_entry_holds_pages"),
    Root("task stacks", roots.scan_stacks, POINTERS,
         "A sleeping task's live frames are above its saved stack pointer (thread.sp); below it are "
         "dead frames. A task on a CPU has no saved SP we trust: all of its stack.",
         "all", "tests/kernels/test_registry.py::test_each_entry_holds_pages"),
    Root("page_pool DMA index", roots.skip_page_pool_dma_index, frozenset(),
         "A page_pool that DMA-maps its pages keeps each mapped page in its dma_mapped xarray (index in "
         "pp_magic) to unmap pages still in flight when it is destroyed; the xarray takes no reference, so "
         "a page leaked from the pool stays named there. Its nodes are slab objects whose words do not count.",
         "6.15+ (struct page_pool has dma_mapped)",
         "tests/kernels/test_owned_shapes.py::test_page_pool_pages_are_held_by_the_pool_or_its_user"),
    Root("bio caches", roots.skip_cached_bios, frozenset(),
         "bio_put() keeps a bio allocated with REQ_ALLOC_CACHE on its bio_set's per-CPU cache (free_list, "
         "free_list_irq, through bi_next) for reuse: an allocated slab object whose inline bio_vecs still name "
         "the pages of its last I/O. Every bio_set with a cache is an instance of the CPUHP_BIO_DEAD hotplug "
         "state (bio_cache.cached_bios). Their words do not count.",
         "5.15+ (struct bio_set has cache); on 7.3 every bio_alloc() from fs_bio_set is cached",
         "tests/kernels/test_owned_shapes.py::test_a_page_the_disk_read_into_then_lost_is_orphaned"),
    Root("LRU list heads", roots.skip_lru_list_heads, frozenset(),
         "A folio on the LRU (PG_lru) is linked through folio->lru into a list of its lruvec (lists[], or the "
         "multi-gen LRU's lrugen.folios[gen][type][zone], 6.1+, on in Debian's 6.12 and 7.3), which holds no "
         "reference: a folio released by its owner while a reference taken on it was never dropped stays "
         "there until its last put. The list heads, in each memcg's per-node info (kmalloc'd) and each node, "
         "name the folios at the lists' ends; their words do not count (lru.lru_list_heads).",
         "all",
         "tests/kernels/test_released.py::test_lru_list_heads_hold_nothing"),
    Root("stale sheaf slots", roots.skip_stale_sheaf_slots, frozenset(),
         "SLUB with sheaves (6.18+) caches free objects in kmalloc'd arrays, slab_sheaf.objects[0..size) of "
         "sheaf_capacity slots; taking an object decrements size and leaves its pointer in objects[size], so "
         "the slots from size on name objects handed out since, and what those objects' pages became (a page "
         "freed and allocated again, then lost). Their words do not count (slab.SlabObjects.stale_sheaf_spans; "
         "reachability's rule of the same name).",
         "6.18+ (struct kmem_cache has cpu_sheaves)",
         "tests/kernels/test_owned_shapes.py::test_stale_sheaf_slots_hold_nothing"),
    Root("slab", roots.scan_slab, POINTERS,
         "SLUB: an object is live unless it is on a freelist (per-CPU or per-slab); a hit in a slab "
         "page counts only inside an allocated object, in its object_size bytes: past them in its slot are "
         "SLUB's metadata and alignment padding, which keeps what the slab page held before (kmemleak too "
         "scans object_size bytes) (slab.SlabObjects; test_page_owner.py::test_a_page_named_only_in_a_slab_"
         "slots_padding_is_orphaned).",
         "all", "tests/kernels/test_orphans.py::test_heap_held_exact_run_and_the_leak_after_a_single"),
    Root("KFENCE objects", roots.scan_kfence_objects, POINTERS,
         "KFENCE serves one slab allocation per sample interval from its own pool, each object alone in a "
         "page: memblock memory, PG_reserved. The page keeps its slab type, cache and empty freelist when the "
         "object is freed, and the object its bytes; only kfence_metadata[i] says whether the object is in use "
         "(state), where it starts in its page and how long it is (addr, size). Those objects are read, "
         "exactly (mm.kfence).",
         "5.12+ with KFENCE on (CONFIG_KFENCE and kfence.sample_interval; Debian's 6.12 and 7.3 have it, "
         "off by default)",
         "tests/kernels/test_kfence.py::test_a_page_held_by_a_kfence_object_is_held_and_one_a_freed_"
         "object_names_is_orphaned"),
    Root("vmalloc", roots.scan_vmalloc, POINTERS,
         "vmalloc areas (module data and bss among them) are live while their vmap area is busy; the "
         "per-CPU cached_stacks of exited tasks are not.",
         "all", "tests/kernels/test_registry.py::test_each_entry_holds_pages"),
    Root("kernel pages", roots.scan_kernel_pages, POINTERS,
         "Large kmalloc (compound pages without a slab) and page_frag pages hold objects and skb heads.",
         "all", "tests/kernels/test_registry.py::test_each_entry_holds_pages"),
    Root("rx buffers", roots.scan_rx_buffers, frozenset({SKB_FRAG}),
         "dev_alloc_pages() does not clear a page, so an rx buffer holds stale data; the one kernel "
         "structure it carries that can hold another page is an skb_shared_info's frags[], whose "
         "entries (page, then length and offset) lie 16 bytes apart.",
         "all", "tests/unit/test_matcher.py::test_only_frag_shaped_page_pointers_count_in_rx_buffers"),
    Root("virtqueues", roots.scan_virtqueues, frozenset({PHYSICAL}),
         "A virtqueue's descriptor table holds its buffers' guest-physical addresses (and indirect "
         "tables of more); its avail and used rings hold 16-bit indexes, which side by side can read "
         "as a page-aligned address, so a ring's pages are read by their layout, not as plain pages.",
         "all (split rings; packed rings from 5.0)",
         "tests/kernels/test_seed.py::test_orphans_are_exactly_the_complete_record"),
    Root("blk-mq requests", roots.scan_blk_mq_requests, POINTERS,
         "blk_mq_alloc_rqs() cuts blocks of up to order 4 (no __GFP_COMP, the order in the first page's "
         "private, listed on tags->page_list) into struct requests and driver data: CPU-side structures, "
         "never a device's ring, whose packed small fields can read as a physical address; so they are read "
         "by pointers, not as plain referenced pages, and only the requests in use (ref not 0): an idle "
         "request keeps its last I/O's page pointers (blk_mq.request_blocks; the idle request: "
         "test_owned_shapes.py::test_a_page_the_disk_read_into_then_lost_is_orphaned).",
         "all",
         "tests/kernels/test_hosts.py::test_exactly_the_planted_leaks_are_orphaned"),
    Root("iommu page tables", roots.scan_iommu_tables, frozenset({TABLE_ENTRY}),
         "An IOMMU domain that serves the DMA API maps what drivers hand to dma_map_*(), which takes no "
         "reference: a leaf entry holds nothing (a page leaked while mapped is still orphaned), an upper "
         "entry holds the next table.  Its tables are read by their layout (iommu.py: Intel VT-d's "
         "dmar_domain.pgd, agaw + 2 levels), not as plain table-shaped pages; unmanaged domains (VFIO) "
         "keep the generic rule.",
         "Intel VT-d with dmar_domain.pgd (5.x to 6.x); other IOMMUs are named as not read",
         "tests/kernels/test_iommu.py::test_pages_leaked_while_dma_mapped_are_orphaned"),
    Root("GICv3 ITS tables", roots.scan_its_tables, frozenset({TABLE_ENTRY}),
         "A GICv3 ITS keeps its device and vPE tables in memory; an indirect one's level-1 table names each "
         "level-2 table by its physical address with GITS_BASER.Valid (bit 63) set, allocated when the first "
         "device of its ID range appears and kept nowhere else (gic_its.py: its_nodes, its_node.tables[]).",
         "arm64 with a GICv3 ITS (QEMU virt, gic-version=3)",
         "tests/kernels/test_arm64.py::test_exactly_the_planted_leaks_are_orphaned"),
    Root("referenced pages", roots.scan_referenced_pages,
         frozenset({STRUCT_PAGE, DIRECT_MAP, PHYSICAL, TABLE_ENTRY}),
         "An unattributed page that is referenced is live memory: a large buffer, a descriptor ring "
         "(physical addresses), the upper levels of page tables and IOMMU tables (entries with flags). "
         "Physical addresses count in order-0 pages only: dma_alloc_attrs() refuses __GFP_COMP, so a "
         "compound page is never a device's ring.",
         "all", "tests/kernels/test_owned_shapes.py::test_physical_tables_hold_their_levels", closure=True,
         infers=((PHYSICAL, PHYSICAL_MATCH), (TABLE_ENTRY, TABLE_SHAPE))),
    Root("memmap links", roots.scan_memmap_links, POINTERS,
         "A page kept on a list through its own struct page (page->lru: TTM pools, kexec and balloon "
         "lists; page->private chains) is named only by the struct page of the page before it; the "
         "struct page of a referenced page is live memory. Pages freed to the buddy allocator have "
         "their list links poisoned (list_del), so a stale link does not survive allocation; a page on "
         "the LRU (PG_lru) is linked into its lruvec, which holds no reference, so its links hold nothing.",
         "all", "tests/kernels/test_owned_shapes.py::test_page_lists_through_struct_page", closure=True),
)

OWNERS: tuple[Owner, ...] = (
    Owner("kernel mappings", owners.kernel_mappings,
          "A page the kernel maps outside the direct map without a vm_struct (espfix stacks, "
          "vm_map_ram, fixmaps) is named only by a leaf of init_mm's page tables; so is the memmap of "
          "memory hot-added after boot, 2 MiB blocks from the page allocator under huge vmemmap leaves; "
          "those are struct pages, read by their layout (memmap links), not as plain pages. A mapping "
          "made in whole blocks around something smaller holds nothing beside it: the image's last PMD "
          "past _end (x86), the FDT's 2 MiB blocks at the fixmap (arm64 6.1, kernel/fdt.py; tested in test_arm64).",
          "all", "tests/kernels/test_registry.py::test_each_entry_holds_pages"),
    Owner("CMA allocations", runs.extend_cma_runs,
          "cma_alloc() hands out an allocation of any length as order-0 pages of refcount 1, recorded "
          "only in its CMA area's bitmap; the caller keeps the first page (struct page or address) and "
          "frees by it and a count. A referenced page in an allocated span holds the span's pages after "
          "it (runs.extend_cma_runs).",
          "kernels with CONFIG_CMA (cma_areas); Debian's amd64 kernels have none",
          "tests/kernels/test_cma.py::test_cma_allocations_are_held_by_their_first_page", closure=True),
    Owner("allocation runs", runs.extend_runs,
          "alloc_pages_exact() splits a block into order-0 pages and the caller keeps only the first "
          "one's address; a split_page() block may be kept by its first struct page, from the image "
          "(the vDSO data store); boot-time tables cut by globals stay in their first part's block "
          "(runs.extend_runs); page_owner decides where it can.",
          "all", "tests/kernels/test_orphans.py::test_heap_held_exact_run_and_the_leak_after_a_single",
          closure=True),
    Owner("panic vmcoreinfo", owners.vmcoreinfo_dropped_at_panic,
          "crash_save_vmcoreinfo() switches vmcoreinfo_data to its safe copy at panic, dropping the "
          "only pointer to the page crash_save_vmcoreinfo_init() allocated.",
          "kdump cores", "tests/kernels/test_orphans.py::test_orphans_on_kdump_compressed_core"),
)


_IN_OBJECT = frozenset({OBJECT})

REACH_ROOTS: tuple[Root, ...] = (
    Root("boot memory", objects.scan_boot_memory, _IN_OBJECT,
         "Reserved pages live as long as the kernel: the image (its data, bss and __ro_after_init), "
         "memblock allocations (the memmap -- struct page's mapping and private name address spaces and "
         "buffer heads --, boot-time hash tables, the first per-cpu chunk).",
         "all", "tests/kernels/test_reachability.py::test_each_reachability_entry_is_needed"),
    Root("task stacks", roots.scan_stacks, _IN_OBJECT,
         "A sleeping task's live frames are above its saved stack pointer; a running task's whole stack.",
         "all", "tests/kernels/test_reachability.py::test_each_reachability_entry_is_needed"),
    Root("vmalloc", roots.scan_vmalloc, _IN_OBJECT,
         "vmalloc areas (module data and bss, kvmalloc'd tables) and later per-cpu chunks; vmalloc areas "
         "are roots, not traced: their vmap area keeps them reachable whatever their owner does.",
         "all", "tests/kernels/test_reachability.py::test_each_reachability_entry_is_needed"),
    Root("page frags", objects.scan_page_frags, _IN_OBJECT,
         "page_frag pages hold skb heads, whose skb_shared_info names further skbs (frag_list).",
         "all", "tests/kernels/test_reachability.py::test_each_reachability_entry_is_needed"),
    Root("held pages", objects.scan_held_pages, _IN_OBJECT,
         "Pages the reference scan found held (unattributed but referenced: kfree_rcu()'s bulk pages of "
         "pointers, drivers' page-sized tables) hold pointers to objects too; they are roots, so an "
         "object held only by an unreachable page is not reported.",
         "all", "tests/kernels/test_reachability.py::test_each_reachability_entry_is_needed"),
)

TRACED: tuple[Root, ...] = (
    Root("slab objects", objects.trace_slab, _IN_OBJECT,
         "SLUB: objects start at the slab's address plus red_left_pad, kmem_cache.size apart; only an "
         "allocated object's words count (REACH_RULES says which words do not).",
         "all", "tests/kernels/test_reachability.py::test_a_leaked_holder_hides_its_pages"),
    Root("KFENCE objects", roots.scan_kfence_objects, _IN_OBJECT,
         "The objects KFENCE has in use, at kfence_metadata's addr and size (the page scan's entry of the "
         "same name); the rest of its pool is not a root: its freed objects keep stale words.",
         "5.12+ with KFENCE on", "tests/kernels/test_kfence.py::test_an_object_kfence_served_is_traced"),
    Root("large kmalloc", objects.trace_large_kmalloc, _IN_OBJECT,
         "kmalloc() above the largest slab size takes a compound page without a slab; the caller keeps "
         "its address, so it is an object of PAGE_SIZE << order bytes.",
         "6.15+, where large kmalloc is a page type; before, such a buffer is an unattributed page the "
         "reference scan finds held, read as a root (held pages)", "tests/kernels/test_reachability.py::test_each_reachability_entry_is_needed"),
)

@dataclass(frozen=True)
class Rule:
    """How a word of traced memory counts, or does not, for reachability:
    the known false-unreachable (and false-reachable) sources, each with
    its kernel fact."""

    name: str
    fact: str
    kernels: str
    test: str


REACH_RULES: tuple[Rule, ...] = (
    Rule("interior and tagged pointers",
         "A pointer anywhere inside an object's slot reaches it: embedded list_head and rb_node members "
         "(rb_node keeps its colour in bit 0), an xarray's internal node entries (node | 2), a maple "
         "tree's encoded node pointers (type bits below the 256-byte node alignment), hlist_bl's lock "
         "bit.  A pointer one past the end does not.",
         "all", "tests/unit/test_reach_graph.py::test_interior_and_tagged_pointers_reach_their_object"),
    Rule("free object caches",
         "Objects on a slab's freelist, a CPU's freelist or in a sheaf (6.18+) are free: not traced, and "
         "never reported unreachable.",
         "all", "tests/kernels/test_reachability.py::test_every_allocated_object_is_traced"),
    Rule("stale sheaf slots",
         "A sheaf (6.18+) is a kmalloc'd object whose objects[0..size) are free objects it caches; "
         "taking one leaves its pointer in objects[size], so the slots from size on name objects handed "
         "out since: stale, they do not count (slab.SlabObjects.stale_sheaf_words).",
         "6.18+", "tests/kernels/test_reachability.py::test_a_leaked_holder_hides_its_pages"),
    Rule("RCU-pending objects",
         "An object passed to call_rcu() or kfree_rcu() is still allocated until the grace period ends; "
         "its rcu_head is inside it and is chained from the per-CPU callback lists (rcu_data) or "
         "kfree_rcu()'s per-CPU batches and their bulk pages: reached from the per-CPU roots and held "
         "pages like any object.",
         "all", "tests/kernels/test_reachability.py::test_no_leak_core_has_few_unreachable_objects"),
)

#: What one allocation spans: a hold on any of its pages holds them all, and
#: every page of a held one is read (``Memmap.order_of``/``heads_of``/``pages_of``).
EXTENTS: tuple[Rule, ...] = (
    Rule("compound pages",
         "__GFP_COMP marks every page after the first as a tail (compound_head = head | 1) and keeps the "
         "order in the first tail (folio order from 6.6): read from struct page by the census pass.",
         "all", "tests/unit/test_extents.py::test_order_of_answers_the_same_both_ways"),
    Rule("blocks without __GFP_COMP",
         "alloc_pages() without __GFP_COMP (__get_free_pages(), DMA-coherent rings, blk-mq's request pages) "
         "gives the first page a reference and leaves the others at refcount 0, unmarked: an unattributed "
         "order-0 page followed within its alignment by refcount-0 pages no list or compound page holds "
         "heads such a block (census.blocks; page_owner's order bounds it).",
         "all",
         "tests/kernels/test_blocks.py::test_without_the_extent_a_blocks_head_and_what_its_tail_names_are_orphaned"),
)

#: The inferences a hold can rest on: where the dump does not say who holds
#: a page, a rule guesses.  A page held only through one of them (directly,
#: or by a page so held) is in the inferred tier (``tiers.inferred_holds``),
#: never silently counted as held: if it is a leak, the report shows it.
INFERENCES: tuple[Rule, ...] = (
    Rule(ALLOCATION_RUN,
         "alloc_pages_exact() leaves order-0 pages of refcount 1 of which only the first is pointed to; "
         "nothing in struct page tells its tail from a leaked page allocated right after a one-page "
         "allocation (runs.extend_runs). Where page_owner records name the allocation the hold is proved "
         "and not in this tier.",
         "all without page_owner",
         "tests/kernels/test_orphans.py::test_heap_held_exact_run_and_the_leak_after_a_single"),
    Rule(CMA_RUN,
         "cma_alloc() records an allocation only as set bits of its area's bitmap, back to back with the "
         "next: the pages after a referenced one are taken for its allocation (runs.extend_cma_runs).",
         "kernels with CMA areas",
         "tests/kernels/test_cma.py::test_lost_cma_buffers_are_orphaned_unless_right_after_a_held_one"),
    Rule(PHYSICAL_MATCH,
         "A device's descriptor ring holds its buffers' physical addresses, so a 64-byte aligned value "
         "that is a physical address in RAM counts in a referenced page (not a compound one); any number "
         "of that size in a plain page reads the same.",
         "all (no IOMMU)",
         "tests/kernels/test_inferred.py::test_each_inferred_hold_names_its_rule"),
    Rule(TABLE_SHAPE,
         "A page whose words are table-shaped entries (physical address with flag bits, matcher."
         "table_entries) is taken for a device's or a driver's page table: its entries hold the next "
         "level. The shape is a guess at what the page is.",
         "all",
         "tests/kernels/test_owned_shapes.py::test_physical_tables_hold_their_levels"),
    Rule(KMALLOC_SLACK,
         "kmalloc() serves a request from the smallest size class that fits it, and SLUB keeps no requested "
         "size (outside slub_debug): the bytes of a kmalloc-N object past the next smaller class may lie past "
         "the request. A kernel that does not zero objects it hands out (init_on_alloc off) leaves there what "
         "the object's previous user wrote, so a page pointer there may be a stale copy (mm.kmalloc).",
         "kernels without init_on_alloc (CONFIG_INIT_ON_ALLOC_DEFAULT_ON off, or init_on_alloc=0); Debian's "
         "kernels zero objects",
         "tests/kernels/test_page_owner.py::test_a_page_named_only_in_a_kmalloc_objects_slack_is_in_the_"
         "inferred_tier"),
)

KEPT: tuple[Owner, ...] = (
    Owner("sysctl registrations", objects.kept_sysctl_headers,
          "A built-in sysctl table is registered for the kernel's lifetime and its header dropped "
          "(register_sysctl_init(), sysctl_init()'s register_sysctl_table()); the kernel tells kmemleak "
          "with kmemleak_not_leak(hdr).  Its ctl_table_arg is the table in the image, its root "
          "&sysctl_table_root (NULL in the wrapper header of register_sysctl_table()'s subtables).",
          "all", "tests/kernels/test_reachability.py::test_each_reachability_entry_is_needed"),
)


def entry(name: str) -> Root | Owner:
    """The root or owner called ``name``."""
    for e in (*ROOTS, *OWNERS):
        if e.name == name:
            return e
    raise KeyError(name)


def describe() -> list[str]:
    """One line per entry: what it is and the fact behind it."""
    return [f"{'root ' if isinstance(e, Root) else 'owner'} {e.name}: {e.fact}" for e in (*ROOTS, *OWNERS)]
