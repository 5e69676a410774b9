"""A guest shaped like a production host (issue 19): two NUMA nodes, a DIMM
hot-added on node 1, a virtio balloon inflated by 128 MB, 256 MB of legacy
persistent memory (``memmap=256M!896M``) and 128 MB more made device DAX
(``memmap=128M!384M``), a kernel loaded for kexec
(``kexec -l``) and two i40e ports in an active-backup bond, with the
i40e-leak guest's modules and ``vmct_hosts``, which keeps pages on node 1's
hot-added memory and loses two there.

Ground truth comes from the kernel, read independently of the detector:
the firmware's memory map (``e820_table_firmware``: hot-added memory is not
in it), the guest's ``/proc/kpageflags`` (balloon pages are ``PG_offline``)
and ``/proc/iomem`` (the pmem ranges), the kexec image's entry list walked
with drgn objects, and the test modules' truth records."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import drgn
import numpy as np
import pytest
from drgn.helpers.linux.mm import follow_pfn, follow_phys, for_each_vma, pfn_to_page, phys_to_virt
from drgn.helpers.linux.mmzone import for_each_online_pgdat
from drgn.helpers.linux.net import for_each_netdev
from drgn.helpers.linux.pid import for_each_task

from vmcore_tools import orphans
from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.evidence import local_netdevs
from vmcore_tools.kernel.virtqueues import virtqueues
from vmcore_tools.leaks.verdict import coverage, verdict

from ..conftest import KERNELS, lines, run_probe_in_guest, sample_core

pytestmark = pytest.mark.vm

#: include/uapi/linux/kernel-page-flags.h
KPF_OFFLINE = 23
#: arch/x86/include/asm/e820/types.h
E820_TYPE_RAM = 1
#: include/linux/kexec.h
IND_INDIRECTION, IND_DONE, IND_SOURCE = 2, 4, 8


@pytest.fixture(scope="module", params=lines(KERNELS, ci=("6.1",)))
def host(request):
    core = sample_core("hosts", request.param)
    return core, orphans(core.program())


def owned(core, kind: str) -> list[int]:
    return [o["pfn"] for o in core.manifest["owned"] if o["kind"] == kind]


def hot_added(prog, pfns: list[int]) -> list[int]:
    """Those of ``pfns`` outside the firmware's RAM ranges: memory hot-added
    after boot is not in ``e820_table_firmware``."""
    table = prog["e820_table_firmware"]
    ram = [(e.addr.value_(), e.addr.value_() + e.size.value_())
           for e in table.entries[:table.nr_entries.value_()] if e.type.value_() == E820_TYPE_RAM]
    return [p for p in pfns if not any(lo <= p << 12 < hi for lo, hi in ram)]


def test_the_guest_has_two_nodes_and_hot_added_memory(host):
    core, r = host
    prog = r.census.prog
    assert prog["node_states"][prog.constant("N_MEMORY")].bits[0].value_() & 0b11 == 0b11
    node1 = owned(core, "node1-held")
    assert len(node1) == 6
    assert hot_added(prog, node1), "no page of vmct_hosts lies in hot-added memory"


def test_exactly_the_planted_leaks_are_orphaned(host):
    core, r = host
    assert {o.pfn for o in r.orphans} == set(core.expected_orphans())
    assert {x["ring"] for x in core.manifest["planted_leaks"]} >= {"node1"}


def test_pages_kept_on_hot_added_memory_are_referenced(host):
    core, r = host
    referenced = {x.pfn for x in r.referenced}
    assert set(owned(core, "node1-held")) <= referenced


def test_a_hot_added_dimms_memmap_is_held_by_its_vmemmap_mapping(host):
    """The struct pages of the hot-added DIMM were allocated at hot-add time
    from the page allocator, in 2 MiB blocks that only a huge leaf of
    init_mm's vmemmap names: no page of such a block is orphaned, and the
    block is held by that mapping."""
    core, r = host
    c = r.census
    dimm = hot_added(c.prog, owned(core, "node1-held"))[0]
    struct_page = c.memmap.memmap + dimm * c.memmap.struct_size
    phys = follow_phys(c.prog["init_mm"].address_of_(), struct_page).value_()
    block = phys >> c.memmap.page_shift & ~511
    assert not {o.pfn for o in r.orphans} & set(range(block, block + 512))
    held = {x.pfn: x.references for x in r.referenced}
    assert any("mapped at" in ref for ref in held.get(block, [])), (block, held.get(block))


def test_balloon_pages_are_offline_not_orphaned(host):
    """Every page the balloon took (``PG_offline`` in the guest's
    kpageflags: ``balloon_page_insert()`` marks it so, and the hypervisor
    has it now) is of the census's offline class, none orphaned."""
    core, r = host
    flags = np.fromfile(core.path / "proc" / "kpageflags.bin", "<u8")
    offline = np.flatnonzero(flags >> np.uint64(KPF_OFFLINE) & np.uint64(1))
    assert offline.size >= (128 << 20) // 4096, offline.size
    assert not set(offline.tolist()) & {o.pfn for o in r.orphans}
    c = r.census
    assert set(offline.tolist()) <= set(c.pfns_of(PageClass.OFFLINE).tolist())


