"""Tools of another Debian suite, for kernels this machine's tools do not know:
a compiler run in a chroot, and a makedumpfile for the capture kernel.

Fact: Kbuild compiles an external module with the flags the kernel was
configured with, and a kernel's headers name their compiler's version in
``CONFIG_GCC_VERSION``.  Debian's 7.x backports were configured by
trixie's gcc 14, whose flags (``-fmin-function-alignment=16``) bookworm's
gcc 12 rejects.  Their ``linux-kbuild`` tools (``modpost``, ``objtool``)
are also linked against trixie's glibc 2.41.  So a module for them is
built by trixie's own gcc, make and glibc: the packages and their
dependencies are unpacked (never installed: no maintainer script runs)
into a root under the cache, and ``make`` runs chrooted there, in a mount
namespace of its own with ``/proc`` mounted (objtool reads it) and each
host path the build reads bound at the same path inside.  Nothing is
weakened: the compiler is the one the kernel was built with.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from .apt import PrivateApt
from . import lock
from .cache import cache_dir
from .arch import GuestArch
from .kernels import Kernel, extract_deb

#: what Kbuild runs for an external module (``make M=``), on top of which
#: apt adds the dependencies; ``coreutils``, ``sed`` and the shells are
#: Essential in Debian and so named by nothing
PACKAGES = ("make", "libc6-dev", "binutils", "bash", "dash", "coreutils", "sed", "grep", "mawk",
            "findutils", "diffutils", "libelf1t64")


def gcc_major(k: Kernel) -> int:
    """The major version of the gcc that configured ``k``, from its
    headers' ``CONFIG_GCC_VERSION`` (140200 for gcc 14.2.0)."""
    config = next(k.root.glob("headers/usr/src/linux-headers-*/.config"), None)
    m = re.search(r"^CONFIG_GCC_VERSION=(\d+)$", config.read_text() if config else "", re.M)
    if not m:
        raise RuntimeError(f"the headers of {k.abi} name no gcc version (CONFIG_GCC_VERSION)")
    return int(m.group(1)) // 10000


def host_gcc_major() -> int:
    return int(subprocess.run(["gcc", "-dumpversion"], capture_output=True, text=True, check=True)
               .stdout.split(".")[0])


def machine_suite() -> str:
    """This machine's Debian suite (``VERSION_CODENAME``: bookworm)."""
    text = Path("/etc/os-release").read_text()
    m = re.search(r"^VERSION_CODENAME=(\S+)$", text, re.M)
    if not m:
        raise RuntimeError("/etc/os-release names no VERSION_CODENAME")
    return m.group(1)


def toolchain_for(k: Kernel, suite: str | None, log=print) -> "Toolchain | None":
    """The toolchain a module for ``k`` is built with: None (this machine's
    gcc) unless ``k`` was configured by a newer gcc than this machine's,
    which gcc rejects flags of; then ``suite``'s own gcc of that version.
    (An older kernel's flags are all known to a newer gcc: 5.10, configured
    by gcc 10, builds with gcc 12.)"""
    major = gcc_major(k)
    if not k.arch.native:       # a cross compiler: the suite's own, or this machine's suite's
        return CrossToolchain(suite if major > host_gcc_major() else machine_suite(), k.arch).ensure(log)
    if major <= host_gcc_major():
        return None
    if suite is None:
        raise RuntimeError(f"{k.abi} was configured by gcc {major}, newer than this machine's, "
                           f"and its kernel line names no suite to take gcc-{major} from")
    return Toolchain(suite, f"gcc-{major}").ensure(log)


class SuiteRoot:
    """A Debian suite's ``packages`` and everything they depend on (as on an
    empty system: the suite's own libc comes too), unpacked -- never
    installed, no maintainer script runs -- into ``cache_dir()/roots``."""

    packages: tuple[str, ...] = ()

    def __init__(self, suite: str, name: str):
        self.suite = suite
        self.root = cache_dir() / "roots" / f"{suite}-{name}"

    def ensure(self, log=print):
        if (self.root / ".complete").exists():
            return self
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with lock.exclusive(self.root.with_name(self.root.name + ".lock"),
                            lambda: log(f"[{self.suite}] waiting for another unpacking of {self.root}")):
            if not (self.root / ".complete").exists():
                self._unpack(log)
        return self

    def _unpack(self, log) -> None:
        """Unpack the root (the caller holds its lock)."""
        log(f"[{self.suite}] unpacking {' '.join(self.packages[:1])} and what it needs into {self.root}")
        apt = self.apt()
        apt.update()
        debs = apt.download_closure(list(self.packages), cache_dir() / "debs" / f"root-{self.root.name}")
        subprocess.run(["rm", "-rf", str(self.root)], check=True)
        # merged /usr (Debian 12+): /bin, /lib... are links into /usr
        for top in ("bin", "sbin", "lib", "lib64"):
            (self.root / "usr" / top).mkdir(parents=True, exist_ok=True)
            (self.root / top).symlink_to(f"usr/{top}")
        for deb in debs:
            extract_deb(deb, self.root)
        self.finish()
        self.check()
        (self.root / ".complete").touch()

    def apt(self) -> PrivateApt:
        """Where the packages come from: the suite, for this machine."""
        return PrivateApt(self.suite, [("debian", self.suite)])

    def finish(self) -> None:
        """What maintainer scripts would have made."""

    def check(self) -> None:
        """Raise unless the root's tools run here."""


