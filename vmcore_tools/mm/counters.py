"""The kernel's own counters (vmstat, MemTotal): what the census is
reconciled with."""

from __future__ import annotations

import drgn
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.mmzone import for_each_online_pgdat
from drgn.helpers.linux.percpu import per_cpu_ptr

from vmcore_tools.core.features import has_member, has_object


COUNTERS = {
    # our name: vmstat enumerator (values are pages, except where the name says kb)
    "free": "NR_FREE_PAGES",
    "slab_reclaimable": "NR_SLAB_RECLAIMABLE_B",
    "slab_unreclaimable": "NR_SLAB_UNRECLAIMABLE_B",
    "file": "NR_FILE_PAGES",
    "shmem": "NR_SHMEM",
    "anon": "NR_ANON_MAPPED",
    "page_tables": "NR_PAGETABLE",
    "kernel_stack_kb": "NR_KERNEL_STACK_KB",
    "vmalloc": "NR_VMALLOC",
}


def kernel_counters(prog: drgn.Program) -> dict[str, int]:
    """vmstat counters, global value plus the per-CPU deltas not yet folded in.

    Fact: zone counters live in ``vm_zone_stat``, node counters in
    ``vm_node_stat``; each CPU keeps a small delta (``vm_stat_diff``) in
    ``zone->per_cpu_zonestats`` (5.14+) / ``zone->pageset`` or
    ``pgdat->per_cpu_nodestats``.
    """
    zone_items = {e.name: e.value for e in prog.type("enum zone_stat_item").enumerators}
    node_items = {e.name: e.value for e in prog.type("enum node_stat_item").enumerators}
    zone_diff = "per_cpu_zonestats" if has_member(prog, "struct zone", "per_cpu_zonestats") else "pageset"
    out = {}
    for name, item in COUNTERS.items():
        if item in zone_items:
            idx = zone_items[item]
            value = prog["vm_zone_stat"][idx].counter.value_()
            for pgdat in for_each_online_pgdat(prog):
                for zone in pgdat.node_zones:
                    if not zone.present_pages:
                        continue
                    for cpu in for_each_possible_cpu(prog):
                        value += per_cpu_ptr(getattr(zone, zone_diff), cpu).vm_stat_diff[idx].value_()
        elif item in node_items:
            idx = node_items[item]
            value = prog["vm_node_stat"][idx].counter.value_()
            for pgdat in for_each_online_pgdat(prog):
                for cpu in for_each_possible_cpu(prog):
                    value += per_cpu_ptr(pgdat.per_cpu_nodestats, cpu).vm_node_stat_diff[idx].value_()
        else:
            continue
        out[name] = value
    if "slab_reclaimable" in out:
        out["slab"] = out.pop("slab_reclaimable") + out.pop("slab_unreclaimable", 0)
    if "vmalloc" not in out and has_object(prog, "nr_vmalloc_pages"):
        # before NR_VMALLOC (6.7?) VmallocUsed came from this atomic counter
        out["vmalloc"] = prog["nr_vmalloc_pages"].counter.value_()
    out["totalram"] = totalram_pages(prog)
    return out


def totalram_pages(prog: drgn.Program) -> int:
    """MemTotal: ``_totalram_pages`` is an atomic_long_t since 5.0 (``totalram_pages`` before)."""
    if has_object(prog, "_totalram_pages"):
        return prog["_totalram_pages"].counter.value_()
    return prog["totalram_pages"].value_()
