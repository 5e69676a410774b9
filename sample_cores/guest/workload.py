"""Guest workload: give every page owner class something to show, then hold it.

Runs inside the sample-core guest (host Python over 9p, stdlib only).  It
stays alive while the host dumps memory, because its anonymous memory and
its sockets are part of what the dump must contain:

* page cache: a file written and read back on an ext4 disk,
* anon: a touched bytearray held by this process,
* shmem/tmpfs: a file in /dev/shm,
* slab: many files (dentries, inodes) in tmpfs,
* NIC rings: each NIC (virtio-net, e1000e, igb) moved to its own network
  namespace on a QEMU hub, with UDP and TCP traffic between them,
* page_frag users: TCP connections over loopback whose receiver never reads,
* page_pool: a veth pair with an XDP program on the receiving end, whose
  receiver never reads (veth copies skbs for XDP into page_pool pages on
  6.12, into alloc_page() pages on 5.10 and 6.1),
* fsdax in use, where the guest has persistent memory (/dev/pmem*): an
  ext4 mounted with -o dax on it and a file of it mapped shared and
  written, so its ZONE_DEVICE pages are in this process's page tables and
  the file's mapping,
* device DAX in use, where the scenario names a pmem range for it
  (--devdax-at): its namespace turned into a dax device the way ndctl
  create-namespace -m devdax --map=dev does, and the device mapped shared
  and written.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

NETNS = {"virtio_net": ("vmct-a", "10.9.0.1"), "e1000e": ("vmct-b", "10.9.0.2"),
         "igb": ("vmct-c", "10.9.0.3")}
MB = 1024 * 1024


def log(msg: str) -> None:
    print(f"workload: {msg}", flush=True)


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def nics() -> dict[str, dict]:
    """Each net device bound to a driver: driver, PCI device, MAC."""
    out = {}
    for dev in sorted(Path("/sys/class/net").iterdir()):
        drv = dev / "device" / "driver"
        if drv.exists():
            out[dev.name] = {
                "driver": os.path.basename(os.readlink(drv)),
                "device": (dev / "device").resolve().name,
                "address": (dev / "address").read_text().strip(),
            }
    return out


def setup_network(devices: dict[str, dict]) -> list[tuple[str, str]]:
    """One namespace per real NIC; returns [(netns, address)] of those set up."""
    up = []
    for ifname, nic in devices.items():
        driver = nic["driver"]
        if driver not in NETNS:
            run("ip", "link", "set", ifname, "up")  # e.g. the fake i40e netdev
            continue
        ns, addr = NETNS[driver]
        run("ip", "netns", "add", ns)
        run("ip", "link", "set", ifname, "netns", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
        run("ip", "-n", ns, "link", "set", ifname, "up")
        nic["netns"] = ns
        up.append((ns, addr))
        log(f"{ifname} ({driver}) -> {ns} {addr}")
    return up


RECEIVER = """
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9000))
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 9001)); t.listen(8)
print("listening", flush=True)
held = []
while True:
    c, _ = t.accept()
    held.append(c)   # never read: received data stays queued in this socket
"""

SENDER = """
import socket, sys, time
dst = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3000):
    try:
        u.sendto(b"vmct-%05d " % i * 40, (dst, 9000))
    except OSError:
        time.sleep(0.01)
t = socket.create_connection((dst, 9001), timeout=30)
t.setblocking(False)
sent = 0
deadline = time.time() + 20
while sent < 2 * 1024 * 1024 and time.time() < deadline:
    try:
        sent += t.send(b"x" * 65536)
    except BlockingIOError:
        time.sleep(0.05)
print("sent", sent, flush=True)
time.sleep(10**9)
"""


def net_traffic(up: list[tuple[str, str]]) -> list[subprocess.Popen]:
    procs = []
    if len(up) < 2:
        log("fewer than two NICs: no wire traffic")
        return procs
    for ns, _ in up:
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", RECEIVER],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        p.stdout.readline()
        procs.append(p)
    senders = []
    for i, (ns, _) in enumerate(up):
        dst = up[(i + 1) % len(up)][1]
        s = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, dst],
                             stdout=subprocess.PIPE, text=True)
        senders.append(s)
    for s in senders:
        assert s.stdout is not None
        log(f"wire traffic: {s.stdout.readline().strip()}")
    return procs + senders


#: a veth pair: the sending end stays here, the receiving end (with XDP) gets a namespace
VETH = {"send": ("vmct-v0", "10.9.1.1"), "recv": ("vmct-v1", "10.9.1.2"), "netns": "vmct-d"}

XDP_RECEIVER = """
import ctypes, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF, BPF_PROG_LOAD, BPF_LINK_CREATE, BPF_PROG_TYPE_XDP, BPF_XDP = 321, 5, 28, 6, 37

