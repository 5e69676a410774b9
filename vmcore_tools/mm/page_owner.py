"""page_ext tables, and the page_owner records in them: who allocated a page.

A kernel built with ``CONFIG_PAGE_OWNER`` and booted with ``page_owner=on``
keeps, for every page, a ``struct page_owner`` in the page's ``page_ext``
entry: the order and GFP mask of the allocation that holds it, the task
(``comm``, ``pid``) and time, and a stack depot handle of the allocating
stack.  That stack is what names the culprit of a page-allocator leak:
``i40e_alloc_rx_buffers -> i40e_alloc_mapped_page -> dev_alloc_pages``.

Where the record lives (mm/page_ext.c, SPARSEMEM, 4.x to 6.x):

* each memory section has a table of ``page_ext`` entries of
  ``page_ext_size`` bytes (``sizeof(struct page_ext) + extra_mem`` before
  6.0), and ``mem_section.page_ext`` holds the table's address *minus*
  ``page_ext_size * (first PFN of the section)``, so a PFN's entry is at
  ``section.page_ext + page_ext_size * pfn``; bit 0 of the pointer marks a
  section whose table is going away (``PAGE_EXT_INVALID``, memory hot-remove);
* ``struct page_owner`` sits ``page_owner_ops.offset`` bytes into the entry;
* bit ``PAGE_EXT_OWNER_ALLOCATED`` of ``page_ext.flags`` says the page is
  allocated now; ``PAGE_EXT_OWNER`` that it ever was;
* every page of an allocation carries the same record, and ``split_page()``
  rewrites each one to order 0: the head's record is the allocation's.

The tables themselves are pages the page allocator handed out
(``alloc_pages_exact_nid()`` in ``alloc_page_ext()``, vzalloc as a fallback)
that nothing points to at their start: the only pointer is the biased one
above.  ``page_ext_pfns`` finds them for the census, or every page of them
would look orphaned on a page_owner kernel (16 MB per GB of memory).

The hot path is vectorized: the records of many PFNs are read one section
table slice at a time and decoded with numpy; only the distinct stack
handles go through drgn (``stack_depot_fetch``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import drgn
import numpy as np
from drgn.helpers.linux.mmzone import nr_to_section
from drgn.helpers.linux.stackdepot import stack_depot_fetch

from vmcore_tools.core.debuginfo import load_module_debug_info, module_at
from vmcore_tools.core.features import constant, has_member, has_object, has_type
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.core.arrays import unique

#: Functions of the page allocator itself, skipped when we name the caller
#: that asked for a page (``alloc_site``): the first frame of a page_owner
#: stack is always inside the allocator.
ALLOCATOR_FRAMES = (
    "post_alloc_hook", "prep_new_page", "get_page_from_freelist", "__alloc_pages",
    "alloc_pages", "__folio_alloc", "folio_alloc", "__alloc_pages_", "alloc_pages_",
    "__get_free_pages", "get_zeroed_page", "__page_frag_", "page_frag_", "__dev_alloc_pages",
    "dev_alloc_pages", "alloc_pages_exact", "__alloc_pages_node", "alloc_page_interleave",
    "__page_cache_alloc", "set_page_owner", "__set_page_owner", "split_page",
    "__alloc_frozen_pages", "alloc_frozen_pages", "alloc_pages_mpol",
    # kmalloc() above the largest slab size takes pages straight from here:
    # the caller is the one who asked for the buffer
    "kmalloc_large", "__kmalloc_large_", "___kmalloc_large_", "kmalloc_large_node", "kmalloc_order",
    "kmalloc_order_trace", "__kmalloc_node", "__kmalloc", "__kmalloc_noprof", "__kmalloc_node_noprof",
    "kmalloc_large_noprof", "__kmalloc_large",      # __kmalloc_large_noprof, 6.10+, less its suffix
)
#: Entry points that hand out one block split into order-0 pages, the
#: front of which the caller keeps (``make_alloc_exact()``).
EXACT_ALLOCATORS = ("alloc_pages_exact", "alloc_pages_exact_nid")


@dataclass
class PageOwner:
    """The page_owner record of one allocation."""

    pfn: int
    allocated: bool          # PAGE_EXT_OWNER_ALLOCATED: allocated now
    order: int
    gfp_mask: int
    # None where this kernel's record lacks the member (5.10 records no task or time)
    pid: int | None          # the allocating task
    comm: str | None         # its name
    ts_nsec: int | None      # local_clock() at allocation
    free_ts_nsec: int | None  # local_clock() when last freed (0: never; None: not recorded, before 5.13)
    handle: int              # its stack depot handle
    stack: list[str]         # "function+0xoff [module]", innermost first
    alloc_site: str | None   # the first function outside the page allocator, "name [module]"


@dataclass
class StackUsage:
    """The pages that one allocating stack holds now (``PageOwners.by_stack``)."""

    handle: int
    pages: int
    allocations: int
    alloc_site: str | None
    stack: list[str]


def page_owner_state(prog: drgn.Program) -> str:
    """``"on"``; ``"off"`` (built in, not enabled: boot with
    ``page_owner=on``); ``"absent"`` (kernel built without CONFIG_PAGE_OWNER);
    or ``"unsupported"`` (a memory model whose page_ext we do not read)."""
    if not has_type(prog, "struct page_owner") or not has_object(prog, "page_owner_ops"):
        return "absent"
    if not has_member(prog, "struct mem_section", "page_ext"):
        return "unsupported"
    # DEFINE_STATIC_KEY_FALSE(page_owner_inited): enabled once init_page_owner() ran
    if prog["page_owner_inited"].key.enabled.counter.value_() <= 0:
        return "off"
    return "on"


def _frames(prog: drgn.Program, trace: drgn.StackTrace) -> list[tuple[str, str]]:
    """("function+0xoff [module]", "function [module]") per frame, innermost
    first; drgn expands functions inlined at a return address from the DWARF.
    Without DWARF the function is the symbol's, less the suffix of a
    compiler-made clone (``.isra.0``, ``.constprop.0``, ``.part.0``)."""
    out = []
    for f in trace:
        module = module_at(prog, f.pc)
        where = f" [{module}]" if module else ""
        name = f.name if f.name and not f.name.startswith("0x") else ""
        if f.is_inline:
            out.append((f"{name} (inlined){where}", name + where))
            continue
        try:
            sym = f.symbol()
            out.append((f"{sym.name}+{f.pc - sym.address:#x}{where}",
                        (name or sym.name.split(".")[0]) + where))
        except LookupError:     # e.g. a module's init code, freed once it ran
            label = f"{f.pc:#x} (no symbol){where}"
            out.append((label, label))
    return out


def _function(frame_name: str) -> str:
    """The function of a "function [module]" frame name, without the
    ``_noprof`` suffix 6.10+ gives the allocation entry points."""
    return frame_name.split()[0].removesuffix("_noprof")


def _is_allocator(function: str) -> bool:
    """Whether a frame's function is the page allocator's own."""
    return any(function == f or (f.endswith("_") and function.startswith(f)) for f in ALLOCATOR_FRAMES)


def page_ext_entry_size(prog: drgn.Program) -> int:
    """Bytes per page of a page_ext table: ``page_ext_size`` (6.0+), before
    that ``sizeof(struct page_ext)`` plus the static ``extra_mem``."""
    if has_object(prog, "page_ext_size"):
        return prog["page_ext_size"].value_()
    return prog.type("struct page_ext").size + prog["extra_mem"].value_()


def _section_table(prog: drgn.Program, section_nr: int) -> int | None:
    """``mem_section.page_ext`` of a section: the entry of PFN p is at
    ``value + entry_size * p``; None where the section has no table."""
    value = nr_to_section(prog, section_nr).page_ext.value_()
    return None if not value or value & 1 else value


def _section_shift(prog: drgn.Program) -> int:
    return prog["SECTION_SIZE_BITS"].value_() - prog["PAGE_SHIFT"].value_()


def page_ext_pfns(prog: drgn.Program, m: Memmap) -> np.ndarray:
    """PFNs of the page_ext tables that sit in the direct map (tables that
    are vmalloc'd are vmalloc pages already); empty where the kernel keeps
    no page_ext tables in ``mem_section`` (no page_ext user enabled, or
    FLATMEM)."""
    if not has_member(prog, "struct mem_section", "page_ext"):
        return np.zeros(0, np.int64)
    size, shift = page_ext_entry_size(prog), _section_shift(prog)
    per_section = 1 << shift
    out = []
    sections = sorted({nr for start, end in m.ranges for nr in range(start >> shift, ((end - 1) >> shift) + 1)})
    for nr in sections:
        table = _section_table(prog, nr)
        if table is None:
            continue
        start = m.pfn_of_virt(table + size * (nr << shift))
        last = m.pfn_of_virt(table + size * ((nr << shift) + per_section) - 1)
        if start >= 0 and last >= start:
            out.append(np.arange(start, last + 1, dtype=np.int64))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class PageOwners:
    """Reader of page_owner records; ``PageOwners(prog).lookup(pfns)``.

    Raises ``LookupError`` when the kernel has no page_owner records to read
    (see ``page_owner_state``).
    """

    def __init__(self, prog: drgn.Program):
        state = page_owner_state(prog)
        if state != "on":
            raise LookupError(f"page_owner is {state}")
        self.prog = prog
        self.entry_size = page_ext_entry_size(prog)
        owner = prog.type("struct page_owner")
        base = prog["page_owner_ops"].offset.value_()
        # older records lack the task and the time stamp (5.10: none of the three)
        self.fields = {name: (base + drgn.offsetof(owner, name), drgn.sizeof(owner.member(name).type))
                       for name in ("order", "gfp_mask", "handle", "ts_nsec", "free_ts_nsec", "comm", "pid")
                       if owner.has_member(name)}
        page_ext = prog.type("struct page_ext")
        self.fields["flags"] = (drgn.offsetof(page_ext, "flags"), drgn.sizeof(page_ext.member("flags").type))
        self.owner_bit = constant(prog, "PAGE_EXT_OWNER")
        self.allocated_bit = constant(prog, "PAGE_EXT_OWNER_ALLOCATED")
        self.section_shift = _section_shift(prog)
        self.special = {prog[name].value_(): label for name, label in (
            ("early_handle", "allocated before page_owner was set up (early boot)"),
            ("failure_handle", "its stack could not be saved"),
            ("dummy_handle", "allocated by page_owner itself (recursion guard)"),
        ) if has_object(prog, name)}
        #: handle -> (frames, allocation site, whether alloc_pages_exact() is on the stack)
        self._stacks: dict[int, tuple[list[str], str | None, bool]] = {}

    def _stack(self, handle: int) -> tuple[list[str], str | None, bool]:
        """Frames of a stack depot handle, the first one outside the page
        allocator and whether ``alloc_pages_exact()`` is among them; a
        special handle gives one line saying what it is."""
        if handle not in self._stacks:
            if handle in self.special:
                self._stacks[handle] = ([self.special[handle]], None, False)
            else:
                trace = stack_depot_fetch(drgn.Object(self.prog, "depot_stack_handle_t", handle))
                if trace:   # name the modules' frames (and their inlined calls) from their DWARF
                    load_module_debug_info(self.prog, filter(None, (module_at(self.prog, f.pc) for f in trace)))
                    trace = stack_depot_fetch(drgn.Object(self.prog, "depot_stack_handle_t", handle))
                frames = _frames(self.prog, trace) if trace else []
                functions = [(name, _function(name)) for _, name in frames if name]
                site = next((name for name, fn in functions if not _is_allocator(fn)), None)
                exact = any(fn in EXACT_ALLOCATORS for _, fn in functions)
                self._stacks[handle] = ([text for text, _ in frames], site, exact)
        return self._stacks[handle]

    def exact_run(self, head: PageOwner) -> bool:
        """Whether ``head``'s allocation came from ``alloc_pages_exact()``
        (its stack says so; a special handle says nothing)."""
        return self._stack(head.handle)[2]

    @staticmethod
    def same_allocation(head: PageOwner, prev: PageOwner, nxt: PageOwner | None) -> bool:
        """Whether ``nxt``, the record of the page after ``prev``'s, was
        written by the allocation that wrote ``head``'s.

        Facts: ``set_page_owner()`` writes the records of a block's pages in
        one pass, in PFN order, with the same stack handle and task;
        ``split_page()`` only rewrites the order.  Later kernels take the
        time stamp once per block (6.9's ``mm/page_owner.c`` does); 6.1
        takes it per page in that pass (``local_clock()`` in the loop, some
        300 ns apart on our 6.1 cores), so the gap between two pages of one
        block is whatever interrupted the loop -- an interrupt, or the host
        preempting the vCPU for milliseconds -- and no length of gap tells
        a second call apart.  Two things do:

        * a record is never older than the one before it in the pass, and
        * a page of the block stayed allocated from then on: its last free
          (``free_ts_nsec``, 5.13+) came before the block was allocated.
          A page ``make_alloc_exact()`` freed from the block's tail and the
          same call site then took again was freed after it.

        What the records cannot tell: a second call from the same site by
        the same task whose block lies right after a run that filled its
        own block, on pages that were free before the first call.  A record
        without task and time (5.10) has its handle alone."""
        if nxt is None or not (prev.allocated and nxt.allocated) or prev.handle != nxt.handle:
            return False
        if prev.pid != nxt.pid:
            return False
        if head.ts_nsec is None or prev.ts_nsec is None or nxt.ts_nsec is None:
            return True
        if nxt.ts_nsec < prev.ts_nsec:
            return False
        return nxt.free_ts_nsec is None or nxt.free_ts_nsec <= head.ts_nsec

    def lookup(self, pfns: np.ndarray) -> dict[int, PageOwner]:
        """Records of ``pfns`` (pages whose table is missing are left out),
        read one slice of a section's table at a time."""
        out: dict[int, PageOwner] = {}
        for group, rows in self._rows(pfns):
            out.update(self._decode(group, rows))
        return out

    def _rows(self, pfns: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(PFNs, their page_ext entries as rows of bytes)``, one slice of a
        section's table at a time; sections without a table, or whose slice
        cannot be read, are left out."""
        pfns = unique(np.asarray(pfns, dtype=np.int64))
        sections = pfns >> self.section_shift
        size = self.entry_size
        for nr in unique(sections).tolist():
            table = _section_table(self.prog, nr)
            if table is None:
                continue
            group = pfns[sections == nr]
            lo, hi = int(group[0]), int(group[-1]) + 1
            try:
                raw = self.prog.read(table + size * lo, size * (hi - lo))
            except drgn.FaultError:
                continue
            yield group, np.frombuffer(raw, dtype=np.uint8).reshape(hi - lo, size)[group - lo]

    def by_stack(self, pfns: np.ndarray, top: int = 20) -> tuple[list[StackUsage], int, int]:
        """The allocating stacks that hold ``pfns`` now, most pages first:
        the ``top`` of them, how many stacks there are in all, and how many
        of the pages have no current record (allocated before page_owner was
        on, or the table is missing).

        Every page of an allocation carries its record, so pages are counted
        per page and an allocation of order n counts 2^-n per page; only the
        handles go through the stack depot, and only the ``top`` ones.  What
        ``page_owner_sort`` does with ``/sys/kernel/debug/page_owner`` on a
        live system, from a dump."""
        pfns = unique(np.asarray(pfns, dtype=np.int64))
        handles, weights = [], []
        recorded = 0
        for _, rows in self._rows(pfns):
            now = ((self._column(rows, "flags") >> np.uint64(self.allocated_bit)) & np.uint64(1)).astype(bool)
            recorded += int(now.sum())
            handles.append(self._column(rows, "handle")[now].astype(np.uint64))
            weights.append(np.ldexp(1.0, -self._column(rows, "order")[now].astype(np.int64)))
        if not handles:
            return [], 0, int(pfns.size)
        handle, inverse = np.unique(np.concatenate(handles), return_inverse=True)
        pages = np.bincount(inverse, minlength=handle.size)
        allocations = np.bincount(inverse, weights=np.concatenate(weights), minlength=handle.size)
        out = []
        for i in np.argsort(-pages, kind="stable")[:top].tolist():
            stack, site, _ = self._stack(int(handle[i]))
            out.append(StackUsage(int(handle[i]), int(pages[i]), int(np.ceil(allocations[i])), site, stack))
        return out, int(handle.size), int(pfns.size) - recorded

    def _column(self, rows: np.ndarray, name: str, signed: bool = False) -> np.ndarray | None:
        """One member of every row, as integers of the member's DWARF size
        (None where this kernel's record lacks the member)."""
        if name not in self.fields:
            return None
        off, width = self.fields[name]
        return np.ascontiguousarray(rows[:, off:off + width]).view(f"<{'i' if signed else 'u'}{width}").ravel()

    def _decode(self, pfns: np.ndarray, rows: np.ndarray) -> dict[int, PageOwner]:
        """Records of the page_ext entries ``rows`` (one row of bytes per PFN);
        a page that was never allocated since page_owner started has none."""
        flags = self._column(rows, "flags")
        ever = (flags >> np.uint64(self.owner_bit)) & np.uint64(1)
        now = (flags >> np.uint64(self.allocated_bit)) & np.uint64(1)
        order = self._column(rows, "order")
        gfp = self._column(rows, "gfp_mask")
        handle = self._column(rows, "handle")
        ts = self._column(rows, "ts_nsec")
        freed = self._column(rows, "free_ts_nsec")
        pid = self._column(rows, "pid", signed=True)
        recs = {}
        for i in np.flatnonzero(ever).tolist():
            stack, site, _ = self._stack(int(handle[i]))
            pfn = int(pfns[i])
            recs[pfn] = PageOwner(pfn, bool(now[i]), int(order[i]), int(gfp[i]),
                                  None if pid is None else int(pid[i]), self._comm(rows[i]),
                                  None if ts is None else int(ts[i]), None if freed is None else int(freed[i]),
                                  int(handle[i]), stack, site)
        return recs

    def _comm(self, row: np.ndarray) -> str | None:
        if "comm" not in self.fields:
            return None
        off, width = self.fields["comm"]
        return bytes(row[off:off + width]).split(b"\0", 1)[0].decode(errors="replace")
