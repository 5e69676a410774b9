"""Fetch and unpack the Debian kernels the sample cores run.

For each kernel line we resolve the exact ABI and package version through the
``linux-image-amd64`` metapackage of its suite, download the image, its
``-dbg`` package, the headers (``-amd64``, ``-common``, ``linux-kbuild-*``)
and ``linux-source-*``, and unpack only what is used:

* ``vmlinuz``, ``config`` and the module tree (``depmod`` run on it),
* ``usr/lib/debug/boot/*`` and the debug ``.ko`` of the drivers we walk,
* the headers, with their absolute include path rewritten,
* the i40e driver's private headers from ``linux-source``.

Everything is cached under ``cache_dir()/kernels/<line>/<version>`` and a
``.complete`` stamp makes a second call free.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .apt import PrivateApt
from . import lock
from .arch import ARCHES, GuestArch
from .cache import cache_dir

#: Debug ``.ko`` files we keep (paths under ``lib/modules/<abi>/kernel``).
DEBUG_MODULE_DIRS = (
    "drivers/net/ethernet/intel/",
    "drivers/net/virtio_net.ko",
    "drivers/firmware/qemu_fw_cfg.ko",
    "drivers/virtio/",
)

#: Driver header directories copied out of ``linux-source`` for test modules
#: (fake_i40e, and fake_intel's drivers).
INTEL_DIR = "drivers/net/ethernet/intel/"
SOURCE_DIRS = tuple(f"{INTEL_DIR}{d}/" for d in ("i40e", "ixgbe", "ixgbevf", "igc", "ice", "iavf"))


@dataclass(frozen=True)
class KernelLine:
    name: str                      # "6.1"
    apt_name: str                  # private apt tree name
    suites: tuple[tuple[str, str], ...]
    #: the suite whose gcc Debian built this line with, where it is newer
    #: than this machine's (toolchain.py); None: this machine's gcc
    toolchain: str | None = None
    #: the suite whose makedumpfile knows this line's memory layout, where
    #: the machine's does not (toolchain.CaptureTools); None: the machine's
    capture: str | None = None
    #: the Debian architecture (arch.ARCHES) and the kernel flavour of its
    #: ``linux-image-<flavour>`` metapackage ("arm64-16k": 16 KiB pages)
    arch: str = "amd64"
    flavour: str = ""

    @property
    def image_flavour(self) -> str:
        return self.flavour or self.arch

    def apt(self) -> PrivateApt:
        """The line's packages, of its architecture."""
        return PrivateApt(self.apt_name, list(self.suites), None if self.arch == "amd64" else self.arch)

    def host_apt(self) -> PrivateApt:
        """The line's packages built for this machine: ``linux-kbuild``, whose
        tools Kbuild runs here whatever the module's architecture."""
        return PrivateApt(self.apt_name, list(self.suites))


KERNEL_LINES: dict[str, KernelLine] = {
    "5.10": KernelLine("5.10", "bullseye",
                       (("debian", "bullseye"), ("security", "bullseye-security"))),
    "6.1": KernelLine("6.1", "bookworm",
                      (("debian", "bookworm"), ("security", "bookworm-security"))),
    "6.12": KernelLine("6.12", "bookworm-backports", (("debian", "bookworm-backports"),)),
    # 7.x: the image is split into linux-binary-<abi> and linux-modules-<abi>;
    # built by trixie's gcc 14; captured by sid's makedumpfile 1.7.8 (trixie
    # has no newer one than 1.7.6, the machine's 1.7.2 misreads 7.x pages)
    "7.3": KernelLine("7.3", "trixie-backports", (("debian", "trixie-backports"),), toolchain="trixie",
                      capture="sid"),
    # arm64 (arch.py): the same suites' arm64 builds; 6.12's 16 KiB-page flavour
    "6.1-arm64": KernelLine("6.1-arm64", "bookworm",
                            (("debian", "bookworm"), ("security", "bookworm-security")), arch="arm64"),
    "6.12-arm64": KernelLine("6.12-arm64", "bookworm-backports", (("debian", "bookworm-backports"),),
                             arch="arm64"),
    "6.12-arm64-16k": KernelLine("6.12-arm64-16k", "bookworm-backports", (("debian", "bookworm-backports"),),
                                 arch="arm64", flavour="arm64-16k"),
}


