"""Evidence about a page: what its contents are, the stale frame it still
holds, and where a reference to it lives, in words.

Evidence is read from a page's bytes, so it costs a read per page.  The
orphan report takes it from a bounded sample of each group
(``orphans.SAMPLE``) and keeps exact counts from the vectorized pass only
(order, refcount, node): its cost does not grow with the number of orphans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import drgn
import numpy as np

from vmcore_tools.census.census import Census
from vmcore_tools.census.classes import PageClass
from vmcore_tools.mm.pageflags import page_flag_bits
from vmcore_tools.core.debuginfo import module_at
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.refs.references import Reference
from vmcore_tools.net.devices import all_netdevs, driver_name, netdev_label
from vmcore_tools.core.arrays import unique

#: rx buffer offsets tried when sniffing a page for a frame, besides those the
#: rings use: legacy rx (0), NET_IP_ALIGN (2), build_skb headroom on x86-64
#: (64, 192 + NET_IP_ALIGN), each in either half of the page (flipped buffers)
DEFAULT_RX_OFFSETS = (0, 2, 64, 66, 128, 192, 194, 256, 258)
ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "VLAN", 0x88A8: "QinQ",
              0x88CC: "LLDP", 0x8906: "FCoE", 0x88E5: "MACsec"}

#: what a page's contents can be, most telling first
CONTENT_KINDS = ("zero", "pattern", "frame", "text", "pointers", "random", "data")


@dataclass
class Frame:
    offset: int
    dst: str
    src: str
    ethertype: str
    netdev: str | None      # local net device whose address the frame was sent to
    driver: str | None

    @property
    def device(self) -> str | None:
        """The local device it was sent to, as ``device_label`` names it."""
        return device_label(self.netdev, self.driver) if self.netdev else None


def device_label(netdev: str, driver: str | None) -> str:
    """"eth2 (i40e)": a net device and the driver bound under it."""
    return f"{netdev} ({driver or 'unknown driver'})"


def local_netdevs(prog: drgn.Program) -> dict[bytes, tuple[str, str]]:
    """MAC address -> (net device, driver) for every net device in every
    namespace.

    Fact: a bond, bridge, VLAN or macvlan device carries the address of a
    device under it (a bond takes its first slave's), and only the
    physical device has a bound driver.  A frame in an rx buffer was
    received by the physical device, so where several devices share an
    address the one with a driver names it."""
    out: dict[bytes, tuple[str, str]] = {}
    for dev in all_netdevs(prog):
        if dev.addr_len.value_() != 6:
            continue
        mac = prog.read(dev.dev_addr.value_(), 6) if dev.dev_addr.type_.kind == drgn.TypeKind.POINTER \
            else bytes(dev.dev_addr.value_()[:6])
        parent = dev.dev.parent
        found = (netdev_label(dev), driver_name(parent) if parent else "")
        if mac not in out or (found[1] and not out[mac][1]):
            out[mac] = found
    return out


def rx_offsets(c: Census) -> list[int]:
    """Buffer offsets the rings use, plus the usual ones."""
    seen = set(DEFAULT_RX_OFFSETS)
    for r in c.rings.rings:
        if r.kind == "rx" and r.bias.size and (r.bias >= 0).any():
            seen.update(unique(r.offset).tolist())
    return sorted(seen)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def sniff_frame(data: bytes, offsets: list[int], netdevs: dict[bytes, tuple[str, str]]) -> Frame | None:
    """A stale received frame in a page's bytes ``data``: at an rx offset, in
    either half of the page (rx buffers are flipped between halves), a
    destination MAC, a unicast source MAC and a known ethertype.  A frame
    sent to a local net device wins over a broadcast or multicast one."""
    size = len(data)
    best = None
    for half in sorted({0, size // 2}):
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


def kernel_pointer(a: Memmap, words: np.ndarray) -> np.ndarray:
    """Which 64-bit words are kernel addresses.

    Fact: on x86-64 the direct map is the lowest of the kernel's regions
    (``page_offset_base``, randomized upward with KASLR); vmalloc, the
    memmap, modules and the kernel image all lie above it."""
    return words >= np.uint64(a.direct_map)


def contents_kind(a: Memmap, data: bytes, frame: Frame | None) -> str:
    """What a page holds, in one word (``CONTENT_KINDS``):

    * ``zero``: every byte is 0 -- the only contents that mean "never used"
      (``__GFP_ZERO`` pages look the same, and so does a page the buddy
      allocator never handed out since boot, which is zeroed by firmware);
    * ``pattern``: one byte value repeated (a poison or fill pattern);
    * ``frame``: a stale Ethernet frame at an rx offset (``sniff_frame``);
    * ``text``: mostly printable ASCII;
    * ``pointers``: at least a quarter of its 64-bit words are kernel
      addresses (a table, an object array, stale slab data);
    * ``random``: bytes spread evenly over all values (compressed or
      encrypted data, a random buffer);
    * ``data``: anything else."""
    buf = np.frombuffer(data, np.uint8)
    if not buf.any():
        return "zero"
    if (buf == buf[0]).all():
        return "pattern"
    if frame is not None:
        return "frame"
    used = buf[: int(np.flatnonzero(buf).max()) + 1]
    printable = ((used >= 0x20) & (used < 0x7F)) | (used == 0x0A) | (used == 0x09)
    if used.size >= 64 and printable.mean() > 0.9:
        return "text"
    words = np.frombuffer(data[: len(data) // 8 * 8], "<u8")
    if kernel_pointer(a, words).mean() >= 0.25:
        return "pointers"
    counts = np.bincount(buf, minlength=256)
    p = counts[counts > 0] / buf.size
    if -(p * np.log2(p)).sum() > 7.5:
        return "random"
    return "data"


def contents_text(kinds: dict[str, int], sampled: int) -> str:
    """"all zero in 64 of 64 sampled: never used" or "written (text 3, data
    2 of 5 sampled)": the contents of a group, said plainly."""
    if not sampled:
        return "contents not read"
    if kinds.get("zero", 0) == sampled:
        return f"all zero in {sampled} of {sampled} sampled: allocated and never used"
    parts = ", ".join(f"{k} {kinds[k]}" for k in CONTENT_KINDS if kinds.get(k))
    return f"written ({parts} of {sampled} sampled)"


