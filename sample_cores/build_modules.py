"""Build the test kernel modules against an unpacked kernel's headers.

Kernel differences are found by looking at the headers and driver sources
(does ``rx_offset`` exist in ``struct i40e_ring``?), never by version.
The built ``.ko`` keep their DWARF: they are also the debug info drgn loads
for the fake i40e types.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from .kernels import Kernel

MODULES_SRC = Path(__file__).parent / "modules"
MODULE_NAMES = ("fake_i40e", "vmct_workload")


def _struct_body(text: str, name: str) -> str:
    m = re.search(r"^struct %s \{(.*?)^\};" % re.escape(name), text, re.S | re.M)
    return m.group(1) if m else ""


def features(k: Kernel) -> list[str]:
    """``-D`` flags for what this kernel's headers provide."""
    txrx = (k.source_dir / "i40e" / "i40e_txrx.h").read_text()
    ring = _struct_body(txrx, "i40e_ring")
    etherdevice = k.header("linux/etherdevice.h")
    flags = []
    if re.search(r"\brx_offset;", ring):
        flags.append("-DHAVE_RX_OFFSET")
    if re.search(r"\bstruct xdp_buff xdp;", ring):
        flags.append("-DHAVE_RING_XDP_BUFF")     # 6.4+: ring->xdp replaces ring->skb
    if "eth_hw_addr_set" in etherdevice.read_text():
        flags.append("-DHAVE_ETH_HW_ADDR_SET")
    return flags


def _digest(k: Kernel) -> str:
    h = hashlib.sha256(k.abi.encode())
    for path in sorted(MODULES_SRC.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def build_modules(k: Kernel, log=print) -> dict[str, Path]:
    """Build every test module for ``k``; returns module name -> ``.ko`` path."""
    out = k.root / "test-modules" / _digest(k)
    result = {name: out / f"{name}.ko" for name in MODULE_NAMES}
    if all(p.exists() for p in result.values()):
        return result
    flags = " ".join(features(k))
    for name in MODULE_NAMES:
        work = out / "build" / name
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(MODULES_SRC / name, work)
        log(f"[{k.line}] building {name}.ko {flags}")
        proc = subprocess.run(
            ["make", "-C", str(k.build_dir), f"M={work}", "CC=gcc", "CONFIG_DEBUG_INFO_BTF_MODULES=",
             f"I40E_SRC={k.source_dir / 'i40e'}", f"FEATURES={flags}", "modules"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} for {k.abi} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        shutil.copy(work / f"{name}.ko", result[name])
    return result


def debug_info(k: Kernel, log=print) -> list[str]:
    """What vmcore-tools takes with ``-d`` for a guest of ``k``: the test
    modules (built here, so their ``.ko`` files carry DWARF) and the
    kernel's module debug-info directory."""
    return [*map(str, build_modules(k, log=log).values()), str(k.debug_modules_dir)]
