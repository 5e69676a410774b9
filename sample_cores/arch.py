"""The architectures a sample-core guest runs: what QEMU emulates, how the
kernel is told where its console is, and how a module is built for it.

An amd64 guest runs this machine's own userspace over 9p.  An arm64 guest
cannot: its userspace is a root of Debian arm64 packages unpacked under the
cache (``guest_root.GuestRoot``), and the host's root is shared beside it so
the guest still reads the repo, the cache and the kernel it runs.  Its
modules are cross-built on this machine (``ARCH=arm64``, Debian's
``aarch64-linux-gnu-`` compiler in a root of its own) against the arm64
headers and this machine's own build of ``linux-kbuild``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuestArch:
    name: str                   # Debian's name: "amd64", "arm64"
    #: QEMU's system emulator for it, and the bookworm-backports package that has it
    qemu_binary: str
    qemu_package: str
    #: options before the devices: the machine and the CPU under TCG
    machine_args: tuple[str, ...]
    cpu: str
    #: the kernel's console device
    console: str
    #: Kbuild's ARCH and the cross compiler's prefix (empty: this machine's gcc)
    kbuild_arch: str
    cross_compile: str = ""
    #: the cross compiler's Debian package, built for this machine
    cross_package: str = ""

    @property
    def native(self) -> bool:
        """Whether the guest runs this machine's own userspace."""
        return not self.cross_compile


ARCHES: dict[str, GuestArch] = {
    "amd64": GuestArch("amd64", "qemu-system-x86_64", "qemu-system-x86", (), "max", "ttyS0", "x86"),
    # virt: a PCIe host bridge for virtio, e1000e, igb and edu, fw_cfg for
    # vmcoreinfo; pointer authentication emulated the cheap way (QEMU's
    # own algorithm: the architected one costs half the run time under TCG)
    "arm64": GuestArch("arm64", "qemu-system-aarch64", "qemu-system-arm", ("-machine", "virt,gic-version=3"),
                       "max,pauth-impdef=on", "ttyAMA0", "arm64", "aarch64-linux-gnu-",
                       "gcc-aarch64-linux-gnu"),
}
