"""Pages an skb holds: the page of its head buffer and its paged frags."""

from __future__ import annotations

import drgn
from drgn.helpers.linux.net import skb_shinfo

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
