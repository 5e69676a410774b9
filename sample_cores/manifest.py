"""Ground truth recorded next to each core (``manifest.json``).

Everything here comes from the guest's own view captured right before the
dump (``/proc`` files, ``/proc/kpageflags``, ``/proc/kpagecount``), from
the test modules' records of the pages they lost (``truth/``) and from the
kernel log lines they print (decoys, rings, owned pages).  It is what the analyzer's
results are measured against; the analyzer itself never reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

SCHEMA = 1

#: Bit numbers of include/uapi/linux/kernel-page-flags.h (a stable ABI).
KPF_BITS = {
    "LOCKED": 0, "ERROR": 1, "REFERENCED": 2, "UPTODATE": 3, "DIRTY": 4, "LRU": 5,
    "ACTIVE": 6, "SLAB": 7, "WRITEBACK": 8, "RECLAIM": 9, "BUDDY": 10, "MMAP": 11,
    "ANON": 12, "SWAPCACHE": 13, "SWAPBACKED": 14, "COMPOUND_HEAD": 15,
    "COMPOUND_TAIL": 16, "HUGE": 17, "UNEVICTABLE": 18, "HWPOISON": 19, "NOPAGE": 20,
    "KSM": 21, "THP": 22, "OFFLINE": 23, "ZERO_PAGE": 24, "IDLE": 25, "PGTABLE": 26,
}

#: the fake drivers (fake_i40e, fake_intel's fake_ixgbe, ...), vmct_workload and vmct_shapes log these
LEAK_RE = re.compile(
    r"(?:fake_\w+|vmct_\w+): leaked pfn=(\d+) order=(\d+) refcount=(-?\d+) ring=(\S+)")
#: pages a test module owns (vmct_shapes without a plain pointer, vmct_released a user buffer's pages)
OWNED_RE = re.compile(r"vmct_\w+: owned pfn=(\d+)(?: pages=(\d+))? kind=(\S+)")
#: pages a test module left held only by an object it lost (vmct_shapes' rx
#: buffer array, vmct_slabfill's page records)
HIDDEN_RE = re.compile(r"vmct_\w+: hidden pfn=(\d+) holder=([0-9a-f]+)")
#: objects vmct_slabfill lost, still allocated, per shape
LOST_OBJECTS_RE = re.compile(r"vmct_slabfill: lost shape=(\w+) objects=(\d+)")
PARKED_RE = re.compile(
    r"fake_\w+: parked pfn=(\d+) order=(\d+) refcount=(-?\d+) kind=(\S+) ring=(\S+)")
RING_RE = re.compile(
    r"fake_\w+: ring dev=(\S+) queue=(\d+) count=(\d+) populated=(\d+) pfn_sum=(\d+)")
DECOY_RE = re.compile(
    r"vmct_workload: decoy kind=(\S+) pfn=(\d+) order=(\d+) refcount=(-?\d+)")


def parse_kv(text: str) -> dict[str, int]:
    """``/proc/meminfo`` (kB) and ``/proc/vmstat`` style ``key value`` lines."""
    out = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_buddyinfo(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        m = re.match(r"Node (\d+), zone\s+(\S+)\s+(.*)", line)
        if m:
            rows.append({"node": int(m.group(1)), "zone": m.group(2),
                         "free_blocks": [int(x) for x in m.group(3).split()]})
    return rows


def parse_slabinfo(text: str) -> dict[str, dict[str, int]]:
    caches = {}
    for line in text.splitlines()[2:]:
        head = line.split(":")[0].split()
        if len(head) < 6:
            continue
        name, active, num, objsize, objperslab, pagesperslab = head[:6]
        caches[name] = {"active_objs": int(active), "num_objs": int(num),
                        "objsize": int(objsize), "objperslab": int(objperslab),
                        "pagesperslab": int(pagesperslab)}
    return caches


def kpage_summary(proc_dir: Path) -> tuple[dict, dict]:
    """Page counts by KPF flag, and a summary of /proc/kpagecount."""
    flags = np.fromfile(proc_dir / "kpageflags.bin", dtype="<u8")
    counts = np.fromfile(proc_dir / "kpagecount.bin", dtype="<u8")
    by_flag = {name: int(np.count_nonzero(flags & np.uint64(1 << bit)))
               for name, bit in KPF_BITS.items()}
    present = ~(flags & np.uint64(1 << KPF_BITS["NOPAGE"])).astype(bool)
    kpagecount = {
        "pages": int(counts.size),
        "zero": int(np.count_nonzero(counts == 0)),
        "one": int(np.count_nonzero(counts == 1)),
        "more": int(np.count_nonzero(counts > 1)),
    }
    return {"pages": int(flags.size), "present": int(np.count_nonzero(present)),
            "flags": by_flag}, kpagecount


def parse_log(text: str) -> tuple[list[dict], list[dict]]:
    leaks = [{"pfn": int(m[0]), "order": int(m[1]), "refcount": int(m[2]), "ring": m[3]}
             for m in LEAK_RE.findall(text)]
    decoys = [{"kind": m[0], "pfn": int(m[1]), "order": int(m[2]), "refcount": int(m[3])}
              for m in DECOY_RE.findall(text)]
    return leaks, decoys


def parse_owned(text: str) -> list[dict]:
    """Pages the test modules own (``kind``): vmct_shapes' lists, chains,
    tables, mappings, thread stacks and large buffers, vmct_hosts' pages on
    hot-added memory, vmct_cma's buffers.  A line with ``pages=N`` stands
    for N pages from ``pfn`` on."""
    return [{"pfn": int(m[0]) + i, "kind": m[2]} for m in OWNED_RE.findall(text) for i in range(int(m[1] or 1))]


def parse_hidden(text: str) -> list[dict]:
    """Pages that only a lost object holds, and that object's address."""
    return [{"pfn": int(m[0]), "holder": int(m[1], 16)} for m in HIDDEN_RE.findall(text)]


