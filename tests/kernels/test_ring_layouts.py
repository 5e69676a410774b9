"""The Intel family's walkers against the real DWARF of every Intel driver.

QEMU emulates igb alone of the family (its rings are checked slot by slot in
test_orphans, with the fake i40e's; the other drivers' rings, with real
pages, in test_intel_family).  The guests also load ixgbe, ixgbevf,
ice, iavf and igc, which bind no device; the fixture loads their debug info
(the tool itself reads only the bound drivers'), so each walker's route -- priv, ring array and count, ring, slot
array, slot page -- is checked member by member against the kernel's own
types of 5.10, 6.1, 6.12 and 7.3.
"""

from __future__ import annotations

import dataclasses

import pytest
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.slab import find_slab_cache, slab_cache_for_each_allocated_object

from vmcore_tools.core.debuginfo import load_module_debug_info
from vmcore_tools.core.features import has_member, has_type
from vmcore_tools.net.rings import all_walkers, intel, walk_rings
from vmcore_tools.core.structs import struct_array

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def prog(leak_core):
    """The program, with the debug info of every Intel module the guest
    loaded: only the bound drivers' modules are loaded on demand."""
    prog = leak_core.program()
    unbound = [f.name for f in intel.WALKERS if f.name not in ("i40e", "igb")]
    assert load_module_debug_info(prog, unbound) == []
    walk_rings(prog)
    return prog


def test_every_intel_driver_is_loaded_with_debug_info(prog):
    assert {f.name for f in intel.WALKERS if f.present(prog)} == {f.name for f in intel.WALKERS}


def test_every_route_matches_the_kernels_types(leak_core, prog):
    """Every family's route exists as the walker expects, except where the
    driver receives through page_pool (libeth) and has no page slots: iavf
    from 6.10 on, ice from 6.17 on.  There the walker names the missing slot
    array, in one problem."""
    problems = {f.name: f.layout_problems(prog) for f in intel.WALKERS}
    for driver, ring, member in (("iavf", "struct iavf_ring", "rx_bi"), ("ice", "struct ice_rx_ring", "rx_buf")):
        if has_type(prog, ring) and not has_member(prog, ring, member):
            found = problems.pop(driver)
            assert len(found) == 1 and f"has none of {member}" in found[0], found
    assert problems == {f.name: [] for f in intel.WALKERS if f.name in problems}


def test_a_route_the_kernel_lacks_is_one_problem_not_a_crash(leak_core, prog):
    """A walker for a layout this kernel does not have (an igb whose adapter
    has no ``rx_rings_v2``) is stopped before it reads a ring, says what is
    missing, and the other walkers go on."""
    igb = next(f for f in intel.WALKERS if f.name == "igb")
    changed = dataclasses.replace(igb, array="rx_rings_v2")
    scan = walk_rings(prog, walkers=[changed, *(w for w in all_walkers() if w.name != "igb")])
    assert scan.problems == ["igb: struct igb_adapter has no member rx_rings_v2; its rings are not walked"]
    assert not [r for r in scan.rings if r.driver == "igb"]
    assert {r.driver for r in scan.rings} >= {"i40e", "e1000e", "virtio_net"}


def test_struct_array_decodes_bit_fields_as_drgn_does(prog):
    """The bulk slot decoder reads bit fields (ice 6.3+ keeps a slot's kind
    in ``ice_tx_buf.type:4``): every bit field of every allocated sk_buff
    and every task_struct, anonymous unions included, decodes to the value
    drgn reads for it, and some of them are wider than one bit and not 0."""
    def bit_fields(ty):
        for m in ty.members:
            if m.name is None:
                yield from bit_fields(m.type)
            elif m.bit_field_size:
                yield m.name, m.bit_field_size

    skbs = list(slab_cache_for_each_allocated_object(find_slab_cache(prog, "skbuff_head_cache"),
                                                     "struct sk_buff"))
    objects = [*skbs, *for_each_task(prog)]
    assert len(skbs) > 100
    wide_set = 0
    for obj in objects:
        ty = obj.type_.type
        fields = dict(bit_fields(ty))
        got = struct_array(prog, obj.value_(), ty, 1, {f: f for f in fields})
        assert {f: int(v[0]) for f, v in got.items()} == {f: getattr(obj, f).value_() for f in fields}
        wide_set += sum(1 for f, v in got.items() if fields[f] > 1 and v[0])
    assert wide_set > 10
