"""What the flags and type words of a ``struct page`` mean on this kernel:
``PG_*`` bit numbers from ``enum pageflags``, and the page types kept in the
``_mapcount``/``page_type`` word, each found in the dump's DWARF and
VMCOREINFO, never assumed from a version."""

from __future__ import annotations

import drgn
import numpy as np

from vmcore_tools.core.features import constant, has_member, vmcoreinfo_numbers


class PageTypes:
    """Page types stored in the ``_mapcount``/``page_type`` word.

    * 6.12+: the type is the top byte, ``enum pagetype`` (``PGTY_buddy`` =
      0xf0, ...) is in DWARF.
    * 4.18 to 6.11: ``page_type`` starts as -1 and a type clears one bit under
      ``PAGE_TYPE_BASE`` (0xf0000000); ``PageX`` is
      ``(page_type & (PAGE_TYPE_BASE | PG_x)) == PAGE_TYPE_BASE``.  VMCOREINFO
      exports ``PAGE_BUDDY_MAPCOUNT_VALUE`` (= ~PG_buddy) and
      ``PAGE_OFFLINE_MAPCOUNT_VALUE``.  ``PG_table`` is not exported: it is
      0x400 while ``PG_kmemcg`` (0x200) exists, i.e. before 5.11, whose
      ``struct page`` has ``mem_cgroup`` instead of ``memcg_data``; 0x200 after.
    """

    BASE = 0xF0000000

    def __init__(self, prog: drgn.Program):
        self.numbers = vmcoreinfo_numbers(prog)
        self.top_byte = constant(prog, "PGTY_buddy") is not None
        self.pgty = {name: constant(prog, f"PGTY_{name}")
                     for name in ("buddy", "offline", "table", "guard", "hugetlb", "slab",
                                  "zsmalloc", "large_kmalloc")}
        self.old_bits: dict[str, int] = {}
        if not self.top_byte:
            for name in ("buddy", "offline"):
                v = self.numbers.get(f"PAGE_{name.upper()}_MAPCOUNT_VALUE")
                if v is not None:
                    self.old_bits[name] = ~v & 0xFFFFFFFF
            self.old_bits["table"] = 0x200 if has_member(prog, "struct page", "memcg_data") else 0x400

    def is_type(self, mapcount: np.ndarray, name: str) -> np.ndarray:
        if self.top_byte:
            value = self.pgty.get(name)
            if value is None:
                return np.zeros(mapcount.shape, bool)
            return (mapcount >> np.uint32(24)) == np.uint32(value)
        bit = self.old_bits.get(name)
        if bit is None:
            return np.zeros(mapcount.shape, bool)
        mask = np.uint32(self.BASE | bit)
        return (mapcount & mask) == np.uint32(self.BASE)


def page_flag_bits(prog: drgn.Program) -> dict[str, int]:
    """``PG_*`` bit numbers from ``enum pageflags`` in DWARF."""
    out = {}
    for name in ("reserved", "slab", "head", "lru", "swapbacked", "swapcache", "private",
                 "uptodate", "dirty", "active", "referenced", "mlocked"):
        value = constant(prog, f"PG_{name}")
        if value is not None:
            out[name] = value
    return out


#: flags only the page cache, anonymous memory and the LRU set (``folio_add_lru()``,
#: ``__folio_set_swapbacked()`` in shmem and anon faults, ``folio_mark_uptodate()``)
USER_OR_CACHE_FLAGS = ("lru", "active", "swapbacked", "uptodate")


def were_user_or_cache(prog: drgn.Program, flags: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Whether each page (its ``flags`` and ``mapping`` words) was page cache
    or anonymous memory at some time since it was allocated.

    Fact: the page allocator hands a page out with no flag set
    (``PAGE_FLAGS_CHECK_AT_PREP`` is every flag but hwpoison, checked in
    ``prep_new_page()``), and the flags of ``USER_OR_CACHE_FLAGS`` are set
    only by the page cache, anonymous memory and the LRU -- never by a
    driver on a buffer (``PG_dirty`` and ``PG_referenced`` are: a buffer
    mapped to user space and written, or touched by GUP, gets them).  They
    stay until the page is freed (``free_pages_prepare()``), as does an
    anonymous page's ``anon_vma`` in ``mapping`` (low bit set)."""
    bits = page_flag_bits(prog)
    out = (mapping & np.uint64(3)) == np.uint64(1)
    for name in USER_OR_CACHE_FLAGS:
        if name in bits:
            out |= (flags >> np.uint64(bits[name]) & np.uint64(1)).astype(bool)
    return out
