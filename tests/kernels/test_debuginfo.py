"""Module debug info on demand, and module symbols from kallsyms, on the real
sample cores of 5.10, 6.1 and 6.12.

The guests load about 35 modules; five of them are Intel drivers that bind
no device (ixgbe, ixgbevf, ice, iavf, igc).  Only the modules of drivers
bound to a device, and the modules those use, should have their DWARF read.
"""

from __future__ import annotations

import pytest

from vmcore_tools import open_program
from vmcore_tools.core.debuginfo import load_module_debug_info, module_files
from vmcore_tools.net.rings import intel, walk_rings
from vmcore_tools.net.devices import driver_modules

pytestmark = pytest.mark.vm

UNBOUND = ("ixgbe", "ixgbevf", "ice", "iavf", "igc")


def with_debug_info(prog) -> set[str]:
    return {m.name for m, _ in prog.loaded_modules() if not m.wants_debug_file()}


def test_only_the_bound_drivers_modules_are_read(leak_core):
    prog = leak_core.program()
    assert with_debug_info(prog) == {"kernel"}
    scan = walk_rings(prog)
    assert {"i40e", "igb", "e1000e", "virtio_net"} <= {r.driver for r in scan.rings}
    loaded = with_debug_info(prog)
    # the fake i40e registers its PCI driver "i40e" from module fake_i40e
    assert {"fake_i40e", "igb", "e1000e", "virtio_net"} <= loaded
    # virtio_net's rings are virtio_ring's struct vring_virtqueue: a module
    # on 5.10 and 6.1, built in on 6.12
    modules = {m.name for m, _ in prog.loaded_modules()}
    assert "virtio_ring" not in modules or "virtio_ring" in loaded
    assert not loaded & set(UNBOUND)
    # the modules they use too, where the sample core has their files (the
    # cache extracts only the NIC drivers' and virtio's debug info)
    files = module_files(leak_core.debug)
    wanted = {m for d in ("i40e", "igb", "e1000e", "virtio_net") for m in driver_modules(prog, d)}
    assert loaded == {"kernel", *(wanted & files.keys())}


def test_an_unbound_module_loads_when_asked(leak_core):
    prog = leak_core.program()
    ice = next(f for f in intel.WALKERS if f.name == "ice")
    assert not ice.present(prog)
    assert load_module_debug_info(prog, ["ice", "no_such_module"]) == []
    assert ice.present(prog) and "ice" in with_debug_info(prog)


def test_module_symbols_come_from_kallsyms_without_debug_info(leak_core):
    """Every address of the module's functions and data that its debug info
    names gets the same name (or an alias at that address) from the
    module's kallsyms table in the core, with no module debug info given."""
    with_dwarf = leak_core.program()
    load_module_debug_info(with_dwarf, ["fake_i40e", "igb"])
    bare = open_program(leak_core.core, leak_core.vmlinux)
    assert with_debug_info(bare) == {"kernel"}
    checked = 0
    for name in ("fake_i40e", "igb"):
        ranges = bare.module(name).address_ranges
        syms = [s for s in with_dwarf.symbols()
                if s.size and any(lo <= s.address < hi for lo, hi in ranges)]
        assert len(syms) > 20, name
        for s in syms:
            aliases = {t.name for t in with_dwarf.symbols(s.address)}
            got = bare.symbol(s.address + s.size // 2)
            assert got.name in aliases, (name, s.name, got.name)
            checked += 1
    assert with_debug_info(bare) == {"kernel"}     # naming needed no DWARF
    assert checked > 100
