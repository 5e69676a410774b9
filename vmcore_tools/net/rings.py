"""NIC rx rings and other page holders of the network stack.

A *walker* finds its rings from global kernel state (net devices, PCI
drvdata, the page_pool registry) and describes, per ring, the pages its slots
hold.  Walkers share one small interface (``Walker``) and live one driver
family per module:

* ``intel``: i40e, ice, iavf, ixgbe, ixgbevf, igb, igc -- the Duyck-style
  rx buffers ``{dma, page, page_offset, pagecnt_bias}``;
* ``virtio_net``: outstanding virtqueue buffers and the ring's page_frag;
* ``e1000e``: skbs (and jumbo pages) posted on the rx ring;
* ``page_pool``: every registered pool and its pages in flight.

A walker whose driver is bound to a device gets its module's debug info
loaded first (``debuginfo``; the modules of unbound drivers are never read).
A walker whose driver's types are still missing is skipped quietly, but if
devices are bound to the driver, its module's debug info is what is missing,
and the scan says so; a walker that meets a layout it does not understand says
so in ``RingScan.problems`` and the others go on.

    >>> from vmcore_tools.net.rings import walk_rings
    >>> scan = walk_rings(prog)
    >>> for ring in scan.rings: print(ring.name, ring.populated)
"""

from __future__ import annotations

import drgn

from vmcore_tools.core.debuginfo import load_module_debug_info
from vmcore_tools.core.stages import run_stage
from vmcore_tools.mm.memmap import Memmap
from vmcore_tools.core.structs import UnknownLayout
from vmcore_tools.net import e1000e, intel, page_pool, virtio_net
from vmcore_tools.net.devices import bound_devices, driver_modules
from vmcore_tools.net.ring import RingScan, Walker


def all_walkers() -> list[Walker]:
    return [*intel.WALKERS, virtio_net.VirtioNet(), e1000e.E1000e(), page_pool.PagePools()]


def walker_ready(prog: drgn.Program, walker: Walker) -> bool:
    """Whether ``walker`` can run: its driver's types are in the debug info,
    once the debug info of the modules behind the devices bound to its driver
    is loaded (nothing is loaded for a driver no device uses)."""
    if not walker.present(prog):
        load_module_debug_info(prog, driver_modules(prog, walker.name))
    return walker.present(prog)


def _ready(prog: drgn.Program, walker: Walker, problems: list[str]) -> bool:
    """``walker_ready``; a walker that is not, though devices are bound to
    its driver, is said in ``problems``."""
    if walker_ready(prog, walker):
        return True
    users = bound_devices(prog, walker.name)
    if users:
        problems.append(f"{walker.name}: bound to {', '.join(users[:4])}, but the debug info lacks its types, "
                        f"so its rings are not walked and their pages look unattributed "
                        f"(give the module's debug info with -d)")
    return False


def walk_rings(prog: drgn.Program, a: Memmap | None = None,
               walkers: list[Walker] | None = None) -> RingScan:
    """Run every walker whose driver is present.

    ``a`` (the memmap's geometry, ``pages.Memmap``) is found when not given.
    """
    if a is None:
        a = Memmap.from_program(prog)
    scan = RingScan([], [], [])
    seen: set[tuple[int, str]] = set()
    for walker in walkers if walkers is not None else all_walkers():
        ready = run_stage("ring walkers", lambda: _ready(prog, walker, scan.problems), None, scan.problems,
                          detail=walker.name)
        if not ready:
            continue
        scan.walked.append(walker.name)
        run_stage("ring walkers", lambda: _walk(walker, prog, a, scan, seen), None, scan.problems,
                  detail=walker.name)
    return scan


def _walk(walker: Walker, prog: drgn.Program, a: Memmap, scan: RingScan, seen: set[tuple[int, str]]) -> None:
    """Add ``walker``'s rings to ``scan``, each ring once (``seen``); a layout
    the walker does not know is a stated problem, not a failure."""
    try:
        for ring in walker.rings(prog, a):
            key = (ring.address, ring.kind)
            if key in seen:        # found by both routes (netdev and PCI)
                continue
            seen.add(key)
            scan.rings.append(ring)
            scan.problems += [f"{ring.name}: {p}" for p in ring.problems]
    except UnknownLayout as e:
        scan.problems.append(f"{walker.name}: {e}; its rings are not walked")
