"""What the reference scan finds: a word of kernel memory that names a
candidate page, the ways it can name it, and the scan's result.  Shared by
the scan (``engine.py`` and its roots and owners), the run rule
(``runs.py``), the evidence and the reports."""

from __future__ import annotations

from dataclasses import dataclass, field

#: How a word can name a page (``registry.Root.counts``; the registry's docstring says what each means).
STRUCT_PAGE, DIRECT_MAP, PHYSICAL, TABLE_ENTRY, SKB_FRAG, OBJECT = (
    "struct page", "direct map", "physical", "table entry", "skb frag", "object")
#: The two ways a pointer names a page.
POINTERS = frozenset({STRUCT_PAGE, DIRECT_MAP})
#: The inferences a hold can rest on where the dump does not prove it
#: (``registry.INFERENCES`` states each one's fact; ``tiers`` the tier).
ALLOCATION_RUN, CMA_RUN, PHYSICAL_MATCH, TABLE_SHAPE, KMALLOC_SLACK = (
    "allocation run", "CMA run", "physical-address match", "table shape", "kmalloc slack")


@dataclass
class Reference:
    target: int        # head PFN of the referenced candidate
    kind: str          # "struct page", "direct map", "physical"
    address: int       # where the referring word is (kernel virtual address)
    region: str        # what kind of memory holds it: "slab", "stack", "data", ...
    where: str = ""    # filled in for the report: cache and object, symbol, task ...
    value: int = 0     # the referring word itself, where one was read
    holder: int = 0    # the slab object that holds the word (its address), where one was identified
    #: the candidate (head PFN) whose memory holds the word -- a referenced
    #: page read in the closure, or its struct page --, -1 for other memory:
    #: such a reference is only as good as the hold on that candidate
    source: int = -1
    #: the inference the hold rests on (``registry.INFERENCES``), "" where
    #: the dump proves it (``refs.tiers``)
    rule: str = ""


@dataclass
class ScanResult:
    references: dict[int, list[Reference]]   # candidate head PFN -> references found
    bytes_scanned: int = 0
    seconds: float = 0.0
    #: bytes read, per registry entry ("scan: NAME" without "scan: "): what
    #: the scan reads, and why (the entry's fact)
    bytes_by_root: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: DMA-API domains of an IOMMU whose page tables were read by their
    #: layout, and how many could not be (``iommu.iommu_tables``)
    iommu_domains_read: int = 0
    iommu_domains_not_read: int = 0
    #: bytes of reserved pages the scan read nothing of, by boot extent (``unread``)
    boot_memory_not_read: dict[str, int] = field(default_factory=dict)

    @property
    def gb_per_s(self) -> float:
        return self.bytes_scanned / 1e9 / self.seconds if self.seconds else 0.0
