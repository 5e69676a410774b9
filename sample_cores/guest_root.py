"""The userspace of a guest that cannot run this machine's own: Debian
packages of its architecture unpacked into a root under the cache (never
installed: no maintainer script runs), which the guest mounts over 9p as
its root instead of the host's (``initramfs.py``, ``vm.py``).

What the guest runs is what ``guest/init.sh`` and the workload call: bash
and the shell tools, kmod, iproute2, e2fsprogs, Python (the workload and
the capture), kexec-tools and makedumpfile (kdump), busybox for the
initramfs -- and, for a live run, the tool itself: drgn and the Python
libraries ``pyproject.toml`` names, as Debian builds them for the
architecture (PyPI has no aarch64 drgn wheel).  The host's root is still
shared beside it, at ``/.host``: the guest binds the repo, the cache and
the kernel it runs from there.

The suite is ``GUEST_SUITE``, not this machine's: of the suites the
factory reaches, only sid has an arm64 drgn the tool runs on (0.3.0;
trixie's is 0.0.31).
"""

from __future__ import annotations

import shutil

from typing import TYPE_CHECKING

from .apt import PrivateApt
from .arch import GuestArch
from .toolchain import SuiteRoot

if TYPE_CHECKING:
    from .kernels import Kernel

#: what init.sh, workload.py and capture.py run; the Essential ones
#: (coreutils, util-linux, ...) are named, since nothing depends on them
PACKAGES = ("bash", "dash", "coreutils", "util-linux", "mount", "sed", "grep", "gawk", "findutils",
            "procps", "hostname", "kmod", "iproute2", "e2fsprogs", "python3", "kexec-tools",
            "makedumpfile", "busybox-static",
            # the tool, for live runs (pyproject.toml's dependencies)
            "python3-drgn", "python3-numpy", "python3-scipy", "python3-click", "python3-tabulate", "python3-pil")

#: the suite of a guest root (see above); it has no security suite
GUEST_SUITE = "sid"


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
        # the alternatives libblas3/liblapack3 (or OpenBLAS) register, which
        # numpy and scipy are linked against
        for lib in ("libblas.so.3", "liblapack.so.3"):
            for libdir in (self.root / "usr" / "lib").glob("*-linux-gnu"):
                provider = next(iter(sorted(libdir.glob(f"*/{lib}"))), None)
                if provider is not None and not (libdir / lib).exists():
                    (libdir / lib).symlink_to(provider.relative_to(libdir))
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
    this machine's own (``arch.GuestArch.native``): ``GUEST_SUITE`` built
    for the guest's architecture, whatever suite the kernel comes from (a
    backports suite has no userspace of its own)."""
    if k.arch.native:
        return None
    return GuestRoot(GUEST_SUITE, (("debian", GUEST_SUITE),), k.arch).ensure(log)
