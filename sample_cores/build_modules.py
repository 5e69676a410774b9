"""Build the test kernel modules against an unpacked kernel's headers.

Kernel differences are found by looking at the headers and driver sources
(does ``rx_offset`` exist in ``struct i40e_ring``?), never by version.
The built ``.ko`` keep their DWARF: they are also the debug info drgn loads
for the fake drivers' types.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import lock
from .kernels import Kernel, debian_line
from .toolchain import toolchain_for

MODULES_SRC = Path(__file__).parent / "modules"
#: the drivers fake_intel fakes (one module each: fake_ixgbe.ko, ...)
FAKE_INTEL = ("ixgbe", "ixgbevf", "igc", "ice", "iavf")
#: the ``modules/`` directories a scenario loads where it names none
DEFAULT_MODULES = ("fake_i40e", "vmct_workload", "vmct_shapes", "vmct_blocks")


def _struct_body(text: str, name: str) -> str:
    m = re.search(r"^struct %s \{(.*?)^\};" % re.escape(name), text, re.S | re.M)
    return m.group(1) if m else ""


def features(k: Kernel) -> list[str]:
    """``-D`` flags for what this kernel's headers provide."""
    txrx = (k.source_dir / "i40e" / "i40e_txrx.h").read_text()
    ring = _struct_body(txrx, "i40e_ring")
    flags = []
    if re.search(r"\brx_offset;", ring):
        flags.append("-DHAVE_RX_OFFSET")
    if re.search(r"\bstruct xdp_buff xdp;", ring):
        flags.append("-DHAVE_RING_XDP_BUFF")     # 6.4+: ring->xdp replaces ring->skb
    if "netif_napi_add_weight" in k.header("linux/netdevice.h").read_text():
        flags.append("-DHAVE_NAPI_ADD_WEIGHT")          # 6.1+: netif_napi_add() takes no weight
    if "eth_hw_addr_set" in k.header("linux/etherdevice.h").read_text():
        flags.append("-DHAVE_ETH_HW_ADDR_SET")
    if "EMPTY_VMA_FLAGS" in k.header("linux/mm_types.h").read_text():
        flags.append("-DHAVE_VMA_FLAGS_T")              # 7.x: shmem_file_setup() takes vma_flags_t
    batch = k.find_header("linux/folio_batch.h")
    if batch is not None:
        flags.append("-DHAVE_FOLIO_BATCH_H")            # 7.x: pagevec.h renamed
    if "__folio_batch_release" in (batch or k.header("linux/pagevec.h")).read_text():
        flags.append("-DHAVE_FOLIO_BATCH_RELEASE")      # 6.5+: pagevec became folio_batch
    frag = k.find_header("linux/page_frag_cache.h")
    if frag is not None and "void page_frag_cache_drain(struct page_frag_cache" in frag.read_text():
        flags.append("-DHAVE_PAGE_FRAG_CACHE_DRAIN")    # 6.13+: the cache holds an encoded page, not va
    if "struct bio *bio_alloc(struct block_device *bdev" in k.header("linux/bio.h").read_text():
        flags.append("-DHAVE_BIO_ALLOC_BDEV")           # 5.18+: bio_alloc() takes the device and op
    rcutree = k.find_header("linux/rcutree.h")
    if rcutree is not None and "rcu_momentary_eqs" in rcutree.read_text():
        flags.append("-DHAVE_RCU_MOMENTARY_EQS")        # renamed from rcu_momentary_dyntick_idle()
    platform = k.header("linux/platform_device.h").read_text()
    if "remove_new" in platform:
        flags.append("-DHAVE_PLATFORM_REMOVE_NEW")   # 6.3 to 6.12
    elif re.search(r"void \(\*remove\)\(struct platform_device \*\)", platform):
        flags.append("-DHAVE_PLATFORM_REMOVE_VOID")  # 6.13+: only .remove, returning void
    return flags


def intel_features(k: Kernel) -> list[str]:
    """``-D`` flags for fake_intel: ice's ring type and slot."""
    ice = (k.source_dir / "ice" / "ice_txrx.h").read_text()
    flags = []
    if "struct ice_rx_ring {" in ice:
        flags.append("-DHAVE_ICE_RX_RING")      # 6.1+: rx and tx rings split
    if re.search(r"struct sk_buff \*skb;", _struct_body(ice, "ice_rx_buf")):
        flags.append("-DHAVE_ICE_SLOT_SKB")     # before 6.1: a frame in progress waits in a slot
    return flags


#: where each faked driver keeps its rx slots: (header, ring struct, member).
#: A driver whose ring has no page slots any more receives through
#: page_pool/libeth (iavf from 6.10, ice from 6.17): nothing to fake there
SLOTS = {
    "iavf": ("iavf/iavf_txrx.h", "iavf_ring", r"\*rx_bi;"),
    "ice": ("ice/ice_txrx.h", "ice_rx_ring", r"\*rx_buf;"),
}