def kexec_entries(prog) -> tuple[set[int], set[int]]:
    """Source and indirection pages of ``kexec_image``, walked entry by
    entry as ``for_each_kimage_entry()`` does."""
    source, indirection = set(), set()
    ptr = prog["kexec_image"].head.address_of_()
    while True:
        entry = ptr[0].value_()
        if not entry or entry & IND_DONE:
            return source, indirection
        if entry & IND_INDIRECTION:
            indirection.add(entry >> 12)
            ptr = drgn.cast("unsigned long *", phys_to_virt(prog, entry & ~0xFFF))
            continue
        if entry & IND_SOURCE:
            source.add(entry >> 12)
        ptr += 1


def iomem_pmem(core) -> list[tuple[int, int]]:
    """PFN ranges ``[start, end)`` the guest's /proc/iomem calls persistent memory."""
    out = []
    for line in (core.path / "proc" / "iomem").read_text().splitlines():
        span, _, name = line.strip().partition(" : ")
        if name.startswith("Persistent Memory"):
            lo, hi = (int(x, 16) for x in span.split("-"))
            out.append((lo >> 12, (hi + 1) >> 12))
    return out


#: what the kernel calls a device DAX pagemap: MEMORY_DEVICE_DEVDAX, GENERIC from 5.12
DEVDAX_KINDS = ("devdax", "generic")


def test_pmem_pages_are_device_memory_not_ram(host):
    """The legacy pmem ranges have struct pages (``nd_pmem`` maps one with
    ``devm_memremap_pages()``: ZONE_DEVICE, MEMORY_DEVICE_FS_DAX, idle;
    ``dax_pmem`` the other, device DAX).  Every page of them, and no other,
    is DEVICE, found through the kernel's dev_pagemaps; none is an orphan;
    RAM (T and MemTotal) leaves them out; the verdict says so."""
    core, r = host
    c = r.census
    ranges = iomem_pmem(core)
    assert sum(hi - lo for lo, hi in ranges) == (256 + 128) << 8, ranges
    assert all(any(s <= lo and hi <= e for s, e in c.memmap.ranges) for lo, hi in ranges)
    device = np.zeros(c.classes.size, bool)
    for lo, hi in ranges:
        device[lo:hi] = True
    assert (c.classes[device] == PageClass.DEVICE).all()
    assert not (c.classes[~device] == PageClass.DEVICE).any()
    assert [(d.start, d.end) for d in c.device] == ranges
    assert [d.kind for d in c.device][1] == "fs_dax" and [d.kind for d in c.device][0] in DEVDAX_KINDS
    # RAM is what the kernel's zones have present (ZONE_DEVICE has none); the
    # census's T also holds the struct pages of the firmware's holes below 1 MB
    present = sum(z.present_pages.value_() for pgdat in for_each_online_pgdat(c.prog) for z in pgdat.node_zones)
    assert 0 <= c.decomposition()["T"] - present < 256, (c.decomposition()["T"], present)
    assert not any(lo <= o.pfn < hi for o in r.orphans for lo, hi in ranges)
    assert coverage(r)["device_pages"] == device.sum()
    assert "384.0 MB of device memory" in verdict(r)
    # a Debian kernel zeroes slab objects when it hands them out
    assert coverage(r)["slab_zeroed_on_alloc"] is True


