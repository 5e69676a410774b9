"""The userspace of a guest that cannot run this machine's own: Debian
packages of its architecture unpacked into a root under the cache (never
installed: no maintainer script runs), which the guest mounts over 9p as
its root instead of the host's (``initramfs.py``, ``vm.py``).

What the guest runs is what ``guest/init.sh`` and the workload call: bash
and the shell tools, kmod, iproute2, e2fsprogs, Python (the workload and
the capture), kexec-tools and makedumpfile (kdump), busybox for the
initramfs.  The host's root is still shared beside it, at ``/.host``: the
guest binds the repo, the cache and the kernel it runs from there.
"""

from __future__ import annotations

import shutil

from typing import TYPE_CHECKING

from .apt import PrivateApt
from .arch import GuestArch
from .toolchain import SuiteRoot, machine_suite

if TYPE_CHECKING:
    from .kernels import Kernel

#: what init.sh, workload.py and capture.py run; the Essential ones
#: (coreutils, util-linux, ...) are named, since nothing depends on them
PACKAGES = ("bash", "dash", "coreutils", "util-linux", "mount", "sed", "grep", "gawk", "findutils",
            "procps", "hostname", "kmod", "iproute2", "e2fsprogs", "python3", "kexec-tools",
            "makedumpfile", "busybox-static")


class GuestRoot(SuiteRoot):
    """``suite``'s userspace for ``arch``, unpacked into ``cache_dir()/roots``."""

    packages = PACKAGES

    def __init__(self, suite: str, suites: tuple[tuple[str, str], ...], arch: GuestArch):
        super().__init__(suite, f"guest-{arch.name}")
        self.suites = suites
        self.arch = arch

    def apt(self) -> PrivateApt:
        return PrivateApt(self.suite, list(self.suites), self.arch.name)

    def finish(self) -> None:
        # the guest's tmpfs root makes these; a /root here (read-only over
        # 9p) would keep the guest from binding the host's cache under it
        shutil.rmtree(self.root / "root", ignore_errors=True)
        for d in ("proc", "sys", "dev", "tmp", "run"):
            (self.root / d).mkdir(exist_ok=True)
        (self.root / "usr" / "bin" / "sh").unlink(missing_ok=True)
        (self.root / "usr" / "bin" / "sh").symlink_to("dash")
        (self.root / "usr" / "bin" / "awk").unlink(missing_ok=True)
        (self.root / "usr" / "bin" / "awk").symlink_to("gawk")
        python = self.root / "usr" / "bin" / "python3"
        if not python.exists():
            versions = sorted((self.root / "usr" / "bin").glob("python3.*"))
            if versions:
                python.symlink_to(versions[-1].name)

    def check(self) -> None:
        missing = [p for p in ("usr/bin/bash", "usr/bin/busybox", "usr/bin/python3", "usr/bin/kmod",
                               "usr/sbin/kexec", "usr/bin/makedumpfile", "usr/sbin/ip")
                   if not (self.root / p).exists() and not (self.root / p).is_symlink()]
        if missing:
            raise RuntimeError(f"the {self.arch.name} guest root {self.root} lacks {', '.join(missing)}")

    @property
    def busybox(self):
        return self.root / "usr" / "bin" / "busybox"


def guest_root_of(k: "Kernel", log=print) -> GuestRoot | None:
    """The unpacked root a guest of kernel ``k`` runs, None where it runs
    this machine's own (``arch.GuestArch.native``): this machine's suite
    built for the guest's architecture, whatever suite the kernel comes
    from (a backports suite has no userspace of its own), as an amd64
    guest runs this machine's userspace."""
    if k.arch.native:
        return None
    suite = machine_suite()
    return GuestRoot(suite, (("debian", suite), ("security", f"{suite}-security")), k.arch).ensure(log)