#: what a page's flags say it was before its owner let it go (``page_history``)
HISTORY_KINDS = ("file page cache", "shmem page cache", "anonymous memory", "page_pool page")
#: flags a page-cache page carries while cached, kept until the page is freed
CACHE_FLAGS = ("uptodate", "lru", "dirty", "active", "referenced", "mlocked")
#: include/linux/mm.h: each FOLL_PIN pin of a page adds this to its refcount
GUP_PIN_COUNTING_BIAS = 1024


def page_history(c: Census, pfns: np.ndarray) -> dict[int, str]:
    """For each of ``pfns`` (orphans: allocated, unreferenced) whose flags
    or class say what it was before its owner let it go, what
    (``HISTORY_KINDS``).

    Fact: a page-cache page gets ``PG_uptodate`` once read or written and
    ``PG_lru`` on the LRU (``PG_swapbacked`` for shmem/tmpfs); truncation
    or eviction (``filemap_remove_folio()``) clears ``mapping`` and drops the
    cache's references, and the flags go only when the page is freed
    (``free_pages_prepare()``).  So an allocated page with those flags and
    no mapping was released by its owner while somebody else kept a
    reference: a ``get_page()`` without its ``put_page()`` (splice,
    io_uring, a driver), or a FOLL_PIN pin never unpinned.  Neither the
    LRU nor the cache holds a reference then: every one is the leak's.

    An anonymous page keeps its ``anon_vma`` in ``mapping`` until it is
    freed; one that is a candidate is mapped nowhere
    (``classify.anon_mapped_nowhere``): its process unmapped it (exit,
    munmap) while somebody kept a reference, the shape of a GUP reference
    or pin never released.

    A page_pool page keeps its pool's mark (``pp_magic``) until the pool
    frees it; one that is a candidate was handed out by its pool and never
    given back (``orphans.candidate_heads``)."""
    bits = page_flag_bits(c.prog)
    cached = [bits[n] for n in CACHE_FLAGS if n in bits]
    w = c.memmap.read(pfns)
    flags = w.flags
    was_cached = np.zeros(flags.size, bool)
    for bit in cached:
        was_cached |= (flags >> np.uint64(bit) & np.uint64(1)).astype(bool)
    was_cached &= w.mapping == 0
    shmem = (flags >> np.uint64(bits["swapbacked"]) & np.uint64(1)).astype(bool) if "swapbacked" in bits \
        else np.zeros(flags.size, bool)
    kind = np.where(shmem, 1, 0)
    anon = (w.mapping & np.uint64(3)) == np.uint64(1)
    kind[anon] = 2
    pool = c.classes[w.pfn] == PageClass.PAGE_POOL
    kind[pool] = 3
    keep = was_cached | anon | pool
    return {int(p): HISTORY_KINDS[int(k)] for p, k in zip(w.pfn[keep], kind[keep])}


