"""The rest of the Intel family with real pages in its rings.

QEMU emulates igb alone of the family, so the ``intel-family`` cores load
fake_intel's modules (``sample_cores/modules/fake_intel``): ixgbe, ixgbevf,
igc, ice and -- where its ring still has page slots, before 6.10 -- iavf
rings built from each driver's own headers, filled with real pages, fed
frames, and losing pages as fake_i40e's rings do.  Each module logs every
page it loses and, per ring, its populated slots and the sum of their PFNs:
that is the ground truth the walkers and the orphan report are held to, on
5.10, 6.1 and 6.12.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from sample_cores.manifest import parse_log
from vmcore_tools import orphans
from vmcore_tools.core.debuginfo import load_module_debug_info
from vmcore_tools.core.features import has_member, has_type
from vmcore_tools.net.rings import intel

from ..conftest import KERNELS, cli_json, lines, run_in_guest, sample_core

pytestmark = pytest.mark.vm

FAKED = ("ixgbe", "ixgbevf", "igc", "ice", "iavf")


@pytest.fixture(scope="module", params=lines(KERNELS, ci=("6.1", "7.3")))
def family(request):
    core = sample_core("intel-family", request.param)
    return core, orphans(core.program())


def faked_drivers(core) -> set[str]:
    return {d["driver"] for d in core.manifest["netdevs"].values() if d["driver"] in FAKED}


def test_every_faked_driver_has_a_device(family):
    """A driver is faked where its ring has page slots: iavf not from 6.10
    on, ice not from 6.17 on (page_pool/libeth); their walkers report the
    missing slot array instead (test_ring_layouts)."""
    core, r = family
    prog = r.census.prog
    slots = {"iavf": ("struct iavf_ring", "rx_bi"), "ice": ("struct ice_rx_ring", "rx_buf")}
    assert load_module_debug_info(prog, list(slots)) == []     # unbound: not loaded on demand
    slotless = {d for d, (ring, member) in slots.items()
                if has_type(prog, ring) and not has_member(prog, ring, member)}
    assert faked_drivers(core) == set(FAKED) - slotless
    assert {Counter(core.netdevs(d)).total() for d in faked_drivers(core)} == {1}


def test_walkers_read_every_ring_as_the_driver_left_it(family):
    """Per ring: slots, populated slots and the very pages in them (the sum
    of their PFNs) are what the module logged, through each driver's route
    (ice: priv -> VSI, iavf: one contiguous array, the others: the
    adapter's array of ring pointers)."""
    core, r = family
    logged = {(x["netdev"], x["queue"]): x for x in core.manifest["fake_rings"]}
    assert len(logged) == 2 * len(faked_drivers(core))
    walked = {(ring.device, ring.queue): ring for ring in r.census.rings.rings
              if ring.driver in FAKED and ring.kind == "rx"}
    assert walked.keys() == logged.keys()
    for key, ring in walked.items():
        want = logged[key]
        assert (ring.count, ring.populated, int(ring.pfn.sum())) == \
            (want["count"], want["populated"], want["pfn_sum"]), (ring.name, want)
        assert set(ring.bias.tolist()) <= set(range(65535 - 64, 65536)), ring.name
        assert ring.indices["next_to_use"] == ring.indices["next_to_alloc"], ring.name


def test_an_unfinished_frame_in_a_slot_is_the_rings(family):
    """ixgbe (and ice where its slot has an ``skb``, before 6.1) keeps the
    skb of an unfinished frame in the next slot; the page under it has left
    its slot, and is the ring's page outside the slots, not an orphan."""
    core, r = family
    parked = core.manifest["parked"]
    assert {p["kind"] for p in parked} == {"slot-skb"}
    # ice is faked where its ring has page slots (struct ice_rx_buf), not from 6.17
    ice_slot_skb = "ice" in faked_drivers(core) and r.census.prog.type("struct ice_rx_buf").has_member("skb")
    drivers = [core.manifest["netdevs"][p["ring"].split("/")[0]]["driver"] for p in parked]
    assert sorted(drivers) == sorted(["ixgbe", *(["ice"] if ice_slot_skb else [])])
    for p in parked:
        dev, queue = p["ring"].split("/")
        ring = next(x for x in r.census.rings.rings if (x.device, x.queue) == (dev, int(queue)))
        assert p["pfn"] in ring.extra_pfns, (p, ring.extra_pfns)
        assert p["pfn"] not in {o.pfn for o in r.orphans}


def test_exactly_the_lost_pages_are_orphaned(family):
    """Recall and precision: the orphans are the logged losses, at both
    orders, with the rings' bias-like refcounts; nothing else."""
    core, r = family
    leaks = {x["pfn"]: x for x in core.manifest["planted_leaks"]}
    assert {x["order"] for x in leaks.values()} == {0, 1}
    assert len(leaks) == 5 * len(faked_drivers(core))
    assert {o.pfn: (o.order, o.refcount) for o in r.orphans} == \
        {pfn: (x["order"], x["refcount"]) for pfn, x in leaks.items()}
    assert not r.problems


def test_each_drivers_losses_are_suspects_named_after_its_device(family):
    """One suspect per driver and order, named by the frames left in the
    pages (addressed to the fake device's random MAC)."""
    core, r = family
    netdev_of = {x["pfn"]: x["ring"].split("/")[0] for x in core.manifest["planted_leaks"]}
    by_suspect = {o.suspect: o for o in r.orphans}
    for s in r.suspects:
        assert s.driver in FAKED, s
        assert s.netdev == netdev_of[by_suspect[s.id].pfn]
        assert core.manifest["netdevs"][s.netdev]["driver"] == s.driver
        assert f"stale frames addressed to {s.netdev} ({s.driver})" in s.label
    assert Counter((s.driver, tuple(s.orders)) for s in r.suspects) == \
        Counter((d, (o,)) for d in faked_drivers(core) for o in (0, 1))


def test_every_family_route_is_walked_and_reported(family):
    """The rings command's JSON lists each faked driver's rings."""
    core, r = family
    doc = cli_json("rings", *core.args)
    drivers = Counter(x["driver"] for x in doc["rings"] if x["kind"] == "rx")
    assert {d: drivers[d] for d in faked_drivers(core)} == {d: 2 for d in faked_drivers(core)}
    assert set(doc["walked"]) >= faked_drivers(core)
    assert {w.name for w in intel.WALKERS} >= faked_drivers(core)


#: inside the guest: the losses the modules recorded (vmct_truth.h), then the
#: orphans report of the running kernel (/proc/kcore), the debug info given
#: as ``-s``/``-d``
LIVE = ("cat /sys/kernel/debug/vmct_truth/*; echo ===; set -- {debug}; vmlinux=$1; shift; "
         f"{sys.executable} -m vmcore_tools.cli orphans --json --quiet -s $vmlinux "
         '$(for d in "$@"; do echo -d $d; done)')


@pytest.mark.parametrize("kernel", lines())
def test_live_the_lost_pages_are_the_orphans(kernel):
    """The same guest, running: the report read from /proc/kcore finds
    exactly the pages its modules recorded lost, each driver named."""
    out = run_in_guest("intel-family", kernel, LIVE)
    log, _, doc = out.partition("===\n")
    doc = json.loads(doc)
    leaks, _ = parse_log(log)
    drivers = faked_drivers(sample_core("intel-family", kernel))
    assert len(leaks) == 5 * len(drivers)
    assert {o["pfn"] for o in doc["orphans"]} == {x["pfn"] for x in leaks}
    assert {s["driver"] for s in doc["suspects"]} == drivers