def bpf(cmd, fields, fmt):
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(fmt, attr, 0, *fields)
    fd = libc.syscall(SYS_BPF, cmd, attr, len(attr))
    if fd < 0:
        sys.exit(f"bpf({cmd}): errno {ctypes.get_errno()}")
    return fd

# r0 = XDP_PASS (2); exit -- loaded with bpf(2) directly: the guest has no BPF compiler
insns = ctypes.create_string_buffer(bytes.fromhex("b700000002000000" "9500000000000000"))
lic = ctypes.create_string_buffer(b"GPL")
prog = bpf(BPF_PROG_LOAD, (BPF_PROG_TYPE_XDP, 2, ctypes.addressof(insns), ctypes.addressof(lic)), "<IIQQ")
link = bpf(BPF_LINK_CREATE, (prog, socket.if_nametoindex(sys.argv[1]), BPF_XDP, 0), "<IIII")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9000))
print("xdp attached", flush=True)
while True:
    time.sleep(3600)   # the datagrams stay queued: never read
"""


def veth_xdp() -> list[subprocess.Popen]:
    """A veth pair with an XDP program (XDP_PASS) on its receiving end, and
    UDP datagrams sent across that nobody reads.  veth runs XDP on buffers
    it copies each skb into; on 6.12 those come from its page_pool, so the
    queued datagrams keep page_pool pages in flight."""
    (v0, a0), (v1, a1), ns = VETH["send"], VETH["recv"], VETH["netns"]
    run("ip", "link", "add", v0, "type", "veth", "peer", "name", v1)
    run("ip", "netns", "add", ns)
    run("ip", "link", "set", v1, "netns", ns)
    run("ip", "addr", "add", f"{a0}/24", "dev", v0)
    run("ip", "link", "set", v0, "up")
    run("ip", "-n", ns, "addr", "add", f"{a1}/24", "dev", v1)
    run("ip", "-n", ns, "link", "set", v1, "up")
    recv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", XDP_RECEIVER, v1],
                            stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None
    line = recv.stdout.readline().strip()
    if line != "xdp attached":
        log(f"veth xdp: no XDP program ({recv.wait()})")
        return []
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(400):
        u.sendto(b"vmct-pp-%05d " % i * 20, (a1, 9000))
    u.close()
    log(f"veth xdp: {v0} -> {ns}/{v1}, 400 datagrams sent, none read")
    return [recv]


def loopback_frags(n: int = 8) -> list[socket.socket]:
    """TCP connections over loopback with unread data (skb page frags)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(n)
    held = [srv]
    for _ in range(n):
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        c.setblocking(False)
        sent = 0
        while sent < 256 * 1024:
            try:
                sent += c.send(b"f" * 16384)
            except BlockingIOError:
                break
        held += [c, a]
    return held


def page_cache(disk: str, mb: int) -> None:
    mnt = Path("/tmp/disk")
    mnt.mkdir(exist_ok=True)
    run("mkfs.ext4", "-q", "-F", disk)
    run("mount", disk, str(mnt))
    block = os.urandom(MB)
    with open(mnt / "cached.bin", "wb") as f:
        for _ in range(mb):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    with open(mnt / "cached.bin", "rb") as f:
        while f.read(MB):
            pass


def fsdax(dev: str, mb: int) -> mmap.mmap:
    """A file on an ext4 mounted with -o dax over ``dev``, mapped shared and
    written page by page: DAX maps the persistent memory itself, no page
    cache between (``dax_iomap_fault()``)."""
    mnt = Path("/tmp/pmem")
    mnt.mkdir(exist_ok=True)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", dev)
    run("mount", "-o", "dax", dev, str(mnt))
    with open(mnt / "dax.bin", "w+b") as f:
        f.truncate(mb * MB)
        mapped = mmap.mmap(f.fileno(), mb * MB, mmap.MAP_SHARED)
    for i in range(0, mb * MB, 4096):
        mapped[i] = 0x5A
    return mapped


