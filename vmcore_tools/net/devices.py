"""What every ring walker needs: its driver's devices (net devices, PCI
devices, the modules behind them) and their labels."""

from __future__ import annotations

from collections.abc import Iterator

import drgn
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.net import for_each_net, for_each_netdev, netdev_name
from drgn.helpers.linux.pci import for_each_pci_dev, pci_name
from vmcore_tools.core.walk import bounded, max_entries


def driver_name(dev: drgn.Object) -> str:
    """Name of the driver bound to a ``struct device`` ("" when unbound).

    Fact: ``device.driver`` is the bound ``struct device_driver``; PCI and
    virtio drivers register under their module's name (``i40e``,
    ``virtio_net``, ``e1000e``).
    """
    drv = dev.driver
    return drv.name.string_().decode() if drv else ""


def all_netdevs(prog: drgn.Program) -> Iterator[drgn.Object]:
    """Every net device of every network namespace."""
    for net in bounded(for_each_net(prog), "the network namespaces (net_namespace_list)",
                       max_entries(prog, "struct net")):
        yield from bounded(for_each_netdev(net), "a namespace's net devices (dev_base_head)",
                           max_entries(prog, "struct net_device"))


def netdevs_of(prog: drgn.Program, driver: str) -> Iterator[drgn.Object]:
    """Net devices, in every network namespace, whose parent device is bound to ``driver``."""
    for dev in all_netdevs(prog):
        parent = dev.dev.parent
        if parent and driver_name(parent) == driver:
            yield dev


def pci_devs_of(prog: drgn.Program, driver: str) -> Iterator[drgn.Object]:
    """PCI devices bound to ``driver``."""
    for pdev in bounded(for_each_pci_dev(prog), "the PCI devices (pci_bus_type)", max_entries(prog, "struct pci_dev")):
        if driver_name(pdev.dev) == driver:
            yield pdev


def bound_devices(prog: drgn.Program, driver: str) -> list[str]:
    """Names of the net devices and PCI devices bound to ``driver``.

    Fact: ``struct device`` and ``struct device_driver`` are vmlinux types,
    so this works when the driver module's own debug info is missing -- the
    case where its walker cannot run and must say so.
    """
    try:
        names = [netdev_label(dev) for dev in netdevs_of(prog, driver)]
        return names or [pci_label(pdev) for pdev in pci_devs_of(prog, driver)]
    except (drgn.FaultError, LookupError):
        return []


def driver_modules(prog: drgn.Program, driver: str) -> list[str]:
    """The kernel modules whose debug info the walker of ``driver`` needs:
    the module that registered the driver bound to its devices, and the
    modules that one uses (virtio_net's rings are ``struct vring_virtqueue``
    of virtio_ring).  Empty when no device is bound.

    Fact: ``device_driver.owner`` is the registering module (NULL for a
    built-in driver).  ``module.target_list`` links, by their own
    ``target_list``, the ``struct module_use`` entries whose ``target`` is a
    module this one uses (CONFIG_MODULE_UNLOAD).
    """
    try:
        drivers = [dev.dev.parent.driver for dev in netdevs_of(prog, driver)]
        drivers += [pdev.dev.driver for pdev in pci_devs_of(prog, driver)]
        owners = {drv.owner.value_(): drv.owner for drv in drivers if drv.owner}
        names = []
        for owner in owners.values():
            names.append(owner.name.string_().decode())
            if owner.type_.type.has_member("target_list"):
                uses = list_for_each_entry("struct module_use", owner.target_list.address_of_(), "target_list")
                names += [use.target.name.string_().decode() for use in
                          bounded(uses, "a module's uses (module.target_list)", max_entries(prog, "struct module_use"))]
        return names
    except (drgn.FaultError, LookupError):
        return []


def netdev_label(dev: drgn.Object) -> str:
    return netdev_name(dev).decode(errors="replace")


def pci_label(pdev: drgn.Object) -> str:
    return pci_name(pdev)