@dataclass(frozen=True)
class BuiltLine:
    """A kernel we build (``kernel_build.py``) from a Debian line's linux-source."""

    name: str        # "6.1-page-owner"
    base: str        # the Debian line whose source it builds: "6.1"
    #: its config fragments, in kernel_configs/, applied together
    fragments: tuple[str, ...]


BUILT_LINES: dict[str, BuiltLine] = {
    # Debian's amd64 configs lack CONFIG_PAGE_OWNER and CONFIG_CMA; the
    # page_owner reader and the CMA owner are tested here
    "6.1-page-owner": BuiltLine("6.1-page-owner", "6.1", ("page-owner.config", "cma.config")),
    "6.12-page-owner": BuiltLine("6.12-page-owner", "6.12", ("page-owner.config", "cma.config")),
    # configured here, so this machine's gcc builds it and its test modules
    "7.3-page-owner": BuiltLine("7.3-page-owner", "7.3", ("page-owner.config", "cma.config")),
    # 5.10's Kconfig differs: DWARF and EMBEDDED (kernel_configs/page-owner-5.10.config)
    "5.10-page-owner": BuiltLine("5.10-page-owner", "5.10",
                                 ("page-owner.config", "page-owner-5.10.config", "cma.config")),
}


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: every path a VM, a module build or drgn needs."""

    line: str
    abi: str          # uname -r, e.g. "6.1.0-56-amd64"
    version: str      # Debian package version, e.g. "6.1.192-2"
    root: Path

    @property
    def arch(self) -> GuestArch:
        """The architecture it runs on (a built line's is its Debian line's)."""
        return ARCHES[debian_line(self.line).arch]

    @property
    def vmlinuz(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def modules_root(self) -> Path:
        """A tree usable as ``modprobe -d`` / ``depmod -b`` base."""
        return self.root / "modules"

    @property
    def modules_dir(self) -> Path:
        return self.modules_root / "lib" / "modules" / self.abi

    @property
    def vmlinux(self) -> Path:
        return self.root / "dbg" / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{self.abi}"

    @property
    def debug_modules_dir(self) -> Path:
        return self.root / "dbg" / "usr" / "lib" / "debug" / "lib" / "modules" / self.abi

    @property
    def build_dir(self) -> Path:
        """The ``linux-headers-<abi>-amd64`` tree that ``make M=`` is pointed at."""
        return self.root / "headers" / "usr" / "src" / f"linux-headers-{self.abi}"

    @property
    def source_dir(self) -> Path:
        """Driver sources copied out of ``linux-source`` (e.g. ``i40e/``)."""
        return self.root / "src"

    def find_header(self, rel: str) -> Path | None:
        """A kernel header (``linux/etherdevice.h``) of the headers tree, or
        None where this kernel has none: Debian splits the tree into
        ``-amd64`` and ``-common``, a built kernel has one."""
        return next(self.root.glob(f"headers/usr/src/linux-headers-*/include/{rel}"), None)

    def header(self, rel: str) -> Path:
        """``find_header``, for a header every kernel has."""
        found = self.find_header(rel)
        if found is None:
            raise RuntimeError(f"{rel} is missing from the headers of {self.abi}")
        return found

    def kconfig(self, option: str) -> str | None:
        for line in self.config.read_text().splitlines():
            if line.startswith(option + "="):
                return line.split("=", 1)[1]
        return None


def extract_deb(deb: Path, dest: Path, members: tuple[str, ...] = ()) -> None:
    """Unpack ``deb`` into ``dest``; with ``members``, only paths starting so."""
    dest.mkdir(parents=True, exist_ok=True)
    fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert fsys.stdout is not None
    with tarfile.open(fileobj=fsys.stdout, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if members and not any(name.startswith(m) for m in members):
                continue
            tar.extract(member, dest, filter="tar")
    if fsys.wait() != 0:
        raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed")


def _resolve(line: KernelLine) -> tuple[str, str]:
    """The ABI and package version of ``line``: what ``linux-image-<flavour>``
    (``-amd64``, ``-arm64``, ``-arm64-16k``) of its suite depends on, or,
    once that moved on to a newer upstream release (backports do), the
    newest ``linux-image-<release>.N...-<flavour>``."""
    apt = line.apt()
    apt.update()
    flavour = line.image_flavour
    release = line.name.split("-")[0]
    deps = [d for d in apt.depends(f"linux-image-{flavour}") if d.startswith("linux-image-")]
    if not deps:
        raise RuntimeError(f"linux-image-{flavour} in {line.apt_name} depends on no kernel image")
    image = deps[0]
    if not image.startswith(f"linux-image-{release}."):
        named = apt.search_names(rf"^linux-image-{re.escape(release)}\.[0-9.+a-z~-]*-{re.escape(flavour)}$")
        if not named:
            raise RuntimeError(f"{line.apt_name} has no linux-image-{release}.*-{flavour}")
        image = max(named, key=lambda n: _Version(apt.candidate(n) or "0"))
    abi = image.removeprefix("linux-image-")
    version = apt.candidate(image)
    if version is None:
        raise RuntimeError(f"{image} has no candidate version")
    return abi, version


class _Version(str):
    """A Debian version, ordered as dpkg orders them."""

    def __lt__(self, other: str) -> bool:
        return subprocess.run(["dpkg", "--compare-versions", self, "lt", other]).returncode == 0


def _fix_headers(k: Kernel, headers_root: Path) -> None:
    """Point the headers' Makefiles at the unpacked tree instead of /usr/src."""
    src = headers_root / "usr" / "src"
    for mk in src.glob("linux-headers-*/Makefile"):
        text = mk.read_text()
        fixed = text.replace("/usr/src/", f"{src}/")
        if fixed != text:
            mk.write_text(fixed)
    # linux-headers-<abi>-amd64/scripts and tools link to ../../lib/linux-kbuild-X,
    # a relative path that resolves inside headers_root as unpacked.


