"""Boot a sample-core guest under QEMU and dump its memory.

The guest is TCG by default (nested KVM hangs on this kind of host);
``VMCT_ACCEL=kvm`` tries KVM.  It has ``-device vmcoreinfo`` so QEMU's ELF
dump carries VMCOREINFO (the guest loads ``qemu_fw_cfg`` to fill it), the
host's root filesystem read-only over 9p, a writable 9p share for the run's
output, an ext4 scratch disk, QEMU's ``edu`` PCI device for fake_i40e to
bind to, and NICs on one QEMU hub with no host network.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .arch import ARCHES
from .initramfs import HOST_ROOT_TAG, HOST_TAG, OUT_TAG
from .qemu import qemu


class VMError(RuntimeError):
    pass


class KernelDied(VMError):
    """The guest kernel died on its own: before its init said VMCT-BOOTED,
    or in a panic the job did not ask for (no VMCT-CRASHING).  Under TCG a
    kernel sometimes oopses while it patches its own text (an int3 left by
    static-key patching on another vCPU) or on a spurious debug exception:
    a flake of the emulator, not of the job (which only reads memory), so the
    run may boot again."""


class GuestHung(VMError):
    """The guest did not show any of ``markers`` within ``timeout`` seconds."""

    def __init__(self, markers: tuple[str, ...], timeout: float, console: Path):
        super().__init__(f"timed out after {timeout:.0f}s waiting for {markers}; see {console}")
        self.markers = markers


@dataclass(frozen=True)
class Machine:
    """The guest's hardware where it is not the default one-node PC.

    ``numa_nodes`` splits the boot memory evenly over that many nodes (a
    CPU each while CPUs last).  ``dimm_mb`` adds a pc-dimm of that size on
    the last node: QEMU describes it in ACPI as hot-pluggable memory, which
    the kernel adds through the memory-hotplug path (``add_memory()``: new
    memory blocks, their memmap allocated at hot-add time) and onlines with
    ``memhp_default_state=online``.  ``balloon_mb`` gives the guest a
    virtio-balloon device and asks QEMU to take that much memory back; the
    dump waits until the guest has given it.  ``pmem_mb`` makes a range of
    the boot memory legacy persistent memory (``memmap=SIZE!START``, how
    pmem is emulated without NFIT firmware): the kernel's e820 pmem driver
    (``nd_e820``) gives it a raw namespace, and ``nd_pmem`` maps its pages
    (``devm_memremap_pages()``, MEMORY_DEVICE_FS_DAX): ZONE_DEVICE struct
    pages, whose memmap is allocated from RAM then, and none of which the
    page allocator ever hands out.  ``devdax_mb`` makes a second such range,
    on the first node, that the guest turns into device DAX the way ``ndctl
    create-namespace -m devdax`` does (``workload.py``): ``dax_pmem`` puts
    an info block at its start and the range's own memmap after it (the
    altmap, ndctl's default ``--map=dev``), and ``device_dax`` gives the
    rest as ``/dev/daxN.M`` (MEMORY_DEVICE_GENERIC from 5.12), which a
    process maps whole.  ``i40e_ports`` gives fake_i40e that many
    edu devices to bind, each a port with its own address (an X710's two
    ports, which the seed's hosts bond)."""

    #: options before any device (``-machine``, an IOMMU that must exist before the devices it serves)
    early_args: tuple[str, ...] = ()
    numa_nodes: int = 1
    dimm_mb: int = 0
    dimm_at_gb: int = 0
    balloon_mb: int = 0
    pmem_mb: int = 0
    devdax_mb: int = 0
    i40e_ports: int = 1

    def cmdline(self, memory_mb: int) -> str:
        """What the kernel command line needs for this hardware."""
        out = ["memhp_default_state=online"] if self.dimm_mb else []
        if self.pmem_mb:
            out.append(f"memmap={self.pmem_mb}M!{self.pmem_start_mb(memory_mb)}M")
        if self.devdax_mb:
            out.append(f"memmap={self.devdax_mb}M!{self.devdax_start_mb(memory_mb)}M")
        return " ".join(out)

    def pmem_start_mb(self, memory_mb: int) -> int:
        """Where the pmem range starts: section (128 MiB) aligned, or nd_pmem
        trims it; a section below the top of the boot memory, clear of the
        firmware's tables there, and on the last node."""
        assert self.pmem_mb % 128 == 0 and self.pmem_mb + 128 < memory_mb // self.numa_nodes, \
            "pmem must be section-aligned and fit on the last node"
        return (memory_mb - self.pmem_mb - 128) // 128 * 128

    def devdax_start_mb(self, memory_mb: int) -> int:
        """Where the device DAX range starts: section aligned, a section
        below the top of the first node (a range of its own: e820 merges
        ranges of one type that touch)."""
        node = memory_mb // self.numa_nodes
        assert self.devdax_mb % 128 == 0 and self.devdax_mb + 256 < node, \
            "device DAX must be section-aligned and fit on the first node"
        start = (node - self.devdax_mb - 128) // 128 * 128
        assert not self.pmem_mb or start + self.devdax_mb + 128 <= self.pmem_start_mb(memory_mb)
        return start

    @property
    def kernel_modules(self) -> tuple[str, ...]:
        """Kernel modules the guest loads for this hardware."""
        return ((("virtio_balloon",) if self.balloon_mb else ())
                + (("nd_e820", "nd_pmem") if self.pmem_mb or self.devdax_mb else ())
                + (("dax_pmem", "device_dax") if self.devdax_mb else ()))

    def args(self, memory_mb: int, cpus: int) -> list[str]:
        """QEMU's ``-m`` and the options that shape the machine."""
        m = f"{memory_mb}"
        if self.dimm_mb:
            m += f",slots=1,maxmem={max(memory_mb, self.dimm_at_gb << 10) + self.dimm_mb}M"
        out = ["-m", m, *self.early_args]
        if self.numa_nodes > 1:
            per_node = memory_mb // self.numa_nodes
            for n in range(self.numa_nodes):
                size = per_node if n < self.numa_nodes - 1 else memory_mb - per_node * n
                out += ["-object", f"memory-backend-ram,id=node{n},size={size}M",
                        "-numa", f"node,nodeid={n},memdev=node{n}" + (f",cpus={n}" if n < cpus else "")]
        if self.dimm_mb:
            out += ["-object", f"memory-backend-ram,id=dimm0,size={self.dimm_mb}M",
                    "-device", f"pc-dimm,id=dimm0,memdev=dimm0,node={self.numa_nodes - 1}"
                    + (f",addr={self.dimm_at_gb << 30:#x}" if self.dimm_at_gb else "")]
        if self.balloon_mb:
            out += ["-device", "virtio-balloon-pci,id=balloon0"]
        for _ in range(self.i40e_ports - 1):     # GuestSpec.extra_devices has the first
            out += ["-device", "edu"]
        return out

    def balloon_target(self, memory_mb: int) -> int:
        """The guest size, in bytes, QEMU's ``balloon`` command asks for."""
        return (memory_mb + self.dimm_mb - self.balloon_mb) << 20


@dataclass
class GuestSpec:
    vmlinuz: Path
    initrd: Path
    cmdline: str
    run_dir: Path
    memory_mb: int = 1024
    cpus: int = 2
    nics: tuple[str, ...] = ("virtio-net-pci", "e1000e")
    extra_devices: tuple[str, ...] = ("edu",)
    disk_mb: int = 256
    extra_args: list[str] = field(default_factory=list)
    machine: Machine = Machine()
    #: the guest's architecture (arch.ARCHES) and the root it mounts: this
    #: machine's own, or one of its packages (guest_root.py), the host's
    #: then shared beside it
    arch: str = "amd64"
    root: Path = Path("/")

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "out"

    @property
    def console(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def qemu_log(self) -> Path:
        """QEMU's own output (stdout and stderr)."""
        return self.run_dir / "qemu.log"



class QMP:
    """A minimal QEMU Machine Protocol client over a unix socket."""

    def __init__(self, path: Path, timeout: float = 30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                if time.time() > deadline:
                    raise VMError(f"QMP socket {path} did not come up")
                time.sleep(0.2)
        self.file = self.sock.makefile("rw")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise VMError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, cmd: str, **args) -> dict:
        self.file.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise VMError(f"QMP {cmd}: {reply['error'].get('desc')}")
        return reply.get("return", {})

    def close(self) -> None:
        self.sock.close()


class Guest:
    def __init__(self, spec: GuestSpec):
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self._seen = 0
        # a unix socket's path must fit in 108 bytes, which a cache deep in a
        # clone's tree does not: the QMP socket gets a short directory of its own
        self.qmp_dir = Path(tempfile.mkdtemp(prefix="vmct-qmp-"))
        self.qmp_path = self.qmp_dir / "qmp.sock"

    def command(self) -> list[str]:
        s = self.spec
        accel = os.environ.get("VMCT_ACCEL", "tcg")
        q = qemu(arch=s.arch)
        a = ARCHES[s.arch]
        cmd = [
            *q.argv(), *a.machine_args, "-accel", accel, "-cpu", a.cpu if accel == "tcg" else "host",
            "-smp", str(s.cpus), *q.guest_options(), *s.machine.args(s.memory_mb, s.cpus),
            "-no-reboot", "-monitor", "none", "-serial", f"file:{s.console}",
            "-kernel", str(s.vmlinuz), "-initrd", str(s.initrd), "-append", s.cmdline,
            "-device", "vmcoreinfo",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-fsdev", f"local,id=hostroot,path={s.root},security_model=none,readonly=on",
            "-device", f"virtio-9p-pci,fsdev=hostroot,mount_tag={HOST_ROOT_TAG}",
            "-fsdev", f"local,id=out,path={s.out_dir},security_model=none",
            "-device", f"virtio-9p-pci,fsdev=out,mount_tag={OUT_TAG}",
            "-drive", f"file={s.run_dir / 'disk.img'},if=virtio,format=raw",
        ]
        if s.root != Path("/"):        # the host's own root, at /.host
            cmd += ["-fsdev", "local,id=hostfs,path=/,security_model=none,readonly=on",
                    "-device", f"virtio-9p-pci,fsdev=hostfs,mount_tag={HOST_TAG}"]
        for dev in s.extra_devices:
            cmd += ["-device", dev]
        for i, nic in enumerate(s.nics):
            mac = f"52:54:00:00:0{i}:{i + 1:02x}"
            cmd += ["-netdev", f"hubport,id=n{i},hubid=0", "-device", f"{nic},netdev=n{i},mac={mac}"]
        return cmd + s.extra_args

    def start(self) -> None:
        s = self.spec
        s.out_dir.mkdir(parents=True, exist_ok=True)
        s.console.write_text("")
        with open(s.run_dir / "disk.img", "wb") as f:
            f.truncate(s.disk_mb * 1024 * 1024)
        self.qmp_path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, env=qemu(arch=s.arch).environ(),
                                     stdout=open(s.qemu_log, "w"),
                                     stderr=subprocess.STDOUT)
        if s.machine.balloon_mb:
            # the device takes the target now; the driver inflates to it when it binds
            qmp = QMP(self.qmp_path)
            try:
                qmp.execute("balloon", value=s.machine.balloon_target(s.memory_mb))
            finally:
                qmp.close()

    def wait_for_balloon(self, timeout: float) -> None:
        """Wait until the guest has given the balloon its memory (QEMU's
        ``actual`` has reached the target)."""
        target = self.spec.machine.balloon_target(self.spec.memory_mb)
        qmp = QMP(self.qmp_path)
        try:
            deadline = time.time() + timeout
            while (actual := qmp.execute("query-balloon")["actual"]) > target:
                if time.time() > deadline:
                    raise VMError(f"the balloon reached {actual >> 20} MB, not {target >> 20} MB, "
                                  f"within {timeout:.0f}s; see {self.spec.console}")
                time.sleep(1)
        finally:
            qmp.close()

    def console_text(self) -> str:
        return self.spec.console.read_text(errors="replace")

    def wait_for(self, *markers: str, timeout: float) -> str:
        """Wait until the console shows one of ``markers`` (or VMCT-FAILED)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.console_text()
            for line in text.splitlines():
                if "VMCT-FAILED" in line:
                    raise VMError(f"guest failed: {line.strip()} (see {self.spec.console})")
            for m in markers:
                if m in text:
                    return m
            if self.proc and self.proc.poll() is not None:
                if "VMCT-BOOTED" not in text:
                    raise KernelDied(f"guest kernel died before init ran; see {self.spec.console}")
                if "Kernel panic - not syncing" in text and "VMCT-CRASHING" not in text:
                    raise KernelDied(f"guest kernel panicked on its own; see {self.spec.console}")
                raise VMError(f"QEMU exited ({self.proc.returncode}) before {markers}; "
                              f"see {self.spec.console} and {self.spec.qemu_log}")
            time.sleep(0.5)
        raise GuestHung(markers, timeout, self.spec.console)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise VMError(f"QEMU did not exit within {timeout:.0f}s; see {self.spec.console}")

    def dump_elf(self, path: Path) -> None:
        """Stop the guest and write an ELF memory dump through QMP."""
        qmp = QMP(self.qmp_path)
        try:
            qmp.execute("stop")
            tmp = path.with_suffix(".tmp")
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{tmp}")
            tmp.rename(path)
            qmp.execute("quit")
        finally:
            qmp.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.qmp_dir, ignore_errors=True)
