"""The QEMU the sample-core guests run on: one that emulates igb.

The guests carry the NICs whose rx rings the tool walks: virtio-net, e1000e
and igb (Intel 82576).  QEMU emulates igb from 8.0 on; Debian 12's own QEMU
is 7.2.  When the machine's ``qemu-system-x86_64`` has no igb, we take QEMU
from bookworm-backports through the private apt configuration (the mirror
comes from the machine's own sources, see ``apt.py``) and unpack it into the
cache, never into the system:

* ``qemu-system-x86``, ``-common``, ``-data`` and ``seabios`` are unpacked;
  the shared libraries they link against are bookworm's, which the system
  QEMU package already installed;
* the binary's built-in module and firmware paths point at the system
  QEMU's files, which are of another build, so ``QEMU_MODULE_DIR`` and
  ``-L`` point it at the unpacked ones, and the guests run with
  ``-display none -audio none`` so no display or audio module is loaded.

``VMCT_QEMU=/path/to/qemu-system-x86_64`` uses that binary as it is.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .apt import PrivateApt
from . import lock
from .arch import ARCHES, GuestArch
from .cache import cache_dir
from .kernels import extract_deb

#: packages unpacked from bookworm-backports when the system QEMU lacks igb
BACKPORT_PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios")
#: the device that makes the system QEMU too old
REQUIRED_DEVICE = "igb"


class QemuError(RuntimeError):
    pass


@dataclass(frozen=True)
class Qemu:
    binary: Path
    data_dirs: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """The binary and the options every guest gets (firmware paths)."""
        out = [str(self.binary)]
        for d in self.data_dirs:
            out += ["-L", str(d)]
        return out

    def guest_options(self) -> list[str]:
        """No display and no audio: nothing that would load a QEMU module."""
        return ["-display", "none"] + (["-audio", "none"] if self.version >= (8, 2) else [])

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.argv(), *args], capture_output=True, text=True,
                              env=self.environ())

    @functools.cached_property
    def version(self) -> tuple[int, int]:
        out = self._run("--version").stdout
        try:
            major, minor = out.split("version ")[1].split(".")[:2]
        except IndexError:
            raise QemuError(f"{self.binary} --version said {out.strip()!r}") from None
        return int(major), int(minor)

    def has_device(self, name: str) -> bool:
        """Whether this QEMU emulates device ``name``.  (``-device NAME,help``,
        not ``-device help``: listing every device loads every module, and
        the system's modules are of another build.)"""
        proc = self._run("-nodefaults", "-display", "none", "-device", f"{name},help")
        return proc.returncode == 0 and "not found" not in proc.stderr


def _system(arch: GuestArch = ARCHES["amd64"]) -> Qemu | None:
    path = shutil.which(arch.qemu_binary)
    return Qemu(Path(path)) if path else None


def _missing_libraries(binary: Path) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def _backport(log, arch: GuestArch = ARCHES["amd64"]) -> Qemu:
    """QEMU from bookworm-backports, unpacked once under the cache (an
    arm64 guest's ``qemu-system-arm`` beside it, under a name of its own)."""
    base = cache_dir() / "qemu"
    apt = PrivateApt("bookworm-backports", [("debian", "bookworm-backports")])
    suffix = "" if arch.native else f"-{arch.name}"
    pinned = base / f"resolved{suffix}"
    if pinned.exists():
        version = pinned.read_text().strip()
    else:
        apt.update()
        version = apt.candidate(arch.qemu_package) or ""
        if not version:
            raise QemuError(f"bookworm-backports has no {arch.qemu_package}")
    root = base / (version.replace(":", "_") + suffix)
    if not (root / ".complete").exists():
        base.mkdir(parents=True, exist_ok=True)
        with lock.exclusive(root.with_name(root.name + ".lock"),
                            lambda: log(f"[qemu] waiting for another unpacking of QEMU {version}")):
            if not (root / ".complete").exists():
                _unpack(apt, version, root, log, arch)
        pinned.write_text(version + "\n")
    usr = root / "root" / "usr"
    binary = usr / "bin" / arch.qemu_binary
    missing = _missing_libraries(binary)
    if missing:
        raise QemuError(f"QEMU {version} from bookworm-backports needs libraries this machine "
                        f"lacks ({', '.join(missing)}); install qemu-system-x86 first")
    return Qemu(binary, (usr / "share" / "seabios", usr / "share" / "qemu"),
                {"QEMU_MODULE_DIR": str(usr / "lib" / "x86_64-linux-gnu" / "qemu")})


def _unpack(apt: PrivateApt, version: str, root: Path, log, arch: GuestArch = ARCHES["amd64"]) -> None:
    """Unpack QEMU ``version`` from bookworm-backports into ``root`` (the caller holds its lock)."""
    log(f"[qemu] the system QEMU has no {REQUIRED_DEVICE}: unpacking QEMU {version} "
        "from bookworm-backports")
    apt.update()
    shutil.rmtree(root, ignore_errors=True)
    packages = BACKPORT_PACKAGES if arch.native else (arch.qemu_package, *BACKPORT_PACKAGES[1:])
    for package in packages:
        v = version if package.startswith("qemu-") else apt.candidate(package)
        if v is None:
            raise QemuError(f"bookworm-backports has no {package}")
        extract_deb(apt.download(package, v, cache_dir() / "debs" / "qemu"), root / "root")
    (root / ".complete").touch()


_chosen: dict[str, Qemu] = {}


def qemu(log=print, arch: str = "amd64") -> Qemu:
    """The QEMU for sample-core guests of ``arch``: ``$VMCT_QEMU`` (amd64),
    else the system's if it emulates igb, else bookworm-backports' (unpacked
    into the cache)."""
    if arch not in _chosen:
        a = ARCHES[arch]
        if a.native and (override := os.environ.get("VMCT_QEMU")):
            _chosen[arch] = Qemu(Path(override))
        elif (system := _system(a)) is not None and system.has_device(REQUIRED_DEVICE):
            _chosen[arch] = system
        else:
            _chosen[arch] = _backport(log, a)
    return _chosen[arch]