def modules_of(k: Kernel, directory: str) -> tuple[str, ...]:
    """The modules ``modules/<directory>`` builds for ``k``: fake_intel
    fakes a driver only where its ring has page slots (``SLOTS``)."""
    if directory != "fake_intel":
        return (directory,)

    def has_slots(driver: str) -> bool:
        if driver not in SLOTS:
            return True
        header, ring, member = SLOTS[driver]
        text = (k.source_dir / header).read_text()
        return bool(re.search(member, _struct_body(text, ring) or text))

    return tuple(f"fake_{d}" for d in FAKE_INTEL if has_slots(d))


def _digest(k: Kernel, directory: str) -> str:
    h = hashlib.sha256(k.abi.encode())
    for path in sorted([*(MODULES_SRC / directory).rglob("*"), *(MODULES_SRC / "include").rglob("*")]):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def build_modules(k: Kernel, dirs: tuple[str, ...] = DEFAULT_MODULES, log=print) -> dict[str, Path]:
    """Build the test modules of ``modules/<dir>`` for each of ``dirs``;
    returns module name -> ``.ko`` path, in that order.

    Each directory is built once per kernel and digest of its sources, so a
    core depends only on the modules it loads."""
    result = {}
    for directory in dirs:
        result.update(_build_dir(k, directory, log))
    return result


def _build_dir(k: Kernel, directory: str, log) -> dict[str, Path]:
    out = k.root / "test-modules" / f"{directory}-{_digest(k, directory)}"
    names = modules_of(k, directory)
    result = {name: out / f"{name}.ko" for name in names}
    if all(p.exists() for p in result.values()):
        return result
    out.parent.mkdir(parents=True, exist_ok=True)
    with lock.exclusive(out.with_name(out.name + ".lock"),
                        lambda: log(f"[{k.line}] waiting for another build of {directory}")):
        if not all(p.exists() for p in result.values()):
            _make(k, directory, names, out, log)
    return result


def _make(k: Kernel, directory: str, names: tuple[str, ...], out: Path, log) -> None:
    """Build ``directory``'s modules ``names`` for ``k`` into ``out`` (the caller holds its lock)."""
    result = {name: out / f"{name}.ko" for name in names}
    flags = " ".join(features(k) + (intel_features(k) if directory == "fake_intel" else []))
    toolchain = toolchain_for(k, debian_line(k.line).toolchain, log)
    out.mkdir(parents=True, exist_ok=True)
    # kbuild takes no blank in M= or the kernel tree's path: build in a
    # temporary directory of our own, against the tree's real path
    with tempfile.TemporaryDirectory(prefix="vmct-modules-") as tmp:
        work = Path(tmp) / directory
        shutil.copytree(MODULES_SRC / directory, work)
        shutil.copytree(MODULES_SRC / "include", work, dirs_exist_ok=True)     # headers they share
        log(f"[{k.line}] building {', '.join(names)} {flags}")
        source = k.source_dir.resolve()
        make = ["make", "-C", str(k.build_dir.resolve()), f"M={work}", "CONFIG_DEBUG_INFO_BTF_MODULES=",
                f"I40E_SRC={source / 'i40e'}", f"INTEL_SRC={source}", f"FEATURES={flags}",
                "FAKE_INTEL=" + " ".join(f"{n}.o" for n in names), "modules"]
        if toolchain is None:
            proc = subprocess.run([*make, "CC=gcc"], capture_output=True, text=True)
        elif not k.arch.native:
            # cross-built, in the suite's root: Debian's headers take the
            # compiler's prefix from the host GNU type once the build and host
            # architectures differ (their .kernelvariables)
            proc = toolchain.run([*make, "DEB_BUILD_ARCH=amd64", f"DEB_HOST_ARCH={k.arch.name}",
                                  f"DEB_HOST_GNU_TYPE={k.arch.cross_compile.rstrip('-')}"],
                                 binds=(k.root, Path(tmp)))
        else:       # the headers' own CC (x86_64-linux-gnu-gcc-N), in the suite's root
            proc = toolchain.run([*make, "DEB_BUILD_ARCH=amd64"], binds=(k.root, Path(tmp)))
        if proc.returncode != 0:
            raise RuntimeError(f"building {directory} for {k.abi} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        for name, path in result.items():
            tmp_ko = path.with_name(path.name + ".tmp")
            shutil.copy(work / f"{name}.ko", tmp_ko)
            tmp_ko.rename(path)          # whole, or not there: the check above reads it unlocked


def debug_info(k: Kernel, dirs: tuple[str, ...] = DEFAULT_MODULES, log=print) -> list[str]:
    """What vmcore-tools takes with ``-d`` for a guest of ``k`` that loads
    the test modules of ``dirs``: those modules (built here, so their ``.ko``
    files carry DWARF) and the kernel's module debug-info directory."""
    return [*map(str, build_modules(k, dirs, log=log).values()), str(k.debug_modules_dir)]
