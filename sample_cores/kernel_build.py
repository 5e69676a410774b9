"""Kernels we build ourselves, for what no Debian kernel has.

Debian's configs (5.10, 6.1, 6.12) all say ``# CONFIG_PAGE_OWNER is not
set``, so the page_owner reader needs a kernel of our own.  A built line
takes the ``linux-source`` package of a Debian line (the same source as its
kernel), configures it with ``allnoconfig`` plus its fragments from
``kernel_configs/``, and builds it with DWARF: a small kernel that builds in
minutes on two cores.

The result is laid out like an unpacked Debian kernel (``kernels.Kernel``):
``vmlinuz``, ``config``, a module tree with ``depmod`` run on it, the
vmlinux with its debug info under ``dbg/``, the built tree itself as the
headers that ``make M=`` is pointed at, and the Intel drivers' headers in
``src/``.  VMs, test modules and drgn take it unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from . import lock
from .cache import cache_dir
from .kernels import SOURCE_DIRS, BuiltLine, Kernel, extract_deb

CONFIGS = Path(__file__).resolve().parent / "kernel_configs"


def _local_version(fragment: str) -> str:
    for line in fragment.splitlines():
        if line.startswith("CONFIG_LOCALVERSION="):
            return line.split("=", 1)[1].strip('"')
    return ""


def _run(cmd: list[str], cwd: Path, what: str, log_file: Path) -> None:
    with open(log_file, "a") as out:
        if subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            raise RuntimeError(f"{what} failed; see {log_file}")


def build_kernel(line: BuiltLine, base: Kernel, log=print) -> Kernel:
    """Build (once) the kernel of ``line`` from ``base``'s linux-source."""
    fragment = b"".join((CONFIGS / name).read_bytes() for name in line.fragments)
    digest = hashlib.sha256(fragment).hexdigest()[:10]
    version = f"{base.version}+{digest}"
    root = cache_dir() / "kernels" / line.name / version
    stamp = root / ".complete"
    if stamp.exists():
        return Kernel(line.name, stamp.read_text().strip(), version, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with lock.exclusive(root.with_name(root.name + ".lock"),
                        lambda: log(f"[{line.name}] waiting for another build of {version}")):
        if stamp.exists():
            return Kernel(line.name, stamp.read_text().strip(), version, root)
        return _build(line, base, fragment, version, root, log)


def _build(line: BuiltLine, base: Kernel, fragment: bytes, version: str, root: Path, log) -> Kernel:
    """Unpack ``base``'s source and build ``line``'s kernel in ``root`` (the caller holds its lock)."""
    stamp = root / ".complete"
    debs = cache_dir() / "debs" / base.version
    source_deb = next(debs.glob(f"linux-source-{base.line}_*.deb"), None)
    if source_deb is None:
        raise RuntimeError(f"linux-source-{base.line} is missing from {debs}")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.time()

    log(f"[{line.name}] unpacking linux-source-{base.line} ({base.version})")
    scratch = root / "scratch"
    extract_deb(source_deb, scratch, ("usr/src/",))
    tarball = next((scratch / "usr" / "src").glob("linux-source-*.tar.*"))
    with tarfile.open(tarball, mode="r|*") as tar:
        tar.extractall(scratch, filter="tar")
    tree = next(p for p in scratch.iterdir() if p.name.startswith("linux-source-"))
    kernelversion = subprocess.run(["make", "-s", "kernelversion"], cwd=tree, capture_output=True,
                                   text=True, check=True).stdout.strip()
    abi = kernelversion + _local_version(fragment.decode())
    k = Kernel(line.name, abi, version, root)
    k.build_dir.parent.mkdir(parents=True)
    tree.rename(k.build_dir)
    shutil.rmtree(scratch)

    build_log = root / "build.log"
    jobs = str((os.cpu_count() or 1) + 1)
    names = " + ".join(line.fragments)
    log(f"[{line.name}] building {abi} (allnoconfig + {names}, make -j{jobs}); log: {build_log}")
    allconfig = root / "allconfig"
    allconfig.write_bytes(fragment)
    _run(["make", f"KCONFIG_ALLCONFIG={allconfig}", "allnoconfig"], k.build_dir, "make allnoconfig", build_log)
    missing = _missing_options(fragment.decode(), k.build_dir)
    if missing:
        raise RuntimeError(f"{names}: the configured kernel lacks {', '.join(missing)}")
    _run(["make", f"-j{jobs}", "bzImage", "modules"], k.build_dir, "make bzImage modules", build_log)
    release = subprocess.run(["make", "-s", "kernelrelease"], cwd=k.build_dir, capture_output=True,
                             text=True, check=True).stdout.strip()
    if release != abi:
        raise RuntimeError(f"built kernel says {release!r}, expected {abi!r}")

    _run(["make", f"INSTALL_MOD_PATH={k.modules_root}", "modules_install"], k.build_dir,
         "make modules_install", build_log)
    for link in ("build", "source"):    # they point at the build tree; nothing reads them
        (k.modules_dir / link).unlink(missing_ok=True)
    shutil.copy(k.build_dir / "arch" / "x86" / "boot" / "bzImage", k.vmlinuz)
    shutil.copy(k.build_dir / ".config", k.config)
    k.vmlinux.parent.mkdir(parents=True)
    shutil.copy(k.build_dir / "vmlinux", k.vmlinux)
    k.debug_modules_dir.mkdir(parents=True)
    for want in SOURCE_DIRS:
        shutil.copytree(k.build_dir / want, k.source_dir / Path(want).name)
    _trim(k.build_dir)
    stamp.write_text(abi + "\n")
    log(f"[{line.name}] {abi} built in {time.time() - t0:.0f}s: {root}")
    return k


def _missing_options(fragment: str, tree: Path) -> list[str]:
    """``CONFIG_X=y`` lines of the fragment that the configured kernel in
    ``tree`` lacks (a dependency missing from the fragment drops an option
    silently).  An option this kernel's Kconfig does not define is not
    missing: a fragment of the line supplies what stands for it there
    (``DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT`` is ``DEBUG_INFO`` before 5.18)."""
    have = set((tree / ".config").read_text().splitlines())
    wanted = [line for line in fragment.splitlines()
              if line.startswith("CONFIG_") and line.endswith("=y") and line not in have]
    if not wanted:
        return []
    defined = set()
    for kconfig in tree.rglob("Kconfig*"):
        defined.update(re.findall(r"^\s*(?:menu)?config\s+(\w+)", kconfig.read_text(errors="replace"), re.M))
    return [line for line in wanted if line.split("=")[0].removeprefix("CONFIG_") in defined]


#: What ``make M=`` needs of a built tree (besides its top-level files:
#: Makefile, .config, Module.symvers): configuration and generated headers,
#: the host tools (fixdep, modpost, objtool), and x86's Makefile and headers.
KEEP_FOR_MODULES = ("include", "scripts", "tools", "arch/x86")


def _trim(tree: Path) -> None:
    """Reduce the built tree to what out-of-tree module builds need, as
    Debian's headers packages do: the sources and objects of the kernel
    itself are most of its 1.6 GB."""
    keep = {Path(k) for k in KEEP_FOR_MODULES}
    for path in tree.iterdir():
        rel = path.relative_to(tree)
        if not path.is_dir() or rel in keep:
            continue
        if any(k.is_relative_to(rel) for k in keep):     # arch/: keep arch/x86 only
            for sub in path.iterdir():
                if sub.is_dir() and sub.relative_to(tree) not in keep:
                    shutil.rmtree(sub)
            continue
        shutil.rmtree(path)
    for path in tree.rglob("*.o"):
        if "scripts" not in path.parts and "tools" not in path.parts:
            path.unlink()
    for name in ("vmlinux", "vmlinux.a"):
        (tree / name).unlink(missing_ok=True)
