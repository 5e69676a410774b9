"""A tiny initramfs that mounts this machine's root filesystem over 9p.

Debian kernels build virtio-pci (before 6.12) and 9p as modules, so the
initramfs carries busybox, the module closure needed for a virtio 9p mount,
and an ``/init`` that loads them, mounts the host's ``/`` read-only, builds
a tmpfs root from its top-level directories, mounts the run's share and
hands over to the copy of ``sample_cores/guest/init.sh`` the host put
there.  The same image boots the
capture kernel of a kdump run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import lock
from .guest_root import guest_root_of
from .kernels import Kernel

BUSYBOX = Path("/bin/busybox")
ROOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
HOST_ROOT_TAG = "hostroot"
OUT_TAG = "vmctout"
#: the host's own root, where the guest's root is another (guest_root.py)
HOST_TAG = "hostfs"
#: how /.host is made: the root mounted is the host's own, or the host's is shared beside it
HOST_BIND = "$B mount --bind /hostroot /newroot/.host"
HOST_MOUNT = f"$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 {HOST_TAG} /newroot/.host"

INIT = r"""#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /newroot /hostroot
$B mount -t proc proc /proc
for m in $($B cat /modules/order); do $B insmod /modules/$m; done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 {root_tag} /hostroot
# The new root is a tmpfs with the host's top-level directories bind-mounted
# into it: a mount on top of a 9p directory (/proc, /sys, ...) is dropped when
# 9p revalidates that dentry, a mount on tmpfs is not.
$B mount -t tmpfs -o mode=0755 root /newroot
for path in /hostroot/* /hostroot/.[!.]*; do
    [ -e "$path" ] || [ -L "$path" ] || continue
    name=${path#/hostroot/}
    case "$name" in proc|sys|dev|run|tmp|mnt|media|lost+found) $B mkdir -p /newroot/$name; continue;; esac
    if [ -L "$path" ]; then
        $B ln -s "$($B readlink "$path")" /newroot/$name
    elif [ -d "$path" ]; then
        $B mkdir /newroot/$name && $B mount --bind "$path" /newroot/$name
    fi
done
# The host's whole root stays reachable at /.host (read-only): init.sh binds
# back the host paths the run needs under the directories the guest mounts
# its own tmpfs on (a clone in /tmp).  The run's own share is /vmct, with
# the init script the host put there.
$B mkdir /newroot/.host /newroot/vmct
{host_mount}
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {out_tag} /newroot/vmct
$B umount /proc
exec $B switch_root /newroot /bin/bash /vmct/init.sh
"""


def parse_modules_dep(k: Kernel) -> dict[str, list[str]]:
    """Module name ("9pnet_virtio") -> [path of itself, then its deps] from modules.dep."""
    deps: dict[str, list[str]] = {}
    for line in (k.modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        name = Path(mod).name.split(".ko")[0].replace("-", "_")
        deps[name] = [mod, *rest.split()]
    return deps


def module_load_order(k: Kernel, names: tuple[str, ...]) -> list[str]:
    """Relative paths of ``names`` and their dependencies, dependencies first.

    A module that is built in (absent from modules.dep) is skipped.
    """
    deps = parse_modules_dep(k)
    by_path = {paths[0]: name for name, paths in deps.items()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[by_path[path]][1:]:
            visit(dep)
        order.append(path)

    for name in names:
        if name in deps:
            visit(deps[name][0])
    return order


def build_initramfs(k: Kernel) -> Path:
    """Build (once) and return the initramfs for kernel ``k``: its
    architecture's busybox (this machine's, or its guest root's)."""
    root = guest_root_of(k)
    init = (INIT.replace("{root_tag}", HOST_ROOT_TAG).replace("{out_tag}", OUT_TAG)
            .replace("{host_mount}", HOST_BIND if root is None else HOST_MOUNT))
    key = hashlib.sha256((init + k.abi).encode()).hexdigest()[:12]
    out = k.root / f"initramfs-{key}.cpio.gz"
    if out.exists():
        return out
    with lock.exclusive(out.with_name(out.name + ".lock"), lambda: None):
        if not out.exists():
            _make(k, init, out, BUSYBOX if root is None else root.busybox)
    return out


def _make(k: Kernel, init: str, out: Path, busybox: Path) -> None:
    """Write the initramfs of ``k`` to ``out`` (the caller holds its lock)."""
    if not busybox.exists():
        raise RuntimeError(f"busybox is missing ({busybox}): install busybox-static")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "bin").mkdir()
        shutil.copy(busybox, t / "bin" / "busybox")
        (t / "modules").mkdir()
        names = []
        for rel in module_load_order(k, ROOT_MODULES):
            shutil.copy(k.modules_dir / rel, t / "modules" / Path(rel).name)
            names.append(Path(rel).name)
        (t / "modules" / "order").write_text("\n".join(names) + "\n")
        (t / "init").write_text(init)
        (t / "init").chmod(0o755)
        files = subprocess.run(["find", "."], cwd=t, capture_output=True, check=True).stdout
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=t, input=files,
                              capture_output=True, check=True).stdout
        tmp_out = out.with_suffix(".tmp")
        with open(tmp_out, "wb") as f:
            subprocess.run(["gzip", "-1"], input=cpio, stdout=f, check=True)
        tmp_out.rename(out)
