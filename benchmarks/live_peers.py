"""Live, inside a booted benchmark guest: vmcore-tools ``census`` and
``report`` against ``/proc/kcore`` beside ``makedumpfile --mem-usage
/proc/kcore`` (the peer that reads a live kernel's page usage), wall time and
peak RSS of each.

    .venv/bin/python benchmarks/live_peers.py [--scenario scale-8g] [--kernel 6.1]

On the host it boots the scenario's guest (``sample_cores live``) and runs
itself inside with ``--inside``; the guest sees the host's filesystem, so the
same venv, vmlinux and debug info are used.  The guest runs under TCG, so
absolute times are those of an emulated CPU: compare the tools with each
other, not with the dump benchmarks.  Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from peers import BIN, measure  # noqa: E402


def inside(vmlinux: str, debug: list[str]) -> dict:
    target = ["-s", vmlinux, *(x for d in debug for x in ("-d", d))]
    tools = {
        "vmcore-tools census": [str(BIN / "vmcore-tools"), "census", "--json", "--quiet", *target],
        "vmcore-tools report": [str(BIN / "vmcore-tools"), "report", "--json", "--quiet", *target],
        "makedumpfile --mem-usage": ["makedumpfile", "--mem-usage", "/proc/kcore"],
    }
    measure(tools["vmcore-tools census"])     # warm-up: debug info read once over 9p, untimed
    return {name: measure(cmd) for name, cmd in tools.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="scale-8g")
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--inside", nargs="+", metavar="VMLINUX [DEBUG ...]", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        print(json.dumps(inside(args.inside[0], args.inside[1:])))
        return 0
    from sample_cores.build_modules import debug_info
    from sample_cores.kernels import fetch
    from sample_cores.scenarios import live
    k = fetch(args.kernel)
    debug = debug_info(k, log=lambda m: print(m, file=sys.stderr))
    rc, out, err = live(args.scenario, args.kernel,
                        shlex.join([sys.executable, __file__, "--inside", str(k.vmlinux), *debug]),
                        log=lambda m: print(m, file=sys.stderr),
                        cmdline="crashkernel=256M")     # --mem-usage refuses to run without one
    if rc != 0:
        print(err, file=sys.stderr)
        return 1
    results = json.loads(out)
    census = results["vmcore-tools census"]["seconds"]
    print(f"\nlive /proc/kcore in the {args.scenario} guest, kernel {args.kernel} (TCG)")
    print(f"{'tool':28} {'seconds':>8} {'peak RSS MB':>12} {'x census':>9}  result")
    for name, r in results.items():
        status = "ok" if r["rc"] == 0 else f"FAILED (rc {r['rc']}): {r['last']}"
        print(f"{name:28} {r['seconds']:8.2f} {r['rss_mb']:12.0f} {r['seconds'] / census:9.1f}  {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
