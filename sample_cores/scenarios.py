"""Scenarios: a kernel, test modules, a workload and a way to take the dump.

``build(name, line)`` returns the directory that holds the core and its
``manifest.json`` (building it once; a cached build returns at once).
``live(name, line, command)`` boots the same guest and runs ``command``
inside it with the host's userspace, so tools can read ``/proc/kcore``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import lock, manifest
from .build_modules import DEFAULT_MODULES, build_modules
from .cache import cache_dir
from .guest_root import guest_root_of
from .initramfs import build_initramfs
from .kernels import BUILT_LINES, KERNEL_LINES, Kernel, debian_line, fetch
from .qemu import qemu
from .toolchain import CaptureTools
from .vm import Guest, GuestHung, GuestSpec, KernelDied, Machine, VMError

GUEST_DIR = Path(__file__).resolve().parent / "guest"
REPO = GUEST_DIR.parent.parent
#: seconds a wait after the guest's first mark may take (the balloon, the
#: capture kernel, a live command)
BOOT_TIMEOUT = 900
#: boots tried when the guest kernel dies on its own (see vm.KernelDied)
BOOT_ATTEMPTS = 3
#: boots tried again when the guest hangs before its first mark
HUNG_RETRIES = 1
#: seconds a guest normally takes from QEMU's start to its first mark
#: (VMCT-READY, -CRASHING or -LIVE-START) under TCG on 2 cores, as a fixed part
#: and a part per GB of guest memory, by what sets its pace (``boot_kind``).
#: Measured in the guests' own clocks at their mark in a cold ``make test``
#: (session 28's cores): the 1 GB workload guests 54 to 86 s (one of them
#: 134 s, on a loaded machine), kdump's 1.25 GB 69 s, hosts' 1.5 GB 86 s;
#: without a workload 17 to 22 s; the seed 101 s at 1 GB; the built kernels'
#: whole build 16 to 18 s.  benchmarks/RESULTS.md: the seed builds in 219 s on
#: 7.3 (beside a cold run), 223 to 402 s at 4 GB and 806 s at 16 GB.
EXPECTED_BOOT: dict[str, tuple[float, float]] = {
    "built kernel": (10, 5),
    "no workload": (10, 10),
    "workload": (25, 45),
    "seed": (60, 50),
    "slab fill": (60, 60),
}
#: a guest that takes this many times its expected figure is taken for hung
BOOT_MULTIPLIER = 4
#: and not before this many seconds: short boots vary most
BOOT_FLOOR = 120
#: added to the kernel command line of a boot made to hang (``$VMCT_HANG_BOOTS``):
#: the kernel runs busybox's ``sleep`` as PID 1 instead of the initramfs's
#: /init, so init.sh never runs and no mark comes
HANG_CMDLINE = "rdinit=/bin/busybox -- sleep 86400"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    module_params: dict[str, str] = field(default_factory=dict)
    mode: str = "dump"          # "dump" (QMP ELF) or "kdump" (kexec + makedumpfile)
    memory_mb: int = 1024
    #: sizes for workload.py (``page_cache``, ``anon``, ``shmem``, in MB); its defaults where empty
    workload_mb: dict[str, int] = field(default_factory=dict)
    #: False: the workload only records the net devices (a small kernel has
    #: no disk, netns or veth for the rest)
    workload: bool = True
    #: added to the guest kernel's command line
    cmdline: str = ""
    #: kernel lines it runs on; the Debian ones where empty
    kernels: tuple[str, ...] = ()
    #: the ``modules/`` directories whose test modules it loads, in order
    modules: tuple[str, ...] = DEFAULT_MODULES
    #: the guest's hardware where it is not the default PC (vm.Machine); in
    #: the core's key only where set, so the other scenarios keep theirs
    machine: Machine = field(default=Machine(), repr=False)
    #: the guest loads a kernel for kexec (``kexec -l``, the running kernel
    #: and its initramfs) before the dump; in the key only where set
    kexec_load: bool = field(default=False, repr=False)
    #: drivers whose net devices the guest enslaves to an active-backup bond
    #: (bond0, which carries its first slave's address); in the key only where set
    bond: tuple[str, ...] = field(default=(), repr=False)
    #: the architectures whose Debian lines it runs on where ``kernels`` is
    #: empty; not in the key (a line is of one architecture)
    arches: tuple[str, ...] = field(default=("amd64",), repr=False)
    #: test modules loaded from a memory cgroup of their own (vmct-<module>):
    #: the page cache and shmem pages they allocate are charged to it and sit
    #: alone on its LRU lists; in the key only where set
    memcg: tuple[str, ...] = field(default=(), repr=False)

    def key_extras(self) -> tuple:
        """What of the scenario enters a core's key beyond its repr."""
        return (((self.machine,) if self.machine != Machine() else ()) + (("kexec -l",) if self.kexec_load else ())
                + ((("bond",) + self.bond,) if self.bond else ()) + ((("memcg",) + self.memcg,) if self.memcg else ()))

    @property
    def kernel_lines(self) -> tuple[str, ...]:
        return self.kernels or tuple(sorted(n for n, line in KERNEL_LINES.items() if line.arch in self.arches))

    @property
    def disk_mb(self) -> int:
        """The scratch disk holds the page-cache file."""
        return max(256, self.workload_mb.get("page_cache", 0) + 128)