def dax_mapped(prog, name: bytes) -> tuple[list[int], drgn.Object]:
    """The PFNs the workload's shared mapping of a file whose name matches
    the pattern ``name`` maps, from its page tables, and the file's
    address_space."""
    for task in for_each_task(prog):
        if not task.mm:
            continue
        for vma in for_each_vma(task.mm):
            f = vma.vm_file
            if f and re.fullmatch(name, f.f_path.dentry.d_name.name.string_()):
                pfns = [follow_pfn(task.mm, a).value_() for a in range(vma.vm_start, vma.vm_end, 4096)]
                return pfns, f.f_mapping
    raise AssertionError(f"no process maps a file named {name!r}")


def test_fsdax_pages_in_use_are_device_memory(host):
    """The workload maps a 16 MB file of an ext4 mounted with -o dax over
    the pmem and writes every page: DAX maps the persistent memory itself
    (each page associated with the file's mapping, referenced, in the
    process's page tables).  Those pages are still device memory: in the
    pmem range, class DEVICE, not RAM, never orphans."""
    core, r = host
    c = r.census
    pfns, mapping = dax_mapped(c.prog, rb"dax\.bin")
    assert len(pfns) == 16 << 8
    ranges = iomem_pmem(core)
    assert all(any(lo <= p < hi for lo, hi in ranges) for p in pfns)
    pages = [pfn_to_page(c.prog, p) for p in pfns]
    assert all(pg.mapping == mapping for pg in pages[::64])      # dax_associate_entry()
    assert all(pg._refcount.counter.value_() >= 1 for pg in pages[::64])
    assert (c.classes[np.array(pfns)] == PageClass.DEVICE).all()
    assert not set(pfns) & {o.pfn for o in r.orphans}


def test_device_dax_pages_in_use_are_device_memory(host):
    """The workload turns the pmem range on node 0 into device DAX as
    ``ndctl create-namespace -m devdax`` does (``--map=dev``: the range's
    own struct pages stored at its start, after the info block, the
    altmap), then maps 16 MB of /dev/daxN.M shared and writes every page.
    The memmap the census reads for that range is in the range itself;
    the mapped pages are in the process's page tables, class DEVICE, never
    orphans."""
    core, r = host
    c = r.census
    prog = c.prog
    (devdax,) = [d for d in c.device if d.kind in DEVDAX_KINDS]
    pfns, _ = dax_mapped(prog, rb"dax\d+\.\d+")         # the char device /dev/daxN.M
    assert len(pfns) == 16 << 8 and all(devdax.start <= p < devdax.end for p in pfns)
    assert (c.classes[np.array(pfns)] == PageClass.DEVICE).all()
    assert not set(pfns) & {o.pfn for o in r.orphans}
    for p in pfns[::512]:
        where = follow_phys(prog["init_mm"].address_of_(), pfn_to_page(prog, p).value_()).value_() >> 12
        assert devdax.start <= where < devdax.end, (p, where)


def test_a_loaded_kexec_images_pages_are_reserved(host):
    """The next kernel's segments (the guest's own vmlinuz and initramfs)
    sit in source pages that only the image's entry list names -- physical
    addresses with IND_* flags, which no reference rule reads.  They are
    still never candidates: ``kimage_alloc_pages()`` marks every page it
    allocates ``PG_reserved``, so the census counts them as reserved."""
    core, r = host
    source, indirection = kexec_entries(r.census.prog)
    assert len(source) > 1000 and indirection
    pages = np.array(sorted(source | indirection), np.int64)
    assert set(pages.tolist()) <= set(r.census.pfns_of(PageClass.RESERVED).tolist())
    assert not set(pages.tolist()) & {o.pfn for o in r.orphans}


