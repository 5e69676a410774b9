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

from .initramfs import HOST_ROOT_TAG, OUT_TAG
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
    #: options before any device (``-machine``, an IOMMU that must exist before the devices it serves)
    early_args: list[str] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "out"

    @property
    def console(self) -> Path:
        return self.run_dir / "console.log"



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
        q = qemu()
        cmd = [
            *q.argv(), "-accel", accel, "-cpu", "max" if accel == "tcg" else "host",
            "-m", str(s.memory_mb), "-smp", str(s.cpus), *q.guest_options(), *s.early_args,
            "-no-reboot", "-monitor", "none", "-serial", f"file:{s.console}",
            "-kernel", str(s.vmlinuz), "-initrd", str(s.initrd), "-append", s.cmdline,
            "-device", "vmcoreinfo",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on",
            "-device", f"virtio-9p-pci,fsdev=hostroot,mount_tag={HOST_ROOT_TAG}",
            "-fsdev", f"local,id=out,path={s.out_dir},security_model=none",
            "-device", f"virtio-9p-pci,fsdev=out,mount_tag={OUT_TAG}",
            "-drive", f"file={s.run_dir / 'disk.img'},if=virtio,format=raw",
        ]
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
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, env=qemu().environ(),
                                     stdout=open(s.run_dir / "qemu.log", "w"),
                                     stderr=subprocess.STDOUT)

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
                              f"see {self.spec.console} and {self.spec.run_dir / 'qemu.log'}")
            time.sleep(0.5)
        raise VMError(f"timed out after {timeout:.0f}s waiting for {markers}; see {self.spec.console}")

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