ND = Path("/sys/bus/nd")


def devdax(start_mb: int, mb: int) -> mmap.mmap:
    """Turn the pmem namespace at ``start_mb`` into device DAX through the
    libnvdimm sysfs ndctl writes (the region's dax seed: uuid, 2 MiB align,
    the memmap on the device itself, the namespace; bound to ``dax_pmem``),
    then map ``mb`` of ``/dev/daxN.M`` shared and write every page."""
    ns = next(d.name for d in (ND / "devices").glob("namespace*")
              if (d / "resource").exists() and int((d / "resource").read_text(), 16) == start_mb * MB)
    (ND / "drivers/nd_pmem/unbind").write_text(ns)
    region = (ND / "devices" / ns).resolve().parent
    dax = (region / "dax_seed").read_text().strip()
    for attr, value in (("uuid", str(uuid.uuid4())), ("align", str(2 * MB)), ("mode", "pmem"), ("namespace", ns)):
        (ND / "devices" / dax / attr).write_text(value)
    (ND / "drivers/dax_pmem/bind").write_text(dax)
    for _ in range(100):
        chars = sorted(Path("/dev").glob("dax*"))
        if chars:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"{dax}: no /dev/dax* after binding dax_pmem")
    fd = os.open(chars[0], os.O_RDWR)
    mapped = mmap.mmap(fd, mb * MB, mmap.MAP_SHARED)
    os.close(fd)
    for i in range(0, mb * MB, 4096):
        mapped[i] = 0xA5
    return mapped


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--disk", default="/dev/vda")
    ap.add_argument("--page-cache-mb", type=int, default=48)
    ap.add_argument("--anon-mb", type=int, default=64)
    ap.add_argument("--shmem-mb", type=int, default=24)
    ap.add_argument("--devdax-at", type=int, default=0, help="MB where the pmem range for device DAX starts")
    ap.add_argument("--netdevs-only", action="store_true",
                    help="record the net devices and hold nothing (a small kernel without disk or netns)")
    args = ap.parse_args()
    if args.netdevs_only:
        devices = nics()
        for ifname in devices:
            run("ip", "link", "set", ifname, "up")
        return ready(args.out, devices, [])

    if Path(args.disk).exists():
        page_cache(args.disk, args.page_cache_mb)
        log(f"page cache: {args.page_cache_mb} MB file on ext4")
    anon = bytearray(args.anon_mb * MB)
    for i in range(0, len(anon), 4096):
        anon[i] = 1
    log(f"anon: {args.anon_mb} MB")
    block = os.urandom(MB)
    with open("/dev/shm/vmct-shmem", "wb") as f:
        for _ in range(args.shmem_mb):
            f.write(block)
    log(f"shmem: {args.shmem_mb} MB")
    many = Path("/tmp/many")
    many.mkdir()
    for i in range(20000):
        (many / f"f{i}").touch()
    log("slab: 20000 tmpfs files")
    held = loopback_frags()
    log(f"page_frag: {len(held) // 2} loopback sockets with unread data")
    devdax_map = devdax(args.devdax_at, 16) if args.devdax_at else None
    if devdax_map is not None:
        log(f"devdax: 16 MB of the dax device at {args.devdax_at} MB mapped")
    pmem = sorted(Path("/dev").glob("pmem*"))
    dax = fsdax(str(pmem[0]), 16) if pmem else None
    if dax is not None:
        log(f"fsdax: 16 MB file mapped on an ext4 -o dax over {pmem[0]}")
    devices = nics()
    procs = net_traffic(setup_network(devices)) + veth_xdp()
    return ready(args.out, devices, [anon, held, procs, dax, devdax_map])


def ready(out: str, devices: dict[str, dict], keep: list) -> int:
    """Record the net devices, tell init we are ready, and hold ``keep``
    (memory, sockets, processes) until the dump is taken."""
    # ground truth for the ring walkers: which driver each net device has
    (Path(out) / "netdevs.json").write_text(json.dumps(devices, indent=1, sort_keys=True))
    Path("/run/vmct-workload-ready").write_text(str(os.getpid()))
    log("ready")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)
        assert keep is not None


if __name__ == "__main__":
    sys.exit(main())
