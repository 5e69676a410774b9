"""What one `vmcore-tools metrics` run costs on a live host: boots a sample
guest and, inside it, runs the command on the running kernel (/proc/kcore)
as the systemd timer would, then prints its wall and CPU seconds, peak RSS
and the bytes it read (rchar: /proc/kcore above all, and the debug info).

    .venv/bin/python benchmarks/metrics_live_cost.py [--scenario i40e-leak] [--kernel 6.1]

Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sample_cores.build_modules import debug_info  # noqa: E402
from sample_cores.kernels import fetch  # noqa: E402
from sample_cores.scenarios import SCENARIOS, live  # noqa: E402

#: runs inside the guest: the command in process, then its own counters
PROBE = """
import json, resource, sys, time
from vmcore_tools.cli.main import main
args = sys.argv[1:]
vmlinux, debug = args[0], args[1:]
t0 = time.monotonic()
try:
    main(["metrics", "--quiet", "--textfile", "/tmp/vmcore_tools.prom", "-s", vmlinux,
          *[x for d in debug for x in ("-d", d)]], standalone_mode=False)
    rc = 0
except SystemExit as e:
    rc = e.code
wall = time.monotonic() - t0
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
ru = resource.getrusage(resource.RUSAGE_SELF)
with open("/proc/meminfo") as f:
    total_kb = int(f.readline().split()[1])
print("VMCT-COST " + json.dumps({"rc": rc, "wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
                                 "peak_rss_mb": round(ru.ru_maxrss / 1024), "read_mb": round(int(io["rchar"]) / 2**20),
                                 "guest_mb": total_kb // 1024,
                                 "series": sum(1 for line in open("/tmp/vmcore_tools.prom") if not line.startswith("#"))}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="i40e-leak")
    p.add_argument("--kernel", default="6.1")
    o = p.parse_args()
    k = fetch(o.kernel)
    debug = [str(k.vmlinux), *debug_info(k, SCENARIOS[o.scenario].modules)]
    probe = REPO / "benchmarks" / ".metrics_live_probe.py"
    probe.write_text(PROBE)
    try:
        rc, out, err = live(o.scenario, o.kernel, " ".join([sys.executable, str(probe), *debug]))
    finally:
        probe.unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("VMCT-COST ")), None)
    if rc != 0 or line is None:
        sys.exit(f"the guest run failed ({rc}): {err[-2000:]}")
    cost = json.loads(line.removeprefix("VMCT-COST "))
    print(f"{o.scenario} {o.kernel}, live ({cost['guest_mb']} MB guest): metrics exit {cost['rc']}, "
          f"{cost['wall_s']} s wall, {cost['cpu_s']} s CPU, peak RSS {cost['peak_rss_mb']} MB, "
          f"{cost['read_mb']} MB read, {cost['series']} series")


if __name__ == "__main__":
    main()
