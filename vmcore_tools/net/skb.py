"""Pages an skb holds: the page of its head buffer and its paged frags."""

from __future__ import annotations

import drgn
from drgn.helpers.linux.net import skb_shinfo

from vmcore_tools.core.features import has_object
from vmcore_tools.mm.memmap import Memmap


def skb_pfns(prog: drgn.Program, a: Memmap, skb: drgn.Object) -> list[int]:
    """PFNs of ``skb->head`` and of every ``skb_shinfo(skb)->frags[]`` page.

    Fact: a frag is a ``bio_vec`` (``bv_page``) up to 6.5 and a ``skb_frag``
    whose ``netmem`` is a ``struct page *`` when its low bit is clear (6.8+);
    the head is a direct-map address (kmalloc or page_frag memory).
    """
    out = []
    head = a.pfn_of_virt(skb.head.value_())
    if head >= 0:
        out.append(head)
    shinfo = skb_shinfo(skb)
    for i in range(min(shinfo.nr_frags.value_(), len(shinfo.frags))):
        frag = shinfo.frags[i]
        if frag.type_.has_member("bv_page"):
            page = frag.bv_page.value_()
        elif frag.type_.has_member("netmem"):
            page = frag.netmem.value_()
            if page & 1:        # a net_iov (device memory), not a page
                continue
        else:
            page = frag.page.p.value_()
        pfn = a.pfn_of_page_ptr(page)
        if pfn >= 0:
            out.append(pfn)
    return out



def _skb_caches(prog: drgn.Program) -> list[tuple[drgn.Object, int]]:
    """The kmem_caches of skbs, each with the offset in its object of the
    skb in use there: ``skbuff_head_cache`` (a ``struct sk_buff``) and
    ``skbuff_fclone_cache`` (``struct sk_buff_fclones``: ``skb1``; ``skb2``
    is in use only once cloned, and keeps a stale head until then), globals
    up to 6.8, in ``net_hotdata`` from 6.9."""
    fclone = drgn.offsetof(prog.type("struct sk_buff_fclones"), "skb1")
    try:
        hot = prog["net_hotdata"]
        return [(hot.skbuff_cache, 0), (hot.skbuff_fclone_cache, fclone)]
    except KeyError:
        pass
    return [(prog[name], at) for name, at in (("skbuff_head_cache", 0), ("skbuff_cache", 0),
                                             ("skbuff_fclone_cache", fclone)) if has_object(prog, name)]


def skb_head_words(prog: drgn.Program) -> dict[str, int]:
    """The skb caches by name, each with the offset in one of its objects
    of the ``head`` pointer of the skb in use there.

    Fact: an skb gives its head back by itself -- ``skb_free_head()``
    calls ``page_frag_free()`` (a put on the head's own page or compound
    page) or ``kfree()`` -- so a page an skb's ``head`` points to the start
    of is an allocation of its own, never the front of a longer run.  A
    cache SLUB merged with another (``refcount`` > 1: the alias count)
    holds other objects of the same size too, whose words at that offset
    mean something else: it is left out."""
    out: dict[str, int] = {}
    head = drgn.offsetof(prog.type("struct sk_buff"), "head")
    for cache, at in _skb_caches(prog):
        try:
            if not cache or cache.refcount.value_() != 1:
                continue
            out[cache.name.string_().decode(errors="replace")] = at + head
        except drgn.FaultError:
            continue
    return out
