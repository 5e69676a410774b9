"""Rings and orphaned pages on real kernels, against each core's planted truth.

Ground truth: fake_i40e logs every page it loses ("leaked pfn=..."), and
vmct_workload logs the large kmallocs and page_frag pages it holds (decoys).
Recall: every logged leak is reported orphaned.  Precision: nothing else is
-- not the rings' live slots, the virtio-net, e1000e and igb rings, page_frag
caches, large kmalloc, nor anything the workload allocates.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.net import netdev_get_by_name

from vmcore_tools import orphans
from vmcore_tools.leaks.verdict import coverage, verdict
from vmcore_tools.census.classes import PageClass
from vmcore_tools.core.features import has_member, has_object
from vmcore_tools.net.skb import skb_pfns
from vmcore_tools.refs.references import ALLOCATION_RUN
from vmcore_tools.refs.registry import OWNERS, ROOTS

from ..conftest import cli_json, run_cli, sample_core

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def leak_report(leak_core):
    return leak_core, orphans(leak_core.program())


def orphan_pfns(report) -> set[int]:
    return {o.pfn for o in report.orphans}


def test_every_planted_leak_is_orphaned(leak_report):
    core, r = leak_report
    by_pfn = {o.pfn: o for o in r.orphans}
    leaks = core.manifest["planted_leaks"]
    assert {l["order"] for l in leaks} == {0, 1}
    assert {l["refcount"] == 1 for l in leaks} == {True, False}, "both refcount patterns planted"
    for leak in core.expected_orphans().values():
        o = by_pfn.get(leak["pfn"])
        assert o is not None, leak
        assert (o.order, o.refcount) == (leak["order"], leak["refcount"]), (o, leak)


def test_no_false_orphans(leak_report):
    """Exactly the planted pages are orphaned: the unattributed pages that
    are not leaks are all found referenced somewhere."""
    core, r = leak_report
    assert orphan_pfns(r) == set(core.expected_orphans())
    assert not r.problems


def test_decoys_are_not_orphans(leak_report):
    """Large kmalloc and page_frag pages look like leaks by their flags; the
    scan finds them referenced (from vmct_workload's bss) or a walker owns them."""
    core, r = leak_report
    referenced = {x.pfn: x for x in r.referenced}
    for d in core.manifest["decoys"]:
        assert d["pfn"] not in orphan_pfns(r), d
        cls = r.census.class_of(d["pfn"])
        if d["kind"] == "exact_run":
            continue            # test_heap_held_exact_run_and_the_leak_after_a_single
        if cls == PageClass.UNATTRIBUTED:
            assert any("vmct_workload" in w or "slab" in w for w in referenced[d["pfn"]].references), \
                (d, referenced[d["pfn"]])
        else:
            assert cls in (PageClass.PAGE_FRAG, PageClass.LARGE_KMALLOC), (d, cls)


def test_heap_held_exact_run_and_the_leak_after_a_single(leak_report):
    """Both sides of the run rule's ambiguity, planted by vmct_workload.  Its
    three-page ``alloc_pages_exact()`` buffer is held from a kmalloc'd
    object by its start only: the two pages after it are the run's.  Its
    split order-1 block is held the same way, but its second page is lost:
    one unreferenced page after a heap-held start is reported orphaned."""
    core, r = leak_report
    a = r.census.memmap
    referenced = {x.pfn: x for x in r.referenced}
    inferred = {x.pfn: x for x in r.held_by_inference}
    run = sorted(d["pfn"] for d in core.manifest["decoys"] if d["kind"] == "exact_run")
    assert len(run) == 3 and run == list(range(run[0], run[0] + 3)), run
    assert (a.order_of(np.array(run)) == 0).all() and (r.census.refcounts(np.array(run)) == 1).all()
    assert any(w.startswith("slab kmalloc") for w in referenced[run[0]].references), referenced[run[0]]
    for pfn in run[1:]:     # held by the rule alone: in the inferred tier, not among the held
        assert pfn not in referenced and r.inferred_rules[pfn] == ALLOCATION_RUN
        assert inferred[pfn].references == [f"in an alloc_pages_exact() run starting at pfn {run[0]}"]
    lost = [l for l in core.manifest["planted_leaks"] if l["ring"] == "-"]
    assert len(lost) == 1 and (lost[0]["order"], lost[0]["refcount"]) == (0, 1), lost
    held = lost[0]["pfn"] - 1
    assert held & 1 == 0 and held in referenced, "the page before it is referenced and heads a 2-page block"
    assert any(w.startswith("slab kmalloc") for w in referenced[held].references), referenced[held]
    assert lost[0]["pfn"] in orphan_pfns(r)


def test_a_page_an_skb_heads_starts_no_run(leak_report):
    """An skb gives its head back alone (``skb_free_head()``): a page whose
    start an allocated skb's ``head`` points to is an allocation of its
    own, and the unreferenced pages the allocator handed out after it --
    a page lost right after the network stack took one, as on the 5.10
    core's shapes -- are no tail of it.  The skbs are found here by drgn's
    own walk of ``skbuff_head_cache``."""
    from drgn.helpers.linux.slab import find_slab_cache, slab_cache_for_each_allocated_object
    core, r = leak_report
    prog, a = r.census.prog, r.census.memmap
    cache = find_slab_cache(prog, "skbuff_head_cache")
    heads = {a.pfn_of_virt(skb.head.value_())
             for skb in slab_cache_for_each_allocated_object(cache, "struct sk_buff")
             if skb.head.value_() and skb.head.value_() % a.page_size == 0}
    assert heads, "no skb heads a whole page on this core: nothing for the rule to decide"
    starts = {ref.source for refs in r.references.values() for ref in refs if ref.rule == ALLOCATION_RUN}
    assert not heads & starts, sorted(heads & starts)


def test_suspects_name_the_i40e_device(leak_report):
    core, r = leak_report
    bias = [s for s in r.suspects if s.refcount_min > 1000]
    assert bias and all(s.netdev == "eth2" and s.driver == "i40e" for s in bias), r.suspects
    assert {o for s in bias for o in s.orders} == {0, 1}
    assert "eth2 (i40e)" in r.suspects[0].label
    leaked_pages = sum(1 << l["order"] for l in core.expected_orphans().values())
    assert sum(s.pages for s in r.suspects) == leaked_pages


def test_i40e_rings_by_both_routes(leak_report):
    """eth2's two rings come from the net device route; the Flow Director
    VSI has no net device, so only the PCI route (pf->vsi[]) reaches it."""
    core, r = leak_report
    rings = {(x.driver, x.device, x.queue): x for x in r.census.rings.rings}
    eth2 = [x for x in r.census.rings.rings if x.driver == "i40e" and x.device == "eth2" and x.kind == "rx"]
    fdir = [x for x in rings.values() if x.driver == "i40e" and "vsi1" in x.device]
    xdp = [x for x in r.census.rings.rings if x.driver == "i40e" and x.kind == "xdp-tx"]
    assert len(eth2) == 2 and len(fdir) == 1
    assert [(x.device, x.queue) for x in xdp] == [("eth2", 0)], "vsi->xdp_rings, between tx and rx rings"
    c = r.census
    for ring in eth2 + fdir:
        assert 0 < ring.populated <= ring.count
        # the ring's own references never exceed the page's
        assert (c.refcounts(ring.pfn) >= ring.bias).all(), ring.name
        assert set(c.memmap.order_of(ring.pfn).tolist()) == {1 if ring.indices["rx_buf_len"] > 2048 else 0}
        assert all(r.census.class_of(p) == PageClass.NIC_RING for p in ring.pfn)


def test_every_real_nic_ring_is_walked(leak_report):
    """Every driver the guest's net devices are bound to (virtio_net, e1000e,
    igb, and the fake i40e) has a walker that finds rings with pages, and no
    page a ring holds is left unattributed or free."""
    core, r = leak_report
    bound = {d["driver"] for d in core.manifest["netdevs"].values()}
    assert {"virtio_net", "e1000e", "igb", "i40e"} <= bound, bound
    drivers = {x.driver for x in r.census.rings.rings if x.populated}
    assert bound <= drivers
    for ring in r.census.rings.rings:
        heads = r.census.memmap.heads_of(ring.all_pfns())
        classes = {r.census.class_of(int(h)) for h in heads}
        assert PageClass.UNATTRIBUTED not in classes, (ring.name, classes)
        assert PageClass.FREE not in classes, ring.name


def test_pages_held_outside_the_rx_slots(leak_report):
    """fake_i40e leaves a frame in progress on eth2's order-1 ring (an skb in
    ring->skb before 6.4, the ring->xdp buff from 6.4) and a frame sent by
    XDP_TX on the XDP tx ring (an xdp_frame in its page's headroom).  Before
    6.4 and on the XDP tx ring the rx slot was emptied, so the page is held
    only there; the walkers still own it, and it is never orphaned."""
    core, r = leak_report
    c = r.census
    parked = [p for p in core.manifest["parked"] if p["kind"] != "gro"]     # test_a_tcp_flow_in_gro_is_held
    kinds = {p["kind"] for p in parked}
    assert kinds in ({"skb", "xdp-tx"}, {"xdp", "xdp-tx"}), parked
    orphaned = {o.pfn for o in r.orphans}
    for p in parked:
        want = "xdp-tx" if p["kind"] == "xdp-tx" else "rx"
        ring = next(x for x in c.rings.rings
                    if x.driver == "i40e" and x.kind == want and f"{x.device}/{x.queue}" == p["ring"])
        slots = set(c.memmap.heads_of(ring.pfn).tolist())
        outside = set(ring.extra_heads(c.memmap).tolist())
        if p["kind"] == "xdp-tx":
            assert p["pfn"] in slots, ring.name
        elif p["kind"] == "skb":
            assert p["pfn"] in outside and p["pfn"] not in slots, ring.name
        else:       # xdp: the buffers stay in their slots until the frame completes
            assert p["pfn"] in outside and p["pfn"] in slots, ring.name
        assert c.class_of(p["pfn"]) == PageClass.NIC_RING, p
        assert p["pfn"] not in orphaned
        assert int(c.memmap.order_of(np.array([p["pfn"]]))[0]) == p["order"]
        assert int(c.refcounts(np.array([p["pfn"]]))[0]) == p["refcount"]
    rows = {(x["device"], x["kind"], x["queue"]): x for x in c.ring_rows() if x["driver"] == "i40e"}
    frame = next(p for p in parked if p["kind"] != "xdp-tx")
    dev, queue = frame["ring"].split("/")
    assert rows[(dev, "rx", int(queue))]["outside_slots"] == (1 if frame["kind"] == "skb" else 0)


def gro_skbs(prog, dev) -> list:
    """The skbs waiting in the GRO lists of ``dev``'s napis
    (``napi->gro_hash[]``; ``napi->gro.hash[]`` from 6.15)."""
    out = []
    for napi in list_for_each_entry("struct napi_struct", dev.napi_list.address_of_(), "dev_list"):
        buckets = napi.gro_hash if napi.type_.type.has_member("gro_hash") else napi.gro.hash
        for b in range(len(buckets)):
            out += list_for_each_entry("struct sk_buff", buckets[b].list.address_of_(), "list")
    return out


def test_a_tcp_flow_in_gro_is_held(leak_report):
    """fake_i40e hands three segments of one TCP flow from each port's
    order-0 ring to napi_gro_receive() on the ring's q_vector, as
    i40e_clean_rx_irq() does, and the poll never completes: the first skb
    waits in the napi's GRO list, and the pages of the next two are frags
    of it, in the skb_shared_info inside the first page (their own skbs
    freed).  No ring slot holds any of them, and none is orphaned: the
    first is held by its skb, the others by the first page."""
    core, r = leak_report
    c = r.census
    prog = c.prog
    gro = [p for p in core.manifest["parked"] if p["kind"] == "gro"]
    ports = core.netdevs("i40e")
    assert len(gro) == 3 * len(ports), core.manifest["parked"]
    orphaned = orphan_pfns(r)
    referenced = {x.pfn: x.references for x in r.referenced}
    slots = set(c.memmap.heads_of(np.concatenate([x.pfn for x in c.rings.rings])).tolist())
    for port in ports:
        pages = [p["pfn"] for p in gro if p["ring"] == f"{port}/0"]
        (skb,) = gro_skbs(prog, netdev_get_by_name(prog, port))
        assert skb_pfns(prog, c.memmap, skb) == pages, port        # the head's page, then two frags
        for pfn in pages:
            assert pfn not in orphaned and pfn not in slots, (port, pfn)
            assert c.class_of(pfn) == PageClass.UNATTRIBUTED, (port, pfn)
        first, *merged = pages
        assert any("slab" in line for line in referenced[first]), referenced[first]
        for pfn in merged:
            assert any("itself referenced" in line for line in referenced[pfn]), referenced[pfn]


def test_igb_rings_of_a_real_82576(leak_report):
    """QEMU's igb (82576) with the kernel's own igb driver: one ring per rx
    queue the driver said it uses at probe, each filled by igb_alloc_rx_buffers
    with order-0 pages (MTU 1500) that carry the ring's pagecnt_bias, rx
    packets counted by the driver, and none of its pages orphaned."""
    core, r = leak_report
    c = r.census
    devs = core.netdevs("igb")
    assert len(devs) == 1, core.manifest["netdevs"]
    rings = [x for x in c.rings.rings if x.driver == "igb"]
    # sysfs lists every allocated queue; the probe message says how many are used
    pci = core.manifest["netdevs"][devs[0]]["device"]
    dmesg = (core.path / "dmesg.txt").read_text()
    used = int(re.search(rf"igb {pci}: Using \S+ interrupts\. (\d+) rx queue", dmesg)[1])
    assert sorted(x.queue for x in rings) == list(range(used))
    assert {x.device for x in rings} == set(devs) and {x.kind for x in rings} == {"rx"}
    orphaned = {o.pfn for o in r.orphans}
    for ring in rings:
        assert not ring.problems, ring.problems
        # igb refills every cleaned slot at the end of each poll, so at most
        # one batch (IGB_RX_BUFFER_WRITE) short of count - 1
        assert ring.count - 1 - 16 <= ring.populated <= ring.count, ring.name
        assert set(c.memmap.order_of(ring.pfn).tolist()) == {0}
        assert (ring.bias > 0).all() and (c.refcounts(ring.pfn) >= ring.bias).all(), ring.name
        assert all(c.class_of(int(p)) == PageClass.NIC_RING for p in ring.pfn)
        assert not orphaned & set(ring.pfn.tolist())
        assert {"next_to_use", "next_to_clean", "next_to_alloc"} <= ring.indices.keys()
    assert sum(x.stats["packets"] for x in rings) > 0, [x.stats for x in rings]


def test_tcp_hash_tables_are_alloc_pages_exact_runs(leak_report):
    """The kernel's own ground truth for the run rule: on a one-node guest,
    ``alloc_large_system_hash()`` takes TCP's established and bind hash
    tables from ``alloc_pages_exact()``, and ``tcp_hashinfo`` holds only each
    table's start.  Every page of each table is an unattributed order-0
    page that the scan finds referenced, never orphaned; the pages no word
    points into are given to the run of the table's first page."""
    core, r = leak_report
    c, prog = r.census, r.census.prog
    a = c.memmap
    h = prog["tcp_hashinfo"]
    tables = {"ehash": (h.ehash, h.ehash_mask.value_() + 1), "bhash": (h.bhash, h.bhash_size.value_())}
    held = {x.pfn: x for x in r.referenced + r.held_by_inference}
    by_run = 0
    for name, (table, buckets) in tables.items():
        start = table.value_()
        first = a.pfn_of_virt(start)
        last = a.pfn_of_virt(start + buckets * prog.type(table.type_.type).size - 1)
        assert start % (1 << a.page_shift) == 0 and 0 < first < last, name
        for pfn in range(first, last + 1):
            assert c.class_of(pfn) == PageClass.UNATTRIBUTED and a.order_of(pfn) == 0, (name, pfn)
            assert pfn in held, (name, pfn)
            run = f"in an alloc_pages_exact() run starting at pfn {first}"
            if held[pfn].references == [run]:       # the rule alone: said so
                by_run += 1
                assert r.inferred_rules[pfn] == ALLOCATION_RUN, (name, pfn)
    assert by_run > 0, "no page of the tables was attributed by the run rule alone"


def test_udp_table_cut_in_three_keeps_its_block(leak_report):
    """``udp_table_init()`` takes one ``alloc_large_system_hash()`` block and
    cuts it at page boundaries: ``hash``, then ``hash2`` and (6.13+)
    ``hash4`` right after, each held by the global ``udp_table``.  Every
    page from ``hash`` to the end of the last table is referenced; those no
    socket points into belong to the run of the part they lie in, within
    the first part's block."""
    core, r = leak_report
    prog, a = r.census.prog, r.census.memmap
    t = prog["udp_table"]
    parts = [t.member_(m) for m in ("hash", "hash2", "hash4") if has_member(prog, "struct udp_table", m)]
    buckets = t.mask.value_() + 1
    first = a.pfn_of_virt(parts[0].value_())
    last = a.pfn_of_virt(parts[-1].value_() + buckets * prog.type(parts[-1].type_.type).size - 1)
    held = {x.pfn for x in r.referenced} | set(r.inferred_rules)
    assert last > first
    for pfn in range(first, last + 1):
        assert pfn not in orphan_pfns(r), pfn
        assert r.census.class_of(pfn) != PageClass.UNATTRIBUTED or pfn in held, pfn


def test_split_page_block_held_by_its_first_struct_page(leak_report):
    """7.x's vDSO data store (``lib/vdso/datastore.c``) is ``alloc_pages()``
    + ``split_page()``, kept as ``vdso_data_pages`` (the first ``struct
    page``, indexed from) and as direct-map pointers to some of its pages:
    none of its pages is orphaned, the unnamed ones belong to the block."""
    core, r = leak_report
    prog, a = r.census.prog, r.census.memmap
    if not has_object(prog, "vdso_data_pages"):
        pytest.skip("no vDSO data store held by struct page on this kernel")
    first = a.pfn_of_page_ptr(prog["vdso_data_pages"].value_())
    named = [a.pfn_of_virt(prog[g].value_()) for g in ("vdso_k_time_data", "vdso_k_rng_data", "vdso_k_arch_data")
             if has_object(prog, g) and prog[g].value_()]
    block = range(first, max(named) + 1)
    referenced = {x.pfn: x.references for x in r.referenced + r.held_by_inference}
    assert len(block) > 1 and not set(block) & orphan_pfns(r)
    assert any(f"in a split_page() block starting at pfn {first}" in referenced.get(p, []) for p in block), \
        "no page of the vDSO block was given to its split_page() run"


def test_page_pool_of_a_veth_with_xdp(leak_report):
    """The workload's veth pair runs an XDP program on its receiving end and
    nobody reads the datagrams sent across.  veth copies each skb into a
    buffer for XDP: from its page_pool on 6.12, from alloc_page() on 5.10
    and 6.1 (skb heads the reference scan finds).  Where the kernel lists its
    pools (``page_pools``, 6.8+) the walker finds them, and the pages they
    hold (``pages_state_hold_cnt - release_cnt``) are exactly the pages the
    census classes as page_pool by ``pp_magic``."""
    core, r = leak_report
    c = r.census
    assert "veth xdp: vmct-v0 -> vmct-d/vmct-v1, 400 datagrams sent" in (core.path / "workload.log").read_text()
    pools = [x for x in c.rings.rings if x.driver == "page_pool"]
    if not has_object(c.prog, "page_pools"):
        assert not pools
        return
    assert pools and all(not x.problems for x in pools), pools
    inflight = sum(x.stats["inflight"] for x in pools)
    assert inflight > 0, [x.stats for x in pools]
    assert c.totals()["page_pool"] == inflight


def test_orphans_on_kdump_compressed_core(kdump_core):
    """makedumpfile -d 31 keeps kernel pages: the leak is found the same way."""
    r = orphans(kdump_core.program())
    assert orphan_pfns(r) == set(kdump_core.expected_orphans())


@pytest.mark.full
def test_a_dump_that_lacks_memory_says_what_stopped():
    """``makedumpfile -d 31`` drops pages by what their ``struct page`` says,
    read by the rules of the kernels it knows.  On 7.3 even sid's 1.7.8
    ("The kernel version is not supported") drops tail pages of multi-page
    slabs, which the walkers and the scan read through.  The verdict's
    coverage then names each stage that stopped at missing memory (their
    pages may look orphaned) instead of "all memory readable"; the planted
    bias-like leaks, whose pages the dump keeps, are still orphaned."""
    core = sample_core("i40e-leak-kdump", "7.3")
    r = orphans(core.program())
    cov = coverage(r)
    assert cov["stopped_by_missing_memory"], cov
    text = verdict(r)
    assert "STOPPED by memory missing from the dump" in text and "all memory readable" not in text
    bias = {x["pfn"] for x in core.manifest["planted_leaks"] if x["refcount"] != 1}
    assert bias and bias <= orphan_pfns(r)


def test_cli_orphans_and_rings_json(leak_core):
    doc = cli_json("orphans", *leak_core.args)
    assert doc["schema"] == "vmcore-tools/orphans/3"
    sids = {s["id"] for s in doc["suspects"]}
    for o in doc["orphans"]:
        assert {"pfn", "order", "refcount", "suspect"} <= o.keys()
        assert o["suspect"] in sids
    assert {o["pfn"] for o in doc["orphans"]} == set(leak_core.expected_orphans())
    # what the scan read, by the registry entry that read it: every byte counted once, under a name
    # the registry has, and the slab and the kernel image among them
    by_root = doc["scan"]["bytes_by_root"]
    assert sum(by_root.values()) == doc["scan"]["bytes"] > 0
    assert set(by_root) - {"setup"} <= {e.name for e in (*ROOTS, *OWNERS)}, by_root
    assert by_root["slab"] > 0 and by_root["kernel data"] > 0, by_root
    rings = cli_json("rings", *leak_core.args)
    assert rings["schema"] == "vmcore-tools/rings/1"
    i40e = [x for x in rings["rings"] if x["driver"] == "i40e" and x["kind"] == "rx"]
    assert len(i40e) == 3 and all(x["bias_anomalies"] == 0 for x in i40e)
    assert all("page_reuse_count" in x["stats"] for x in i40e)
    xdp = [x for x in rings["rings"] if x["driver"] == "i40e" and x["kind"] == "xdp-tx"]
    assert len(xdp) == 1 and xdp[0]["populated"] == 1 and "page_reuse_count" not in xdp[0]["stats"]


def test_drgn_orphans_helper_script(leak_core):
    """helpers/orphans.py as a drgn script, with the test modules' debug info."""
    drgn = Path(sys.executable).with_name("drgn")
    helper = Path(__file__).resolve().parents[2] / "helpers" / "orphans.py"
    extra = [arg for ko in leak_core.manifest["kernel"]["test_modules"].values() for arg in ("-s", ko)]
    out = subprocess.run([str(drgn), "-q", "-c", str(leak_core.core), "-s", leak_core.vmlinux, *extra,
                          str(helper)], capture_output=True, text=True, check=True).stdout
    assert out.startswith("Orphaned pages:")
    assert "eth2 (i40e)" in out


def test_report_names_the_leak_and_fails_on_it(leak_core):
    run = run_cli("report", "--quiet", "--fail-on-leak", *leak_core.args)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Verdict:"))
    verdict = lines[at]
    assert "leaked from the page allocator" in verdict and "i40e rx buffers of eth2" in verdict
    # the text gives the coverage a line per statement, the JSON the sentence
    assert lines[at + 1] == "Coverage:"
    coverage = [line.removeprefix("  - ") for line in lines[at + 2:] if line.startswith("  - ")]
    doc = cli_json("report", *leak_core.args)
    assert doc["schema"] == "vmcore-tools/report/3"
    assert doc["verdict"] == f"{verdict.removeprefix('Verdict: ')} Coverage: {'; '.join(coverage)}."
    assert doc["orphans"]["orphaned_pages"] == sum(1 << l["order"] for l in leak_core.expected_orphans().values())


def test_report_says_no_leak_on_a_clean_core():
    core = sample_core("no-leak", "6.1")
    run = run_cli("report", "--quiet", "--fail-on-leak", "--json", *core.args)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert not doc["orphans"]["orphaned_allocations"]
    if doc["orphans"]["inferred"]:      # the boot-time tables' runs: the verdict says what they could hide
        assert doc["verdict"].startswith("No orphaned page: every unattributed page is referenced, but "
                                         f"{doc['orphans']['inferred_pages']} pages"), doc["verdict"]
        assert "held only by inference" in doc["verdict"]
    else:
        assert doc["verdict"].startswith("No page-allocator leak"), doc["verdict"]


@pytest.mark.parametrize("command", ["orphans", "unreachable"])
def test_every_leak_command_fails_on_a_leak_when_asked(command):
    """``--fail-on-leak`` is one flag on every command that finds leaks:
    exit 1 on the i40e core (orphans; pages held only by an unreachable
    holder, which vmct_shapes plants), 0 on the clean core and without it."""
    leak, clean = sample_core("i40e-leak", "6.1"), sample_core("no-leak", "6.1")
    assert run_cli(command, "--quiet", "--fail-on-leak", *leak.args).returncode == 1
    assert run_cli(command, "--quiet", *leak.args).returncode == 0
    assert run_cli(command, "--quiet", "--fail-on-leak", *clean.args).returncode == 0


def test_page_explains_a_leak_a_ring_page_and_a_decoy(leak_report):
    """``page`` on a planted leak says orphaned; on a ring's page it names the
    ring and slot; on a large-kmalloc decoy it names who references it; an
    address of the kernel image resolves through init_mm."""
    from vmcore_tools.leaks.page import explain_page
    core, r = leak_report
    c, prog = r.census, r.census.prog
    leak = core.manifest["planted_leaks"][0]
    doc = cli_json("page", str(leak["pfn"]), *core.args)
    assert doc["schema"] == "vmcore-tools/page/1"
    assert (doc["class"], doc["order"], doc["refcount"], doc["references"]) == \
        ("unattributed", leak["order"], leak["refcount"], [])
    ring = next(x for x in c.rings.rings if x.driver == "i40e" and x.populated)
    slot = explain_page(prog, c.memmap.memmap + int(ring.pfn[0]) * c.memmap.struct_size, c)
    assert slot.given == "struct page" and slot.klass == "nic_ring"
    assert slot.owner.startswith(f"ring {ring.name} slot {int(ring.slot[0])},")
    referenced = {x.pfn for x in r.referenced}
    decoy = next(d for d in core.manifest["decoys"] if d["pfn"] in referenced)
    page = explain_page(prog, c.memmap.virt_of_pfn(decoy["pfn"]), c)
    assert page.given == "direct-map address" and page.references
    image = explain_page(prog, prog["jiffies"].address_, c, references=False)
    assert image.given == "kernel virtual address" and image.klass == "reserved"


def test_coverage_names_the_boot_memory_the_scan_did_not_read(leak_report):
    """Reserved pages the scan read nothing of are counted, by the boot
    allocation they belong to: the image's text (its data and bss are read),
    the memmap, the first per-cpu chunk's dead interrupt stacks, and the rest,
    which has no allocation map; the coverage says the last in bytes."""
    core, r = leak_report
    from vmcore_tools.mm.boot_memory import boot_extents
    from vmcore_tools.refs.unread import OTHER
    c, ps = r.census, r.census.memmap.page_size
    not_read = r.scan.boot_memory_not_read
    extents = boot_extents(c.prog, c.memmap)
    reserved = c.pfns_of(PageClass.RESERVED)
    assert 0 < sum(not_read.values()) < reserved.size * ps
    for name in ("kernel image", "per-cpu first chunk"):
        mine = np.isin(extents[name], reserved).sum() * ps
        assert 0 < not_read[name] < mine, (name, not_read[name], mine)      # read in part
    assert not_read["memmap"] == np.isin(extents["memmap"], reserved).sum() * ps
    doc = cli_json("orphans", *core.args)
    assert doc["coverage"]["boot_memory_not_read"] == not_read
    text = run_cli("report", *core.args).stdout
    assert f"NOT read: {not_read[OTHER] / 2**20:.1f} MB of boot memory with no allocation map" in text