def _scaled(gb: int, mode: str = "dump") -> Scenario:
    """A benchmark guest of ``gb`` GB with a quarter of its memory in page
    cache, a quarter in anon and 1/16 in shmem (the rest is kernel and free).
    Above 8 GB the workload stays at the 8 GB guest's, the rest is free:
    filling memory under TCG takes minutes, and init.sh waits 5 for it.
    A kdump guest has 256 MB more, what ``crashkernel=256M`` reserves."""
    mb = gb * 1024
    filled = min(mb, 8192)
    what = "half of it page cache and anon" if filled == mb else "4 GB of it page cache and anon"
    return Scenario(f"scale-{gb}g{'-kdump' if mode == 'kdump' else ''}",
                    f"benchmark guest of {gb} GB, {what}, i40e leak planted"
                    + (" (kdump, makedumpfile -c -d 31)" if mode == "kdump" else ""),
                    mode=mode, memory_mb=mb + (256 if mode == "kdump" else 0),
                    workload_mb={"page_cache": filled // 4, "anon": filled // 4, "shmem": filled // 16})


#: vmct_slabfill's MB per shape in the slab-heavy benchmark guests, by size
#: in GB: slab at more than half of RAM, the 4 GB guest's list the chain of
#: 16.7 M objects
SLAB_FILL_MB = {4: {"list_mb": 2048, "hash_mb": 256, "tree_mb": 128, "pages_mb": 64},
                16: {"list_mb": 4096, "hash_mb": 3072, "tree_mb": 1024, "pages_mb": 512}}


def _slab_heavy(gb: int, mode: str = "dump") -> Scenario:
    """A benchmark guest of ``gb`` GB whose slab holds more than half of its
    memory in 128-byte objects (vmct_slabfill: a long list, hash chains, a
    tree, page records), a thousand objects of each shape lost.  A kdump
    guest has 256 MB more, what ``crashkernel=256M`` reserves."""
    mb = SLAB_FILL_MB[gb]
    return Scenario(f"slab-{gb}g{'-kdump' if mode == 'kdump' else ''}",
                    f"benchmark: {gb} GB, more than half of it in 128-byte slab objects linked as a list, "
                    "hash chains, a tree and page records, 1000 objects of each shape lost (100 records)"
                    + (" (kdump, makedumpfile -c -d 31)" if mode == "kdump" else ""),
                    {"vmct_slabfill": " ".join(f"{k}={v}" for k, v in mb.items())}, workload=False,
                    modules=("vmct_slabfill",), mode=mode, memory_mb=gb * 1024 + (256 if mode == "kdump" else 0))


#: the kernels built here (kernels.BUILT_LINES): CONFIG_PAGE_OWNER and CONFIG_CMA
BUILT = ("5.10-page-owner", "6.1-page-owner", "6.12-page-owner", "7.3-page-owner")

SCENARIOS = {
    s.name: s for s in (
        Scenario("i40e-leak", "fake i40e rings with the 2.3.6 rx leak planted, a page lost after a "
                 "heap-held one (vmct_workload), pages owned without a plain pointer with a page lost in "
                 "each shape (vmct_shapes), blocks without __GFP_COMP and pages lost right after held "
                 "buffers (vmct_blocks), full workload",
                 {"vmct_workload": "split_leak=1"}, arches=("amd64", "arm64")),
        Scenario("no-leak", "the same guest with no page leaked",
                 {"fake_i40e": "order0_status=0 order1_status=0 fresh_status=0", "vmct_shapes": "leak=0",
                  "vmct_blocks": "leak=0"}, arches=("amd64", "arm64")),
        Scenario("i40e-leak-kdump", "the i40e leak, captured by a real kdump kernel "
                 "(makedumpfile -c -d 31)", {"vmct_workload": "split_leak=1"}, mode="kdump",
                 memory_mb=1280, arches=("amd64", "arm64")),
        Scenario("page-owner", "the i40e leak on a kernel built with CONFIG_PAGE_OWNER, booted "
                 "with page_owner=on; no workload, a two-page alloc_pages_exact() decoy, three pages whose "
                 "only pointer is a stale word in a kmalloc object's unused tail (vmct_slack: this kernel "
                 "does not zero objects it hands out)",
                 {"vmct_workload": "split_leak=1 exact_pair=1"},
                 workload=False, cmdline="page_owner=on", modules=("fake_i40e", "vmct_workload", "vmct_slack"),
                 kernels=BUILT),
        Scenario("cma", "DMA buffers from a 32 MB CMA area (cma=32M) kept and lost by a driver "
                 "(vmct_cma, on the device fake_i40e binds), on the built kernels (Debian's amd64 "
                 "kernels have no CMA), without page_owner; no workload",
                 workload=False, cmdline="cma=32M", modules=("fake_i40e", "vmct_cma"), kernels=BUILT),
        Scenario("released", "page-cache pages released by their owner (a shmem file truncated) while "
                 "a reference someone took on them stays, two of them pinned (FOLL_PIN's bias), and the "
                 "anonymous pages of a process that exited while GUP references on them stayed: "
                 "vmct_released, loaded from a memory cgroup of its own, so that its pages sit alone on that "
                 "memcg's LRU lists and their heads name them; no workload", workload=False,
                 modules=("vmct_released",), memcg=("vmct_released",),
                 arches=("amd64", "arm64")),
        Scenario("kfence", "KFENCE on (kfence.sample_interval=100, as distributions that enable it boot): "
                 "three pages held by objects KFENCE served, three whose only pointer sits in a KFENCE "
                 "object since freed (vmct_kfence); on the lines whose Debian kernels have CONFIG_KFENCE; "
                 "no workload", workload=False, cmdline="kfence.sample_interval=100", modules=("vmct_kfence",),
                 kernels=("6.12", "7.3")),
        Scenario("iommu", "the i40e-leak guest on a q35 machine with an emulated Intel IOMMU doing DMA "
                 "translation (intel_iommu=on, lazy invalidation): e1000e and igb map their rx and tx "
                 "buffers through it, so its root, context and page-table pages are live",
                 {"vmct_workload": "split_leak=1"}, cmdline="intel_iommu=on iommu.passthrough=0",
                 machine=Machine(early_args=("-machine", "q35", "-device", "intel-iommu,intremap=off"))),
        Scenario("pti", "the i40e-leak guest with page-table isolation forced on (pti=on): every mm has a "
                 "user PGD beside its kernel one, and the kernel keeps the user half's tables",
                 {"vmct_workload": "split_leak=1"}, cmdline="pti=on"),
        Scenario("hosts", "the i40e-leak guest shaped like a production host: two NUMA nodes, a DIMM "
                 "hot-added on node 1 (vmct_hosts keeps pages there and loses two), a virtio balloon "
                 "inflated by 128 MB, 256 MB of legacy pmem on node 1 (memmap=256M!896M: ZONE_DEVICE "
                 "pages, 16 MB of them an fsdax file the workload maps), 128 MB more on node 0 turned into "
                 "device DAX with its memmap on the device (16 MB of /dev/dax mapped), a kernel loaded for "
                 "kexec (kexec -l), two i40e ports in a bond",
                 {"vmct_workload": "split_leak=1"}, memory_mb=1280, modules=(*DEFAULT_MODULES, "vmct_hosts"),
                 machine=Machine(numa_nodes=2, dimm_mb=256, balloon_mb=128, pmem_mb=256, devdax_mb=128,
                                 i40e_ports=2),
                 kexec_load=True,
                 bond=("i40e",)),
        Scenario("high-memory", "the i40e-leak guest with a 256 MB DIMM at 512 GiB: the highest PFN is "
                 "past a hole of half a terabyte, where a host's memory far up the physical map puts it",
                 {"vmct_workload": "split_leak=1"}, machine=Machine(dimm_mb=256, dimm_at_gb=512)),
        Scenario("intel-family", "fake ixgbe, ixgbevf, igc, ice and iavf (before 6.10) rx rings of the "
                 "drivers' own types, five pages lost from each driver's rings; no workload",
                 workload=False, modules=("fake_intel",)),
        Scenario("seed", "the seed's shape: fake_i40e's 2.3.6 rx leak goes on until 60% of RAM is "
                 "lost, on the order-0 and order-1 rings; no workload",
                 {"fake_i40e": "leak_pct=60"}, workload=False, modules=("fake_i40e",)),
        *(Scenario(f"seed-{gb}g{'-kdump' if mode == 'kdump' else ''}",
                   f"benchmark: the seed's shape in {gb} GB, 60% of it leaked"
                   + (" (kdump, makedumpfile -c -d 31)" if mode == "kdump" else ""),
                   {"fake_i40e": "leak_pct=60"}, workload=False, modules=("fake_i40e",), mode=mode,
                   memory_mb=gb * 1024 + (256 if mode == "kdump" else 0))
          for gb in (4, 16) for mode in ("dump", "kdump")),
        # benchmarks only (benchmarks/scaling.py); no test builds them
        *(_scaled(gb, mode) for mode in ("dump", "kdump") for gb in (1, 4, 8, 16)),
        # benchmarks only (benchmarks/slab_bench.py)
        *(_slab_heavy(gb, mode) for gb in SLAB_FILL_MB for mode in ("dump", "kdump")),
    )
}
DEFAULT_SCENARIO = "i40e-leak"
DEFAULT_KERNEL = "6.1"


def boot_kind(sc: Scenario, line: str) -> str:
    """What sets the pace of ``sc``'s guest on ``line`` up to its first mark: a
    small built kernel boots in seconds; fake_i40e's ``leak_pct`` leaks page
    by page until that share of memory is gone; vmct_slabfill fills slab
    object by object; the workload fills memory."""
    if line in BUILT_LINES:
        return "built kernel"
    if "leak_pct=" in sc.module_params.get("fake_i40e", ""):
        return "seed"
    if "vmct_slabfill" in sc.modules:
        return "slab fill"
    return "workload" if sc.workload else "no workload"


def boot_bound(sc: Scenario, line: str) -> float:
    """Seconds after which ``sc``'s guest on ``line`` that has not reached its
    first mark is taken for hung: ``BOOT_MULTIPLIER`` times its expected figure
    (``EXPECTED_BOOT``, memory counted with the hot-added DIMM), at least
    ``BOOT_FLOOR``; ``$VMCT_BOOT_BOUND`` seconds where that is set."""
    if os.environ.get("VMCT_BOOT_BOUND"):
        return float(os.environ["VMCT_BOOT_BOUND"])
    fixed, per_gb = EXPECTED_BOOT[boot_kind(sc, line)]
    gb = (sc.memory_mb + sc.machine.dimm_mb) / 1024
    return max(BOOT_FLOOR, BOOT_MULTIPLIER * (fixed + per_gb * gb))


def _nics(arch: str = "amd64") -> tuple[str, ...]:
    nics = ["virtio-net-pci", "e1000e"]
    if qemu(arch=arch).has_device("igb"):
        nics.append("igb")
    return tuple(nics)


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    for path in sorted(GUEST_DIR.iterdir()):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


#: top-level directories the guest does not take from the host (initramfs.INIT)
HIDDEN_TOPS = ("tmp", "run", "mnt", "media")


def _cmdline(*extra: str, console: str = "ttyS0") -> str:
    return " ".join([f"console={console}", "panic=-1", *filter(None, extra)])


def _hidden(p: Path) -> bool:
    return len(p.parts) > 1 and p.parts[1] in HIDDEN_TOPS


def outermost(*paths: Path) -> list[str]:
    """``paths`` (symlinks resolved) less those inside another one of them."""
    real = sorted({str(p.resolve()) for p in paths})
    return [p for p in real if not any(p.startswith(q + "/") for q in real)]


def host_paths(*paths: Path) -> list[str]:
    """Of ``paths`` (symlinks resolved), those under a directory the guest
    hides (a clone in /tmp, a cache behind a link there): the guest binds
    them back from the host's root.  A path inside another one of the list
    is left out: binding the outer one brings it.  The links themselves are
    made again in the guest (``host_links``): a bind mount of a link would
    follow it inside the guest, before its target is there."""
    hidden = sorted({str(p.resolve()) for p in paths if _hidden(p.resolve())})
    return [p for p in hidden if not any(p.startswith(q + "/") for q in hidden)]


def host_links(*paths: Path) -> list[tuple[str, str]]:
    """(path as given, where it leads) for each of ``paths`` that the guest
    hides and that is not itself the real path (a symlink, or a directory
    under one): the guest makes the link after the binds."""
    out = set()
    for p in paths:
        given, real = Path(os.path.abspath(p)), p.resolve()
        if given != real and _hidden(given):
            out.add((str(given), str(real)))
    return sorted(out)


def guest_paths(live_cwd: Path = REPO) -> tuple[Path, ...]:
    """The host paths a guest run uses: the repo, the live command's
    directory, the cache -- and the targets of the cache's entries that are
    links (a cache sharing another's kernels and packages: under /tmp, the
    links would lead nowhere in the guest) -- and the Python environment."""
    cache = cache_dir()
    linked = [e for e in cache.iterdir() if e.is_symlink()] if cache.is_dir() else []
    return (REPO, live_cwd, cache, *linked, Path(sys.prefix), Path(sys.executable).parent)


def _write_job(out: Path, k: Kernel, modules: dict[str, Path], sc: Scenario, initrd: Path,
               mode: str, live_cmd: str = "", live_cwd: Path = REPO) -> None:
    job = {
        "MODE": mode,
        "KROOT": str(k.modules_root),
        # an arm64 guest runs its root's Python, this machine's is amd64's
        "PYTHON": sys.executable if k.arch.native else "/usr/bin/python3",
        "GUEST_DIR": str(GUEST_DIR),
        "VMLINUZ": str(k.vmlinuz),
        "INITRD": str(initrd),
        "CAPTURE_CMDLINE": _cmdline("irqpoll nr_cpus=1 reset_devices", console=k.arch.console),
        "LIVE_CMD": live_cmd,
        "LIVE_CWD": str(live_cwd),
    }
    lines = [f"{k_}={shlex.quote(v)}" for k_, v in job.items()]
    # each module's path (it may hold blanks) and its parameters, side by side
    lines.append("KERNEL_MODULES=(" + " ".join(sc.machine.kernel_modules) + ")")
    lines.append("BOND_DRIVERS=(" + " ".join(sc.bond) + ")")
    lines.append(f"KEXEC_LOAD={'1' if sc.kexec_load and mode != 'kdump' else ''}")
    lines.append("INSMOD=(" + " ".join(shlex.quote(str(modules[name])) for name in modules) + ")")
    lines.append("INSMOD_PARAMS=(" + " ".join(shlex.quote(sc.module_params.get(name, "")) for name in modules) + ")")
    lines.append("INSMOD_MEMCG=(" + " ".join(name if name in sc.memcg else "-" for name in modules) + ")")
    used = guest_paths(live_cwd)
    # a guest of its own root binds every host path it uses, not only the hidden ones
    bound = host_paths(*used) if k.arch.native else outermost(*used)
    lines.append("HOST_PATHS=(" + " ".join(shlex.quote(p) for p in bound) + ")")
    lines.append("HOST_LINKS=(" + " ".join(shlex.quote(x) for pair in host_links(*used) for x in pair) + ")")
    capture = debian_line(k.line).capture
    makedumpfile = (CaptureTools(capture).ensure().command() if capture and mode == "kdump" and k.arch.native
                    else ["makedumpfile"])
    lines.append("MAKEDUMPFILE=(" + " ".join(map(shlex.quote, makedumpfile)) + ")")
    wargs = [f"--{k_.replace('_', '-')}-mb={v}" for k_, v in sorted(sc.workload_mb.items())]
    if sc.machine.devdax_mb:
        wargs.append(f"--devdax-at={sc.machine.devdax_start_mb(sc.memory_mb)}")
    if not sc.workload:
        wargs.append("--netdevs-only")
    lines.append("WORKLOAD_ARGS=(" + " ".join(wargs) + ")")
    (out / "job.env").write_text("\n".join(lines) + "\n")
    shutil.copy(GUEST_DIR / "init.sh", out / "init.sh")


def _prepare(sc: Scenario, line: str, log) -> tuple[Kernel, dict[str, Path], Path]:
    if line not in sc.kernel_lines:
        raise KeyError(f"scenario {sc.name} runs on kernel {' or '.join(sc.kernel_lines)}, not {line}")
    k = fetch(line, log=log)
    return k, build_modules(k, sc.modules, log=log), build_initramfs(k)


def core_dir(name: str, line: str) -> Path:
    return cache_dir() / "cores" / line / name


def _key(sc: Scenario, k: Kernel, modules: dict[str, Path]) -> str:
    """What a built core depends on: scenario, kernel, test modules, guest files, QEMU."""
    return _digest(sc, k.version, sorted(p.parent.name for p in modules.values()), _nics(k.arch.name),
                   qemu(arch=k.arch.name).version, *sc.key_extras())


def _in_progress(d: Path) -> bool:
    """Whether a build holds the lock of the key ``d`` belongs to (``d`` a
    core, its run directory or its lock file)."""
    return lock.held(d.with_name(d.name.split(".")[0] + ".lock"))


def prune(log=print) -> list[Path]:
    """Delete every cached core that a build would not return now (older
    keys, unknown scenarios or kernel lines, half-built runs, lock files)
    and the run directories failed live guests left.  A build in progress
    (its lock held) is left alone; a live guest is not: not to be run beside
    one."""
    removed = []
    for run_dir in sorted((cache_dir() / "live").glob("*")):
        shutil.rmtree(run_dir)
        removed.append(run_dir)
    for line_dir in sorted((cache_dir() / "cores").glob("*")):
        for name_dir in sorted(line_dir.glob("*")):
            keep = None
            sc = SCENARIOS.get(name_dir.name)
            if sc is not None and line_dir.name in sc.kernel_lines:
                k, modules, _ = _prepare(sc, line_dir.name, log)
                keep = _key(sc, k, modules)
            for d in sorted(name_dir.iterdir()):
                if d.name != keep and not _in_progress(d):
                    if d.name.endswith(".lock"):
                        lock.remove_unheld(d)
                    else:
                        shutil.rmtree(d)
                    removed.append(d)
    return removed


#: an older build of the same scenario used within this many seconds is
#: kept when a new one lands (another checkout may still be reading it)
IN_USE_SECONDS = 1800


def retire_older_builds(dest: Path, log) -> None:
    """Delete the other builds of ``dest``'s scenario and kernel line that
    nothing used in the last ``IN_USE_SECONDS``: each change of the guest
    files or test modules makes a new key, and a core is 1 to 16 GB, so a
    cache that only grows fills the disk within a day of work.  (``prune``
    does the same for every scenario at once, whatever their age.)  Run
    directories, lock files and the builds whose lock is held are left."""
    now = time.time()
    for d in dest.parent.iterdir():
        if (d != dest and not d.name.endswith((".run", ".lock")) and not _in_progress(d)
                and now - d.stat().st_mtime > IN_USE_SECONDS):
            shutil.rmtree(d, ignore_errors=True)
            log(f"removed an older build: {d}")


def _cached(dest: Path) -> bool:
    """Whether the core ``dest`` is built; if so, mark it as used (its
    directory's mtime), which keeps it from ``retire_older_builds`` for a while."""
    if not (dest / "manifest.json").exists():
        return False
    os.utime(dest)
    return True


def build(name: str, line: str = DEFAULT_KERNEL, log=print, force: bool = False) -> Path:
    """Build scenario ``name`` on kernel line ``line``; return its directory.

    A build found in the cache returns at once.  Builds of one core are
    serialized by its lock (``<key>.lock`` beside it): a process that finds
    another building the same core waits for it and returns its result, even
    with ``force``."""
    sc = SCENARIOS[name]
    k, modules, initrd = _prepare(sc, line, log)
    dest = core_dir(name, line) / _key(sc, k, modules)
    if not force and _cached(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with lock.exclusive(dest.with_name(dest.name + ".lock"),
                        lambda: log(f"[{line}] waiting for another build of {name} ({dest})")) as waited:
        if (waited or not force) and _cached(dest):
            return dest
        return _make(sc, line, k, modules, initrd, dest, log)


def _make(sc: Scenario, line: str, k: Kernel, modules: dict[str, Path], initrd: Path, dest: Path,
          log) -> Path:
    """Boot ``sc``'s guest, take its core and manifest into ``dest`` (in
    ``<key>.run`` first); the caller holds ``dest``'s lock."""
    name = sc.name
    run_dir = dest.with_name(dest.name + ".run")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    spec = _spec(sc, k, initrd, run_dir, "crashkernel=256M" if sc.mode == "kdump" else "")
    spec.out_dir.mkdir(parents=True)
    _write_job(spec.out_dir, k, modules, sc, initrd, sc.mode)
    t0 = time.time()
    log(f"[{line}] booting {name} guest ({sc.memory_mb} MB, {', '.join(spec.nics)})")

    def run(guest: Guest) -> tuple[Path, str]:
        if sc.mode == "dump":
            if sc.machine.balloon_mb:
                guest.wait_for_balloon(timeout=BOOT_TIMEOUT)
            log(f"[{line}] guest ready after {time.time() - t0:.0f}s; dumping memory (QMP, ELF)")
            core = spec.out_dir / "vmcore"
            guest.dump_elf(core)
            guest.wait_exit(60)
            fmt = "elf"
        else:
            log(f"[{line}] guest panicked after {time.time() - t0:.0f}s; capture kernel running")
            guest.wait_for("VMCT-CAPTURED", timeout=BOOT_TIMEOUT)
            guest.wait_exit(120)
            core = spec.out_dir / "vmcore.kdump"
            if not core.exists():
                raise RuntimeError(f"the capture kernel wrote no dump; see {spec.console}")
            fmt = "kdump-compressed -d 31"
        return core, fmt

    mark = "VMCT-READY" if sc.mode == "dump" else "VMCT-CRASHING"
    (core, fmt), boot = _boot(spec, mark, boot_bound(sc, line), run, line, log)
    truth = manifest.guest_truth(spec.out_dir)
    doc = {
        "schema": manifest.SCHEMA,
        "scenario": name,
        "description": sc.description,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.time() - t0, 1),
        **boot,
        "core": {"file": core.name, "format": fmt, "bytes": core.stat().st_size},
        "kernel": {
            "line": line, "abi": k.abi, "package_version": k.version,
            "vmlinux": str(k.vmlinux), "vmlinuz": str(k.vmlinuz),
            "debug_modules_dir": str(k.debug_modules_dir),
            "test_modules": {n: str(p) for n, p in modules.items()},
        },
        "guest": {"memory_mb": sc.memory_mb, "cpus": spec.cpus, "nics": list(spec.nics),
                  "qemu": ".".join(map(str, qemu(arch=k.arch.name).version)), "arch": k.arch.name,
                  "module_params": sc.module_params},
        **truth,
    }
    (spec.out_dir / "manifest.json").write_text(json.dumps(doc, indent=1) + "\n")
    for junk in ("job.env", "init.sh"):
        (spec.out_dir / junk).unlink(missing_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    spec.out_dir.rename(dest)
    shutil.copy(spec.console, dest / "console.log")
    shutil.rmtree(run_dir)
    retire_older_builds(dest, log)
    log(f"[{line}] {name}: {dest} ({time.time() - t0:.0f}s)")
    return dest


def _spec(sc: Scenario, k: Kernel, initrd: Path, run_dir: Path, cmdline: str) -> GuestSpec:
    """The guest of ``sc`` on ``k``, ``cmdline`` added to the scenario's."""
    root = guest_root_of(k)
    return GuestSpec(vmlinuz=k.vmlinuz, initrd=initrd, run_dir=run_dir, memory_mb=sc.memory_mb,
                     nics=_nics(k.arch.name), disk_mb=sc.disk_mb, machine=sc.machine,
                     cmdline=_cmdline(sc.cmdline, sc.machine.cmdline(sc.memory_mb), cmdline, console=k.arch.console),
                     arch=k.arch.name, root=root.root if root is not None else Path("/"))


class BootFailed(VMError):
    """The guest hung before its first mark once more than ``HUNG_RETRIES``
    allow, or its kernel died on its own ``BOOT_ATTEMPTS`` times."""


def _attempt(spec: GuestSpec, n: int) -> GuestSpec:
    """The guest of boot attempt ``n``: ``spec``, made to hang before init
    (``HANG_CMDLINE``) where ``$VMCT_HANG_BOOTS`` asks for ``n`` or more hung
    boots (a test hook: it leaves the core's key as it is)."""
    if n > int(os.environ.get("VMCT_HANG_BOOTS") or 0):
        return spec
    return dataclasses.replace(spec, cmdline=f"{spec.cmdline} {HANG_CMDLINE}")


def _keep_logs(spec: GuestSpec, n: int) -> Path:
    """Keep failed attempt ``n``'s kernel command line, console log, qemu.log
    and guest.log in ``failed-boot-N.log`` in the run's output directory (the
    core's, once built), where no later attempt writes; its guest.log, which
    the next attempt would append to, is removed."""
    kept = spec.out_dir / f"failed-boot-{n}.log"
    guest_log = spec.out_dir / "guest.log"
    with open(kept, "w") as f:
        f.write(f"===== kernel command line\n{spec.cmdline}\n")
        for p in (spec.console, spec.qemu_log, guest_log):
            if p.exists():
                f.write(f"===== {p.name}\n{p.read_text(errors='replace')}\n")
    guest_log.unlink(missing_ok=True)
    return kept


def _boot(spec: GuestSpec, mark: str, bound: float, run, line: str, log) -> tuple[object, dict]:
    """Start a guest, wait up to ``bound`` seconds for ``mark`` on its console
    and return ``run(guest)`` with the manifest's record of the boot: seconds
    to ``mark``, the bound, and the failed attempts (``boot_retries``).

    A guest that has not reached ``mark`` within ``bound`` is killed and
    booted again, ``HUNG_RETRIES`` times; one whose kernel dies on its own,
    up to ``BOOT_ATTEMPTS`` boots in all.  Each failed attempt's logs are
    kept (``_keep_logs``); the error that ends the tries names them."""
    retries: list[dict] = []
    while True:
        n = len(retries) + 1
        guest = Guest(_attempt(spec, n))
        guest.start()
        t0 = time.time()
        try:
            guest.wait_for(mark, timeout=bound)
            boot = {"boot_seconds": round(time.time() - t0, 1), "boot_bound_seconds": round(bound),
                    "boot_retries": retries}
            return run(guest), boot
        except (GuestHung, KernelDied) as e:
            if isinstance(e, GuestHung) and mark not in e.markers:
                raise
            failure = e
        finally:
            guest.kill()
        kept = _keep_logs(guest.spec, n)
        hung = isinstance(failure, GuestHung)
        what = f"no {mark} within {bound:.0f}s" if hung else str(failure).split(";")[0]
        retries.append({"attempt": n, "reason": "hung" if hung else "kernel died", "marker": mark,
                        "waited_seconds": round(time.time() - t0, 1), "log": kept.name})
        if sum(r["reason"] == "hung" for r in retries) > HUNG_RETRIES or n == BOOT_ATTEMPTS:
            raise BootFailed(f"[{line}] the guest failed to boot {n} times, the last with {what}; its "
                             f"logs are kept in {kept}" + (", the earlier boots' beside it" if n > 1 else ""))
        log(f"[{line}] boot {n} failed ({what}); its logs are kept in {kept}; booting again")


def guest_python(k: Kernel) -> str:
    """The command a live guest of ``k`` runs the repo's Python code with:
    this machine's Python (the environment the tool is installed in) where
    the guest runs this machine's userspace, else the guest root's, with
    the repo on its path (drgn, numpy and the rest are the root's Debian
    packages: ``guest_root.py``)."""
    return sys.executable if k.arch.native else f"env PYTHONPATH={shlex.quote(str(REPO))} /usr/bin/python3"


def live(name: str, line: str, command: str, log=print, timeout: float = BOOT_TIMEOUT,
         cwd: Path = REPO, cmdline: str = "") -> tuple[int, str, str]:
    """Boot scenario ``name`` and run ``command`` (bash) inside the guest,
    ``cmdline`` added to the kernel command line; ``timeout`` seconds for
    the command, once the guest has booted (``_boot``).

    Returns (exit code, stdout, stderr) of the command.
    """
    sc = SCENARIOS[name]
    k, modules, initrd = _prepare(sc, line, log)
    run_dir = cache_dir() / "live" / f"{line}-{name}-{time.time_ns()}"
    run_dir.mkdir(parents=True)
    spec = _spec(sc, k, initrd, run_dir, cmdline)
    spec.out_dir.mkdir(parents=True)
    _write_job(spec.out_dir, k, modules, sc, initrd, "live", command, cwd)

    def run(guest: Guest) -> None:
        guest.wait_for("VMCT-LIVE-DONE", timeout=timeout)
        guest.wait_exit(60)

    _boot(spec, "VMCT-LIVE-START", boot_bound(sc, line), run, line, log)
    out = spec.out_dir
    result = (int((out / "live.rc").read_text()), (out / "live.stdout").read_text(),
              (out / "live.stderr").read_text())
    shutil.rmtree(run_dir)
    return result