class Toolchain(SuiteRoot):
    """``suite``'s ``gcc-N`` and build tools, run chrooted (``run``)."""

    def __init__(self, suite: str, compiler: str):
        super().__init__(suite, compiler)
        self.compiler = compiler
        self.packages = (compiler, *PACKAGES)

    def finish(self) -> None:
        (self.root / "usr" / "bin" / "awk").symlink_to("mawk")      # an alternative
        for d in ("proc", "tmp"):
            (self.root / d).mkdir(exist_ok=True)

    def check(self) -> None:
        check = self.run([self.compiler, "--version"], binds=())
        if check.returncode != 0:
            raise RuntimeError(f"{self.compiler} does not run in {self.root}: {check.stderr.strip()[-500:]}")

    def run(self, argv: list[str], binds: tuple[Path, ...], cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` chrooted in the toolchain, each of ``binds`` (host
        directories) seen at its own path inside."""
        script = [f"mount --make-rprivate / && mount -t proc proc {shlex.quote(str(self.root / 'proc'))}"]
        for path in binds:
            inside = self.root / str(path.resolve()).lstrip("/")
            script.append(f"mkdir -p {shlex.quote(str(inside))} && "
                          f"mount --bind {shlex.quote(str(path.resolve()))} {shlex.quote(str(inside))}")
        chdir = f"cd {shlex.quote(str(cwd.resolve()))} && " if cwd else ""
        script.append(f"exec chroot {shlex.quote(str(self.root))} /bin/sh -c "
                      + shlex.quote(chdir + " ".join(map(shlex.quote, argv))))
        return subprocess.run(["unshare", "--mount", "--pid", "--fork", "sh", "-c", " && ".join(script)],
                              capture_output=True, text=True)


class CrossToolchain(Toolchain):
    """``suite``'s cross compiler for ``arch`` (``arch.GuestArch``:
    ``gcc-aarch64-linux-gnu``) and build tools, run chrooted like a
    ``Toolchain``: a module for an arm64 kernel is built here with
    ``ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-``, by the suite's gcc
    the kernel was built with, against the arm64 headers and this
    machine's build of their ``linux-kbuild`` tools."""

    def __init__(self, suite: str, arch: GuestArch):
        SuiteRoot.__init__(self, suite, arch.cross_package)
        self.compiler = f"{arch.cross_compile}gcc"
        self.packages = (arch.cross_package, *(p for p in PACKAGES if p != "libelf1t64"), "libelf1")


class CaptureTools(SuiteRoot):
    """``suite``'s ``makedumpfile``, for a capture kernel whose memory layout
    the machine's own makedumpfile does not know.

    Fact: ``makedumpfile -d 31`` drops pages by what their ``struct page``
    says (free, cache, user, zero), read by the rules of the kernel versions
    it knows; bookworm's 1.7.2 misreads 7.x's (it dropped page tables and
    ring pages of a 7.3 core).  makedumpfile calls no other program, so it
    runs under its own root's dynamic loader and libraries, no chroot
    needed, in the capture kernel as on the host."""

    packages = ("makedumpfile",)

    def __init__(self, suite: str):
        super().__init__(suite, "makedumpfile")

    def command(self) -> list[str]:
        libs = ":".join(str(self.root / d) for d in ("usr/lib/x86_64-linux-gnu", "usr/lib"))
        return [str(self.root / "usr/lib64/ld-linux-x86-64.so.2"), "--library-path", libs,
                str(self.root / "usr/bin/makedumpfile")]

    def check(self) -> None:
        proc = subprocess.run([*self.command(), "-v"], capture_output=True, text=True)
        if "makedumpfile" not in proc.stdout + proc.stderr:
            raise RuntimeError(f"makedumpfile does not run from {self.root}: {proc.stderr.strip()[-500:]}")
