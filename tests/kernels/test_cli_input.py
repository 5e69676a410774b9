"""Bad input gets one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import run_cli

pytestmark = pytest.mark.vm


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("vmcore-tools: error:"), proc.stderr
    for n in needles:
        assert n in lines[0]


def test_missing_core(tmp_path):
    assert_clean_error(run_cli("info", "-c", str(tmp_path / "nope")), "no such file")


def test_empty_core(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert_clean_error(run_cli("census", "-c", str(tmp_path / "empty")), "empty file")


def test_random_bytes(tmp_path):
    (tmp_path / "junk").write_bytes(os.urandom(1 << 16))
    assert_clean_error(run_cli("census", "-c", str(tmp_path / "junk")), "cannot open")


def test_vmlinux_of_another_kernel(leak_core):
    from sample_cores.kernels import KERNEL_LINES, fetch
    other = next(k for k in KERNEL_LINES if k != leak_core.manifest["kernel"]["line"])
    proc = run_cli("census", "-c", str(leak_core.core), "-s", str(fetch(other).vmlinux))
    assert_clean_error(proc, "does not match")


def test_vmlinux_of_another_build_of_the_same_kernel(leak_core, tmp_path):
    """Same release and banner, another build: a copy of the core's own
    vmlinux whose GNU build ID differs in one byte (what a rebuild of the
    same source gives).  The banner check alone would accept it; the build
    ID (in VMCOREINFO since 5.9) refuses it."""
    build_id = leak_core.program().main_module().build_id
    data = bytearray(Path(leak_core.vmlinux).read_bytes())
    at = data.find(build_id)
    assert at > 0 and data.find(build_id, at + 1) == -1
    data[at] ^= 0xFF
    other = tmp_path / Path(leak_core.vmlinux).name
    other.write_bytes(data)
    del data
    proc = run_cli("census", "-c", str(leak_core.core), "-s", str(other))
    assert_clean_error(proc, "does not match")


@pytest.mark.parametrize("cut", [4096, 1 << 20, 300 << 20])
def test_truncated_core(leak_core, tmp_path, cut):
    truncated = tmp_path / "vmcore"
    with open(leak_core.core, "rb") as src:
        truncated.write_bytes(src.read(cut))
    proc = run_cli("census", "-c", str(truncated), "-s", leak_core.vmlinux)
    assert_clean_error(proc)


def test_userspace_core(leak_core, tmp_path):
    """A process core (gcore of a sleeping process) is not a kernel core."""
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        subprocess.run(["gcore", "-o", str(tmp_path / "core"), str(sleeper.pid)], capture_output=True, check=True)
    finally:
        sleeper.kill()
    core = tmp_path / f"core.{sleeper.pid}"
    assert_clean_error(run_cli("info", "-c", str(core), "-s", leak_core.vmlinux), "not a Linux kernel core")


def test_no_debug_info_found(leak_core):
    """Without -s, drgn's standard paths hold no debug info for a guest kernel."""
    assert_clean_error(run_cli("census", "-c", str(leak_core.core)), "no kernel debug info found")


def test_module_debug_info_missing(leak_core):
    """vmlinux debug info but none for the NIC modules: each walker whose
    driver is bound to a device says it was skipped, and the report still
    runs and still finds every planted leak (the ring pages it cannot walk are
    referenced from the rings' slot arrays, so they are not taken for leaks)."""
    proc = run_cli("report", "--json", "--quiet", "-c", str(leak_core.core), "-s", leak_core.vmlinux)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    problems = doc["census"]["problems"]
    drivers = {"i40e", "virtio_net", "e1000e", "igb"}
    for driver in drivers:
        dev = leak_core.netdevs(driver)[0]
        assert any(p.startswith(f"{driver}: bound to {dev}") and "-d" in p for p in problems), problems
    assert not [r for r in doc["rings"] if r["driver"] in drivers]
    assert {o["pfn"] for o in doc["orphans"]["orphans"]} == set(leak_core.expected_orphans())
    info = json.loads(run_cli("info", "--json", "-c", str(leak_core.core), "-s", leak_core.vmlinux).stdout)
    assert {d: n["debug_info"] for d, n in info["nic_drivers"].items()} == {d: False for d in drivers}


def foreign_arch_core(core: Path, out: Path, e_machine: int) -> Path:
    """An ELF core holding only ``core``'s notes (VMCOREINFO included), its
    header relabelled for another architecture: a kernel core of that
    architecture as far as the header says."""
    import struct
    data = core.open("rb").read(1 << 20)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    notes = b""
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 4:         # PT_NOTE
            with core.open("rb") as f:
                f.seek(p_offset)
                notes += f.read(p_filesz)
    header = bytearray(data[:64])
    struct.pack_into("<H", header, 18, e_machine)
    struct.pack_into("<QHH", header, 0x20, 64, 0, 0)        # e_phoff 64 (e_flags, e_ehsize kept)
    struct.pack_into("<Q", header, 0x28, 0)                 # e_shoff
    struct.pack_into("<HHHHHH", header, 0x34, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(notes), len(notes), 4)
    out.write_bytes(bytes(header) + phdr + notes)
    return out


def test_foreign_architecture_is_refused(leak_core, tmp_path):
    """A ppc64 kernel core: refused in one line, not walked as x86-64."""
    core = foreign_arch_core(leak_core.core, tmp_path / "ppc64.core", 21)     # EM_PPC64
    assert_clean_error(run_cli("census", "-c", str(core), "-s", leak_core.vmlinux), "ppc64",
                       "x86-64 and aarch64 only")
