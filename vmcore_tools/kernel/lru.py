"""The LRU's list heads: words that link pages without holding them.

Fact: a folio on the LRU (``PG_lru``) is linked through ``folio->lru`` into
one list of its lruvec: ``lruvec->lists[NR_LRU_LISTS]``, or, with the
multi-gen LRU enabled (6.1+; on by default in Debian's 6.12 and 7.3),
``lruvec->lrugen.folios[gen][type][zone]`` (``lists`` up to 6.2).  The list
holds no reference: the folio's owners do (page tables, the page cache, a
pin), and a folio its owner let go of while a reference taken on it was
never dropped stays on the LRU until its last put.  Each list head names
the folios at its two ends (``&folio->lru``, a word inside their struct
page).  A lruvec lives in each memory cgroup's per-node info
(``memcg->nodeinfo[nid]->lruvec``, kmalloc'd) and in each node
(``pgdat->__lruvec``, used without memory cgroups).
"""

from __future__ import annotations

import drgn
from drgn.helpers.linux.cgroup import css_for_each_descendant_pre
from drgn.helpers.linux.mmzone import for_each_online_pgdat

from vmcore_tools.core.walk import bounded, max_entries
from vmcore_tools.core.features import has_member, has_object


def lruvecs(prog: drgn.Program) -> list[drgn.Object]:
    """Every lruvec: each node's, and each memory cgroup's on each node."""
    pgdats = list(for_each_online_pgdat(prog))
    out = [pgdat.__lruvec for pgdat in pgdats] if has_member(prog, "struct pglist_data", "__lruvec") else []
    if not (has_object(prog, "root_mem_cgroup") and has_member(prog, "struct mem_cgroup", "nodeinfo")):
        return out
    root = prog["root_mem_cgroup"]
    if not root:
        return out
    nids = [pgdat.node_id.value_() for pgdat in pgdats]
    memcgs = css_for_each_descendant_pre(root.css.address_of_())
    for css in bounded(memcgs, "the memory cgroups (root_mem_cgroup)", max_entries(prog, "struct mem_cgroup")):
        memcg = drgn.container_of(css, "struct mem_cgroup", "css")
        for nid in nids:
            info = memcg.nodeinfo[nid].read_()
            if info:
                out.append(info.lruvec)
    return out


def lru_list_heads(prog: drgn.Program) -> list[tuple[int, int]]:
    """``[start, end)`` of the LRU list heads of every lruvec."""
    out = []
    for lruvec in lruvecs(prog):
        heads = [lruvec.lists]
        if has_member(prog, "struct lruvec", "lrugen"):
            for name in ("folios", "lists"):
                if lruvec.lrugen.type_.has_member(name):
                    heads.append(lruvec.lrugen.member_(name))
        out += [(h.address_, h.address_ + drgn.sizeof(h)) for h in heads]
    return out