def test_the_verdict_names_the_holders_without_a_pointer(host):
    """The coverage says which owner classes this core has: here the
    page->lru lists and chains of vmct_shapes and the huge vmemmap leaves of
    the hot-added memory among them."""
    core, r = host
    held = coverage(r)["held_through"]
    assert held["struct page"] >= 2 and held["page tables"] >= 2 and held["slab"] > held["run"]
    assert "held without a plain pointer: " in verdict(r) and "by kernel mappings" in verdict(r)


@pytest.mark.parametrize("kernel", lines(KERNELS, ci=()))
def test_live_the_planted_leaks_are_the_orphans(kernel):
    """The same host, live: the tool reads /proc/kcore inside the guest
    (live_probe.py, with its churn process) and finds exactly the planted
    leaks, the two on hot-added memory among them."""
    result = run_probe_in_guest(kernel, Path(__file__).with_name("live_probe.py"), "hosts")
    planted = {leak["pfn"] for leak in result["leaks"]}
    rings = Counter(leak["ring"].split("/")[0] for leak in result["leaks"])
    ports = sorted(r for r in rings if r.startswith("eth"))
    assert len(ports) == 2 and rings[ports[0]] == rings[ports[1]] > 0 and rings["node1"] == 2, rings
    assert {o["pfn"] for o in result["orphans"]} == planted, \
        [o for o in result["orphans"] if o["pfn"] not in planted]


def test_a_bonded_i40e_pair_is_named_by_its_own_devices(host):
    """The two i40e ports are slaves of bond0, which carries the first
    one's address: the frames in each port's leaked rx pages were received
    by that port, a device with a driver, and the suspects and the verdict
    name the ports, not the bond."""
    core, r = host
    prog = r.census.prog
    devs = {d.name.string_().decode(): d for d in for_each_netdev(prog)}
    ports = core.netdevs("i40e")
    assert "bond0" in devs and len(ports) == 2, sorted(devs)
    mac = lambda d: prog.read(d.dev_addr.value_(), 6)  # noqa: E731
    assert mac(devs["bond0"]) == mac(devs[ports[0]]) != mac(devs[ports[1]])
    assert all(devs[p].flags.value_() & prog["IFF_SLAVE"].value_() for p in ports)
    for port in ports:
        assert local_netdevs(prog)[mac(devs[port])] == (port, "i40e")
        assert any(s.netdev == port and s.driver == "i40e" for s in r.suspects), port
    assert f"i40e rx buffers of {ports[0]} and {ports[1]} (stale frames sent to them)" in verdict(r) or \
        f"i40e rx buffers of {ports[1]} and {ports[0]} (stale frames sent to them)" in verdict(r), verdict(r)


def test_a_virtqueue_claims_only_its_own_ring(host):
    """A split ring's avail and used rings end after their ``num`` entries
    and an event index (``vring_size()``), not a page after they start:
    ``used`` is only cache-line aligned, and on the 6.1 hosts core
    virtio-blk's ran to within a page of a tty driver's 16 KiB kmalloc
    (``uart_state``), which, claimed as ring, was never read -- and the
    console buffer it alone holds came out orphaned.  Every page a
    virtqueue claims lies in its ring's span: no compound page of another
    allocation."""
    _, r = host
    prog, a = r.census.prog, r.census.memmap
    for vq in virtqueues(prog):
        pages = np.array(sorted(vq.pages), np.int64)
        heads = a.heads_of(pages)
        compound = a.order_of(heads) > 0
        assert not compound.any(), (vq.name, pages[compound].tolist(), heads[compound].tolist())