def history_text(kind: str, refcount_min: int, refcount_max: int, pools: dict[str, int] | None = None) -> str:
    """"released by its owner, still referenced: shmem page cache until
    truncation; 1 reference kept" -- and the pins, where the refcount holds
    FOLL_PIN's bias; for page_pool pages, whom their pools serve (``pools``:
    owner -> sampled pages, ``rings.page_pool.pool_owner``)."""
    pins = refcount_min // GUP_PIN_COUNTING_BIAS
    refs = refcount_min % GUP_PIN_COUNTING_BIAS
    same = refcount_min == refcount_max
    if pins and same:
        kept = f"pinned: {pins} FOLL_PIN pin{'s' if pins > 1 else ''} ({GUP_PIN_COUNTING_BIAS} each) and " \
               f"{refs} reference{'s' if refs != 1 else ''} kept"
    elif same:
        kept = f"{refs} reference{'s' if refs != 1 else ''} kept"
    else:
        kept = f"{refcount_min}-{refcount_max} references kept"
    if kind == "page_pool page":
        named = [o for o in sorted(pools or {}, key=lambda o: -pools[o]) if o]
        source = ("a page_pool" if not named else f"a page_pool of {named[0]}" if len(pools) == 1
                  else "page_pools of " + ", ".join(f"{o} ({pools[o]} sampled)" for o in named))
        return (f"taken from {source} and never given back: in flight, held by nobody (the pool's mark "
                f"kept); {kept}")
    if kind == "anonymous memory":
        return (f"released by its owner, still referenced: {kind} of a process that unmapped it "
                f"(exit or munmap; anon_vma kept, mapped nowhere); {kept}")
    return (f"released by its owner, still referenced: {kind} until truncation or eviction "
            f"(flags of page cache, mapping gone); {kept}")


@dataclass
class PageSample:
    """The evidence read from one page's bytes."""

    frame: Frame | None
    contents: str


class Sniffer:
    """Reads a page and returns its evidence; built once per report (the
    local MAC addresses and the rx offsets)."""

    def __init__(self, c: Census):
        self.prog = c.prog
        self.a = c.memmap
        self.netdevs = local_netdevs(c.prog)
        self.offsets = rx_offsets(c)

    def __call__(self, pfn: int, order: int) -> PageSample | None:
        """Evidence of the allocation at ``pfn``; None if it cannot be read."""
        a = self.a
        try:
            data = self.prog.read(a.virt_of_pfn(pfn), (1 << a.page_shift) << order)
        except drgn.FaultError:
            return None
        frame = sniff_frame(data, self.offsets, self.netdevs)
        return PageSample(frame, contents_kind(a, data, frame))


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
            # modulo 2**64, as per_cpu_ptr() adds it (refscan.scan_percpu_first_chunk)
            offset = (ref.address - prog["__per_cpu_offset"][cpu].value_()) & 0xFFFF_FFFF_FFFF_FFFF
            try:
                sym = prog.symbol(offset)
                return f"per-cpu {sym.name}+{offset - sym.address:#x} of cpu {cpu}"
            except LookupError:
                return f"per-cpu area of cpu {cpu} +{offset:#x}"
        if ref.region == "referenced page":
            return (f"page pfn {a.pfn_of_virt(ref.address)} (unattributed, itself referenced) "
                    f"+{ref.address & ((1 << a.page_shift) - 1):#x}")
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


def node_of(c: Census) -> Callable[[np.ndarray], np.ndarray]:
    """PFNs -> NUMA node of the zone that spans each (-1 where none)."""
    spans = sorted((z.start_pfn, z.end_pfn, z.node) for z in c.zones)
    starts = np.array([s for s, _, _ in spans], np.int64)
    ends = np.array([e for _, e, _ in spans], np.int64)
    nodes = np.array([n for _, _, n in spans], np.int64)

    def node(pfns: np.ndarray) -> np.ndarray:
        i = np.searchsorted(starts, pfns, side="right") - 1
        ok = (i >= 0) & (pfns < ends[np.maximum(i, 0)]) if starts.size else np.zeros(pfns.size, bool)
        return np.where(ok, nodes[np.maximum(i, 0)] if starts.size else -1, -1)
    return node