def parse_lost_objects(text: str) -> dict[str, int]:
    """Allocated objects a test module lost, per shape: what reachability
    must find unreachable."""
    return {m[0]: int(m[1]) for m in LOST_OBJECTS_RE.findall(text)}


def parse_parked(text: str) -> list[dict]:
    """Pages the fake drivers left held outside their rx slots: a frame in
    progress (kind ``skb`` or ``xdp`` in the ring, ``slot-skb`` in a slot)
    and a frame on the XDP tx ring (``xdp-tx``)."""
    return [{"pfn": int(m[0]), "order": int(m[1]), "refcount": int(m[2]), "kind": m[3], "ring": m[4]}
            for m in PARKED_RE.findall(text)]


def parse_rings(text: str) -> list[dict]:
    """The rx rings fake_intel's drivers filled, as they were at the dump:
    populated slots and the sum of their pages' PFNs."""
    return [{"netdev": m[0], "queue": int(m[1]), "count": int(m[2]), "populated": int(m[3]),
             "pfn_sum": int(m[4])} for m in RING_RE.findall(text)]


def truth_records(out_dir: Path) -> str:
    """The test modules' complete records of the pages they lost (one
    ``leaked`` line per page), as the guest copied them from debugfs."""
    return "".join(p.read_text() for p in sorted((out_dir / "truth").glob("*")))


def guest_truth(out_dir: Path) -> dict:
    """The manifest sections that come from the guest's own capture.  The
    planted leaks come from the modules' truth records, not from the kernel
    log, which keeps only the newest 128 KiB of lines."""
    proc = out_dir / "proc"
    read = lambda name: (proc / name).read_text()  # noqa: E731
    dmesg = (out_dir / "dmesg.txt").read_text(errors="replace")
    leaks, _ = parse_log(truth_records(out_dir))
    _, decoys = parse_log(dmesg)
    kpageflags, kpagecount = kpage_summary(proc)
    return {
        "osrelease": read("osrelease").strip(),
        "planted_leaks": leaks,
        "decoys": decoys,
        "parked": parse_parked(dmesg),
        "owned": parse_owned(dmesg),
        "hidden": parse_hidden(dmesg),
        "lost_objects": parse_lost_objects(dmesg),
        "fake_rings": parse_rings(dmesg),
        "netdevs": json.loads((out_dir / "netdevs.json").read_text()),
        "meminfo_kb": parse_kv(read("meminfo")),
        "vmstat": parse_kv(read("vmstat")),
        "buddyinfo": parse_buddyinfo(read("buddyinfo")),
        "slabinfo": parse_slabinfo(read("slabinfo")),
        "kpageflags": kpageflags,
        "kpagecount": kpagecount,
        "raw_files": sorted(p.name for p in proc.iterdir()),
    }