def _extract_source(deb: Path, k: Kernel, scratch: Path) -> None:
    """Copy ``SOURCE_DIRS`` out of the ``linux-source`` package into ``k.source_dir``."""
    extract_deb(deb, scratch, ("usr/src/",))
    tarballs = list((scratch / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise RuntimeError(f"{deb} holds no linux-source tarball")
    with tarfile.open(tarballs[0], mode="r|*") as tar:
        for member in tar:
            _, _, rel = member.name.partition("/")
            for want in SOURCE_DIRS:
                if rel.startswith(want) and member.isfile():
                    out = k.source_dir / rel[len(INTEL_DIR):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as f, open(out, "wb") as o:  # type: ignore[union-attr]
                        shutil.copyfileobj(f, o)


def _decompress_modules(modules_dir: Path) -> None:
    """Unpack ``.ko.xz`` in place so busybox insmod and drgn both read them."""
    for xz in modules_dir.rglob("*.ko.xz"):
        with lzma.open(xz) as f, open(xz.with_suffix(""), "wb") as o:
            shutil.copyfileobj(f, o)
        xz.unlink()


def _complete_sources(k: Kernel) -> None:
    """Copy the ``SOURCE_DIRS`` an older unpacked kernel lacks (the list
    grew) out of its cached ``linux-source`` package."""
    if all((k.source_dir / Path(d).name).is_dir() for d in SOURCE_DIRS):
        return
    release = k.line.split("-")[0]
    deb = next((cache_dir() / "debs" / k.version).glob(f"linux-source-{release}_*.deb"), None)
    if deb is None:
        raise RuntimeError(f"linux-source-{release} is missing from the cache; remove {k.root} to fetch it again")
    scratch = k.root / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(k.source_dir, ignore_errors=True)
    _extract_source(deb, k, scratch)
    shutil.rmtree(scratch)


def _one_of(*paths: Path) -> Path:
    found = next((p for p in paths if p.exists()), None)
    if found is None:
        raise RuntimeError("the kernel packages hold none of " + ", ".join(map(str, paths)))
    return found


def debian_line(line_name: str) -> KernelLine:
    """A Debian line, or the one a built line builds from."""
    return KERNEL_LINES[BUILT_LINES[line_name].base if line_name in BUILT_LINES else line_name]


def fetch(line_name: str, log=print) -> Kernel:
    """Download and unpack kernel line ``line_name`` ("5.10", "6.1", "6.12"),
    or build one of ``BUILT_LINES`` from its Debian line's source."""
    if line_name in BUILT_LINES:
        from .kernel_build import build_kernel
        built = BUILT_LINES[line_name]
        return build_kernel(built, fetch(built.base, log=log), log=log)
    if line_name not in KERNEL_LINES:
        known = ", ".join([*KERNEL_LINES, *BUILT_LINES])
        raise KeyError(f"unknown kernel line {line_name!r}; known: {known}")
    line = KERNEL_LINES[line_name]
    pinned = cache_dir() / "kernels" / line_name / "resolved"
    if pinned.exists():
        abi, version = pinned.read_text().split()
    else:
        abi, version = _resolve(line)
    k = Kernel(line_name, abi, version, cache_dir() / "kernels" / line_name / version)
    if (k.root / ".complete").exists():
        _complete_sources(k)
        return k
    k.root.parent.mkdir(parents=True, exist_ok=True)
    # one fetch of a kernel at a time: another process would remove the tree this one unpacks
    with lock.exclusive(k.root.with_name(k.root.name + ".lock"),
                        lambda: log(f"[{line_name}] waiting for another fetch of {abi}")):
        if (k.root / ".complete").exists():
            _complete_sources(k)
            return k
        return _download(line_name, line, k, pinned, log)


def _download(line_name: str, line: KernelLine, k: Kernel, pinned: Path, log) -> Kernel:
    """Download and unpack ``k`` (the caller holds its lock)."""
    abi, version = k.abi, k.version
    apt = line.apt()
    apt.update()
    debs = cache_dir() / "debs" / version
    if k.root.exists():
        shutil.rmtree(k.root)
    k.root.mkdir(parents=True)

    log(f"[{line_name}] fetching {abi} ({version})")
    # from 7.x the image package is empty and depends on linux-binary-<abi>
    # (vmlinuz), linux-modules-<abi> and linux-base-<abi> (config): take
    # every package of this ABI it depends on, and find the files by path
    images = [apt.download(name, version, debs) for name in
              [f"linux-image-{abi}", *(d for d in apt.depends(f"linux-image-{abi}") if d.endswith(f"-{abi}"))]]
    dbg = apt.download(f"linux-image-{abi}-dbg", version, debs)
    headers = apt.download(f"linux-headers-{abi}", version, debs)
    common_name = next(d for d in apt.depends(f"linux-headers-{abi}") if d.endswith("-common"))
    common = apt.download(common_name, version, debs)
    kbuild_name = next(d for d in apt.depends(f"linux-headers-{abi}") if d.startswith("linux-kbuild-"))
    host = line.host_apt()          # kbuild's tools run here: this machine's build of them
    host.update()
    kbuild = host.download(kbuild_name, host.candidate(kbuild_name) or version, debs)
    source_name = "linux-source-" + line_name.split("-")[0]
    source = apt.download(source_name, apt.candidate(source_name) or version, debs)

    log(f"[{line_name}] unpacking image and modules")
    scratch = k.root / "scratch"
    for image in images:
        extract_deb(image, scratch, ("boot/", "lib/modules/", "usr/lib/modules/"))
    mod_dirs = (scratch / "lib" / "modules" / abi, scratch / "usr" / "lib" / "modules" / abi)
    shutil.move(_one_of(scratch / "boot" / f"vmlinuz-{abi}", *(d / "vmlinuz" for d in mod_dirs)), k.vmlinuz)
    shutil.move(_one_of(scratch / "boot" / f"config-{abi}", *(d / "config" for d in mod_dirs)), k.config)
    mods = _one_of(*mod_dirs)
    k.modules_dir.parent.mkdir(parents=True)
    shutil.move(mods, k.modules_dir)
    _decompress_modules(k.modules_dir)
    subprocess.run(["depmod", "-b", str(k.modules_root), abi], check=True)

    log(f"[{line_name}] unpacking debug info")
    dbg_prefix = "usr/lib/debug/"
    # 7.x: boot/vmlinux-<abi> is a link to lib/modules/<abi>/vmlinux
    members = ["usr/lib/debug/boot/", f"{dbg_prefix}lib/modules/{abi}/vmlinux"] + [
        f"{dbg_prefix}lib/modules/{abi}/kernel/{d}" for d in DEBUG_MODULE_DIRS
    ]
    extract_deb(dbg, k.root / "dbg", tuple(members))

    log(f"[{line_name}] unpacking headers and driver sources")
    for deb in (headers, common, kbuild):
        extract_deb(deb, k.root / "headers")
    _fix_headers(k, k.root / "headers")
    _extract_source(source, k, scratch)
    shutil.rmtree(scratch)

    pinned.write_text(f"{abi} {version}\n")
    (k.root / ".complete").touch()
    log(f"[{line_name}] ready in {k.root}")
    return k
