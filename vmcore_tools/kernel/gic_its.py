"""The GICv3 ITS's indirect tables (arm64): level-2 tables named only by a
physical address in a level-1 table.

Facts (the GICv3 architecture, ``drivers/irqchip/irq-gic-v3-its.c``): an
ITS keeps its device and vPE tables in memory it is given through
``GITS_BASER<n>``; the driver records each in ``its_node.tables[n]``
(``struct its_baser``: ``base``, the table's kernel address; ``val``, the
register's value; ``order``).  With ``GITS_BASER.Indirect`` (bit 62) the
table is two-level: the level-1 table holds, for each range of IDs in use,
the physical address of a level-2 table ORed with ``GITS_BASER.Valid``
(bit 63), allocated when the first device of the range appears
(``its_alloc_table_entry()``: ``alloc_pages(get_order(psz))``) and never
kept anywhere else.  The ITS list is ``its_nodes``.
"""

from __future__ import annotations

import drgn
import numpy as np
from drgn.helpers.linux.list import list_for_each_entry

from vmcore_tools.core.features import has_object
from vmcore_tools.core.stages import record_damage
from vmcore_tools.core.walk import bounded
from vmcore_tools.mm.memmap import Memmap, max_buddy_order

VALID = np.uint64(1 << 63)
INDIRECT = 1 << 62
#: the output address of a level-1 entry: bits [51:12] (a level-2 table is psz-aligned)
ADDRESS = np.uint64(0x000FFFFFFFFFF000)
#: an ITS has eight GITS_BASER registers
MAX_ITS = 64


def its_level2_tables(prog: drgn.Program, a: Memmap) -> dict[int, tuple[int, int, str]]:
    """First PFN of each level-2 table of every indirect ITS table -> (the
    address of the level-1 entry naming it, the entry, what it is); {}
    without an ITS."""
    if not has_object(prog, "its_nodes"):
        return {}
    out: dict[int, tuple[int, int, str]] = {}
    nodes = list_for_each_entry("struct its_node", prog["its_nodes"].address_of_(), "entry")
    for its in bounded(nodes, "the GICv3 ITS list (its_nodes)", MAX_ITS):
        for n, table in enumerate(its.tables):
            base, val = table.base.value_(), table.val.value_()
            if not base or not val & INDIRECT:
                continue
            order = table.order.value_()
            if order > max_buddy_order(prog):       # a table is one buddy block
                record_damage(f"GICv3 ITS {its.phys_base.value_():#x} table {n} has order {order}, "
                              "past the buddy allocator's largest: not read")
                continue
            words = np.frombuffer(prog.read(base, a.page_size << order), "<u8")
            for i in np.flatnonzero(words & VALID).tolist():
                pfn = int(words[i] & ADDRESS) >> a.page_shift
                if 0 <= pfn < a.nr:
                    out[pfn] = (base + 8 * i, int(words[i]),
                                f"GICv3 ITS {its.phys_base.value_():#x} table {n}, level-1 entry {i}")
    return out
