"""Orphaned pages: allocated, owned by nobody, referenced from nowhere.

A *candidate* is a page the census left in "unattributed" (no page-type,
flag, list, vmap area or ring holds it), counted once per allocation: an
order-0 page or the head of a compound page.  The conservative reference
scan (``refscan.py``) then splits the candidates into

* **orphaned**: no word of live kernel memory points at the page -- what a
  page-allocator leak such as the i40e rx-buffer leak leaves behind;
* **unattributed but referenced**: someone holds it (a large kmalloc, a
  driver's DMA ring, a hash table), and we say where.

Orphans get evidence -- order, refcount (a bias-like count of thousands to
65535 is the signature of Duyck-style rx page recycling), NUMA node, the
rings that use pages of that order, a stale Ethernet frame at a known rx
offset matched to a local net device, and, when the kernel keeps page_owner
records (``page_owner=on``), the allocating task and stack -- and are
grouped into suspects.

    >>> from vmcore_tools import orphans
    >>> r = orphans(prog)
    >>> for s in r.suspects: print(s.label)
    28 order-0/1 pages ... frames addressed to eth2 (i40e)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import drgn
import numpy as np
from drgn.helpers.linux.net import for_each_net, for_each_netdev

from .census import Census, census as run_census
from .debuginfo import module_at
from .classify import PageClass
from .page_owner import PageOwner
from .pages import Memmap
from .refscan import Reference, ScanResult, scan_references
from .rings.common import driver_name, netdev_label

#: refcounts from here up look like an rx ring's pagecnt_bias (USHRT_MAX-based)
BIAS_LIKE = 1024
#: rx buffer offsets tried when sniffing a page for a frame, besides those the
#: rings use: legacy rx (0), NET_IP_ALIGN (2), build_skb headroom on x86-64
#: (64, 192 + NET_IP_ALIGN), each in either half of the page (flipped buffers)
DEFAULT_RX_OFFSETS = (0, 2, 64, 66, 128, 192, 194, 256, 258)
ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "VLAN", 0x88A8: "QinQ",
              0x88CC: "LLDP", 0x8906: "FCoE", 0x88E5: "MACsec"}


@dataclass
class Frame:
    offset: int
    dst: str
    src: str
    ethertype: str
    netdev: str | None      # local net device whose address the frame was sent to
    driver: str | None


@dataclass
class PageEvidence:
    pfn: int
    order: int
    refcount: int
    node: int
    bias_like: bool
    frame: Frame | None = None
    references: list[str] = field(default_factory=list)   # where it is referenced from
    suspect: int = -1
    page_owner: PageOwner | None = None   # who allocated it (page_owner=on kernels)

    @property
    def pages(self) -> int:
        return 1 << self.order


@dataclass
class Suspect:
    id: int
    label: str
    pages: int
    allocations: int
    orders: list[int]
    refcount_min: int
    refcount_max: int
    netdev: str | None
    driver: str | None
    rings_using_order: list[str]
    alloc_site: str | None = None     # page_owner: the function that allocated them


@dataclass
class OrphanReport:
    census: Census
    scan: ScanResult
    orphans: list[PageEvidence]
    referenced: list[PageEvidence]
    suspects: list[Suspect]
    seconds: float
    problems: list[str]
    page_owner: str = "absent"      # page_owner_state(): on, off, absent, unsupported

    @property
    def orphaned_pages(self) -> int:
        return sum(o.pages for o in self.orphans)

    def to_json(self) -> dict:
        c = self.census
        return {
            "schema": "vmcore-tools/orphans/1",
            "release": c.prog["init_uts_ns"].name.release.string_().decode(),
            "page_size": 1 << c.memmap.page_shift,
            "candidates": len(self.orphans) + len(self.referenced),
            "orphaned_pages": self.orphaned_pages,
            "referenced_pages": sum(r.pages for r in self.referenced),
            "suspects": [asdict(s) for s in self.suspects],
            "orphans": [asdict(o) for o in self.orphans],
            "referenced": [asdict(r) for r in self.referenced],
            "scan": {"bytes": self.scan.bytes_scanned, "seconds": round(self.scan.seconds, 3),
                     "gb_per_s": round(self.scan.gb_per_s, 3)},
            "seconds": round(self.seconds, 3),
            "verdict": verdict(self),
            "page_owner": self.page_owner,
            "problems": self.problems,
        }


def candidate_heads(c: Census) -> np.ndarray:
    """Unattributed order-0 pages and compound heads: one per allocation."""
    un = c.pfns_of(PageClass.UNATTRIBUTED)
    return un[c.memmap.heads_of(un) == un]


def orphans(prog: drgn.Program, census: Census | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> OrphanReport:
    """Census (unless given), reference scan, evidence and suspects."""
    t0 = time.monotonic()
    c = census if census is not None else run_census(prog, progress)
    a = c.memmap
    heads = candidate_heads(c)
    scan = scan_references(c, heads, progress)
    problems = list(scan.problems)
    references = dict(scan.references)
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        heads, changed = _confirm_live(c, heads, references, progress)
        if changed:
            problems.append(f"{changed} unreferenced allocation(s) changed owner or size while read (live): "
                            "not reported")
    nodes = _node_of(c)
    netdevs = local_netdevs(prog)
    offsets = rx_offsets(c)
    where = Describer(c)
    orphaned, referenced = [], []
    refcounts = c.refcounts(heads).tolist()
    orders = a.order_of(heads).tolist()
    for pfn, refcount, order in zip(heads.tolist(), refcounts, orders):
        ev = PageEvidence(pfn, order, refcount, nodes(pfn), refcount >= BIAS_LIKE)
        refs = references.get(pfn)
        if refs:
            ev.references = [where(r) for r in refs]
            referenced.append(ev)
        else:
            ev.frame = sniff_frame(prog, a, pfn, offsets, netdevs)
            orphaned.append(ev)
    referenced.sort(key=lambda r: (-r.pages, r.pfn))
    if c.page_owners is not None and orphaned:
        records = c.page_owners.lookup(np.array([o.pfn for o in orphaned], np.int64))
        for o in orphaned:
            o.page_owner = records.get(o.pfn)
    suspects = group_suspects(orphaned, c)
    return OrphanReport(c, scan, orphaned, referenced, suspects, time.monotonic() - t0, problems,
                        c.page_owner_state)


def _confirm_live(c: Census, heads: np.ndarray, references: dict[int, list[Reference]],
                  progress: Callable[[str, int, int], None] | None) -> tuple[np.ndarray, int]:
    """A running kernel changes while it is read: a page allocated after the
    memmap was read can be stored into memory the scan took for free, and
    look orphaned.  A leaked page stays put, so a second census and scan
    must agree: an orphan of the first pass that the second finds referenced
    gets the second pass's references; one that is no longer an unattributed
    allocation of the same order is dropped.  Returns the heads kept and how
    many were dropped."""
    again = run_census(c.prog, progress)
    heads2 = candidate_heads(again)
    scan2 = scan_references(again, heads2, progress)
    unreferenced = np.array([h for h in heads.tolist() if h not in references], np.int64)
    same = np.isin(unreferenced, heads2) & (again.memmap.order_of(unreferenced) == c.memmap.order_of(unreferenced))
    for h in unreferenced[same].tolist():
        if h in scan2.references:
            references[h] = scan2.references[h]
    return np.setdiff1d(heads, unreferenced[~same]), int((~same).sum())


def verdict(r: OrphanReport) -> str:
    """The answer in one plain sentence or two."""
    c = r.census
    ps = 1 << c.memmap.page_shift
    t = c.totals()
    slab_share = t["slab"] / max(c.total_pages, 1)
    if not r.orphans:
        return (f"No page-allocator leak: every unattributed page ({sum(x.pages for x in r.referenced)} "
                f"pages) is referenced from live kernel memory. Slab holds {_size(t['slab'] * ps)}.")
    named = [s for s in r.suspects if s.netdev]
    if named:
        dev = max({(s.netdev, s.driver) for s in named},
                  key=lambda d: sum(s.pages for s in named if (s.netdev, s.driver) == d))
        pages = sum(s.pages for s in named if (s.netdev, s.driver) == dev)
        who = (f"{100 * pages / r.orphaned_pages:.0f}% look like {dev[1]} rx buffers of {dev[0]} "
               f"(stale frames sent to it)")
    else:
        who = "no device could be named from their contents"
    orders = "/".join(str(o) for o in sorted({o.order for o in r.orphans}))
    return (f"{_size(r.orphaned_pages * ps)} in {len(r.orphans)} order-{orders} allocations leaked from "
            f"the page allocator (orphaned: nothing references them); {who}. Slab is "
            f"{'not ' if slab_share < 0.5 else ''}the bulk of kernel memory ({_size(t['slab'] * ps)}).")


def _size(nbytes: int) -> str:
    for unit, div in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if nbytes >= div:
            return f"{nbytes / div:.1f} {unit}"
    return f"{nbytes} B"


# --- evidence ------------------------------------------------------------------

def _node_of(c: Census) -> Callable[[int], int]:
    spans = [(z.start_pfn, z.end_pfn, z.node) for z in c.zones]

    def node(pfn: int) -> int:
        return next((n for lo, hi, n in spans if lo <= pfn < hi), -1)
    return node


def local_netdevs(prog: drgn.Program) -> dict[bytes, tuple[str, str]]:
    """MAC address -> (net device, driver) for every net device in every namespace."""
    out = {}
    for net in for_each_net(prog):
        for dev in for_each_netdev(net):
            length = dev.addr_len.value_()
            if length != 6:
                continue
            mac = prog.read(dev.dev_addr.value_(), 6) if dev.dev_addr.type_.kind == drgn.TypeKind.POINTER \
                else bytes(dev.dev_addr.value_()[:6])
            parent = dev.dev.parent
            out[mac] = (netdev_label(dev), driver_name(parent) if parent else "")
    return out


def rx_offsets(c: Census) -> list[int]:
    """Buffer offsets the rings use, plus the usual ones."""
    seen = set(DEFAULT_RX_OFFSETS)
    for r in c.rings.rings:
        if r.kind == "rx" and r.bias.size and (r.bias >= 0).any():
            seen.update(np.unique(r.offset).tolist())
    return sorted(seen)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def sniff_frame(prog: drgn.Program, a: Memmap, pfn: int, offsets: list[int],
                netdevs: dict[bytes, tuple[str, str]]) -> Frame | None:
    """A stale received frame in the page: at an rx offset, in either half of
    the page (rx buffers are flipped between halves), a destination MAC, a
    unicast source MAC and a known ethertype.  A frame sent to a local net
    device wins over a broadcast or multicast one."""
    size = (1 << a.page_shift) << a.order_of(pfn)
    try:
        data = prog.read(a.virt_of_pfn(pfn), size)
    except drgn.FaultError:
        return None
    best = None
    halves = sorted({0, size // 2})
    for half in halves:
        for off in offsets:
            o = half + (off % (size // 2))
            if o + 14 > size:
                continue
            dst, src = data[o:o + 6], data[o + 6:o + 12]
            etype = int.from_bytes(data[o + 12:o + 14], "big")
            if etype not in ETHERTYPES or src[0] & 1 or src == bytes(6):
                continue
            local = netdevs.get(dst)
            if local is None and not dst[0] & 1:
                continue        # unicast to nobody we know: not convincing
            frame = Frame(o, _mac(dst), _mac(src), ETHERTYPES[etype],
                          local[0] if local else None, local[1] if local else None)
            if local:
                return frame
            best = best or frame
    return best


class Describer:
    """Where a reference lives, in words a kernel engineer can look up."""

    def __init__(self, c: Census):
        self.prog = c.prog
        self.a = c.memmap
        self.vmap = c.vmap

    def __call__(self, ref: Reference) -> str:
        prog, a = self.prog, self.a
        if ref.where:
            return ref.where
        if ref.region == "vmalloc":
            return self.vmalloc(ref.address)
        sym = self.symbol(ref.address)
        if sym:
            return f"{ref.region} {sym}"
        if ref.region.startswith("per-cpu cpu"):
            cpu = int(ref.region.removeprefix("per-cpu cpu"))
            offset = ref.address - prog["__per_cpu_offset"][cpu].value_()
            try:
                sym = prog.symbol(offset)
                return f"per-cpu {sym.name}+{offset - sym.address:#x} of cpu {cpu}"
            except LookupError:
                return f"per-cpu area of cpu {cpu} +{offset:#x}"
        if ref.region == "referenced page":
            return f"page pfn {a.pfn_of_virt(ref.address)} (unattributed, itself referenced) +{ref.address & 0xfff:#x}"
        return f"{ref.region} {ref.address:#x}"

    def vmalloc(self, direct_addr: int) -> str:
        """The symbol at the vmalloc address of a word (module data and bss),
        else the vmap area and its caller."""
        pfn = self.a.pfn_of_virt(direct_addr)
        area = self.vmap.where(pfn)
        if area is None:
            return f"vmalloc page pfn {pfn}"
        base, caller = area
        addr = base + (direct_addr & ((1 << self.a.page_shift) - 1))
        where = self.symbol(addr) or f"{addr:#x} (area of {caller or 'unknown caller'})"
        return f"vmalloc {where}"

    def symbol(self, addr: int) -> str:
        """``module:symbol+offset`` (or ``symbol+offset`` in vmlinux); "" if none."""
        try:
            sym = self.prog.symbol(addr)
        except LookupError:
            return ""
        module = module_at(self.prog, addr)
        return f"{module + ':' if module else ''}{sym.name}+{addr - sym.address:#x}"


# --- suspects ------------------------------------------------------------------

def group_suspects(orphans: list[PageEvidence], c: Census) -> list[Suspect]:
    """Group orphans by order, refcount pattern, the device their frames
    were sent to and (with page_owner) the function that allocated them,
    largest group first; each orphan gets its group's id."""
    ring_orders = c.rings.orders_by_driver(c.memmap)
    groups: dict[tuple, list[PageEvidence]] = {}
    for o in orphans:
        pattern = "bias" if o.bias_like else ("fresh" if o.refcount == 1 else "other")
        dev = (o.frame.netdev, o.frame.driver) if o.frame and o.frame.netdev else (None, None)
        site = o.page_owner.alloc_site if o.page_owner else None
        groups.setdefault((o.order, pattern, dev, site), []).append(o)
    suspects = []
    ordered = sorted(groups.items(), key=lambda kv: -sum(o.pages for o in kv[1]))
    for sid, ((_, pattern, (netdev, driver), site), members) in enumerate(ordered):
        for o in members:
            o.suspect = sid
        orders = sorted({o.order for o in members})
        refs = [o.refcount for o in members]
        pages = sum(o.pages for o in members)
        rings = sorted({r for order in orders for r in ring_orders.get(order, [])})
        label = _label(pattern, members, orders, pages, netdev, driver, rings)
        if site:
            label += f"; allocated by {site}"
        suspects.append(Suspect(sid, label, pages, len(members), orders, min(refs), max(refs),
                                netdev, driver, rings, site))
    return suspects


def _label(pattern: str, members: list[PageEvidence], orders: list[int], pages: int,
           netdev: str | None, driver: str | None, rings: list[str]) -> str:
    order_txt = "/".join(str(o) for o in orders)
    lo, hi = min(o.refcount for o in members), max(o.refcount for o in members)
    refcount = f"refcount {lo}" if lo == hi else f"refcount {lo}-{hi}"
    what = {
        "bias": f"{refcount}, bias-like: an rx ring's pagecnt_bias was lost with them",
        "fresh": "refcount 1: allocated and never used",
        "other": refcount,
    }[pattern]
    text = f"{len(members)} order-{order_txt} allocations ({pages} pages), {what}"
    if netdev:
        text += f"; stale frames addressed to {netdev} ({driver or 'unknown driver'})"
    elif rings:
        text += f"; rings using order-{order_txt} pages: {', '.join(rings)}"
    return text
