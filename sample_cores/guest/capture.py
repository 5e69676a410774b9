"""Guest side of the ground truth: the kernel's own view, right before the dump.

Copies the test modules' records of the pages they lost (debugfs,
vmct_truth.h: complete however large the leak, where the kernel log keeps
only its end) and, before a dump, has the modules free them; then the /proc
text files the manifest records and the raw /proc/kpageflags and
/proc/kpagecount arrays (decoded on the host), so that these describe the
memory the dump holds.  A live guest keeps the records: its commands read
them.

    capture.py OUT MODE      (MODE: dump, kdump or live, as init.sh's)
"""

import shutil
import sys
from pathlib import Path

TRUTH_DIR = "/sys/kernel/debug/vmct_truth"
RELEASE_DIR = "/sys/kernel/debug/vmct_truth_release"
PROC_FILES = ("meminfo", "vmstat", "buddyinfo", "pagetypeinfo", "slabinfo", "zoneinfo",
              "vmallocinfo", "iomem")


def main(out: str, mode: str) -> int:
    truth = Path(out) / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    for record in sorted(Path(TRUTH_DIR).glob("*")):
        (truth / record.name).write_bytes(record.read_bytes())
        if mode != "live":
            Path(RELEASE_DIR, record.name).write_text("1")
    dest = Path(out) / "proc"
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROC_FILES:
        try:
            (dest / name).write_bytes(Path("/proc", name).read_bytes())
        except OSError as e:
            print(f"capture: /proc/{name}: {e}", file=sys.stderr)
    for name in ("kpageflags", "kpagecount"):
        with open(f"/proc/{name}", "rb") as src, open(dest / f"{name}.bin", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    (dest / "osrelease").write_text(Path("/proc/sys/kernel/osrelease").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
