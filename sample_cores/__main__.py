"""``python -m sample_cores``: build sample cores, run commands in live guests.

    python -m sample_cores build i40e-leak --kernel 6.1   # prints the core's directory
    python -m sample_cores live i40e-leak --kernel 6.12 -- drgn -c /proc/kcore ...
    python -m sample_cores args i40e-leak --kernel 6.1    # "-c CORE -s VMLINUX -d ..." for vmcore-tools
    python -m sample_cores show i40e-leak --kernel 6.1    # the manifest's ground truth, summarized
    python -m sample_cores fetch --kernel 5.10
    python -m sample_cores list
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from pathlib import Path

from .kernels import BUILT_LINES, KERNEL_LINES, fetch
from .scenarios import DEFAULT_KERNEL, DEFAULT_SCENARIO, SCENARIOS, build, live, prune


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def target_args(core_dir: Path) -> list[str]:
    """vmcore-tools options that open the core in ``core_dir`` with its debug info."""
    m = json.loads((core_dir / "manifest.json").read_text())
    k = m["kernel"]
    out = ["-c", str(core_dir / m["core"]["file"]), "-s", k["vmlinux"]]
    for ko in k["test_modules"].values():
        out += ["-d", ko]
    return out + ["-d", k["debug_modules_dir"]]


def summary(core_dir: Path) -> str:
    m = json.loads((core_dir / "manifest.json").read_text())
    leaks = Counter((x["order"], "refcount 1" if x["refcount"] == 1 else "bias-like refcount")
                    for x in m["planted_leaks"])
    mi = m["meminfo_kb"]
    lines = [
        f"sample core   {core_dir}",
        f"scenario      {m['scenario']}: {m['description']}",
        f"kernel        {m['kernel']['abi']} ({m['kernel']['package_version']})",
        f"core          {m['core']['file']} ({m['core']['format']}, {m['core']['bytes'] >> 20} MiB)",
        f"guest         {m['guest']['memory_mb']} MB, QEMU {m['guest']['qemu']}, "
        f"NICs: {', '.join(m['guest']['nics'])}",
        "net devices   " + ", ".join(f"{n} ({d['driver']})" for n, d in sorted(m["netdevs"].items())),
        f"meminfo       MemTotal {mi['MemTotal'] >> 10} MiB, MemFree {mi['MemFree'] >> 10} MiB, "
        f"Slab {mi['Slab'] >> 10} MiB",
        f"planted leaks {len(m['planted_leaks'])} pages (ground truth, for tests only):",
    ]
    lines += [f"  {n:4} order-{o} pages, {kind}" for (o, kind), n in sorted(leaks.items())]
    kinds = ", ".join(sorted({d["kind"].replace("_", " ") for d in m["decoys"]}))
    lines.append(f"decoys        {len(m['decoys'])} ({kinds}): not leaks")
    parked = Counter(p["kind"] for p in m["parked"])
    lines.append(f"parked        {len(m['parked'])} pages held outside the rx slots ("
                 + ", ".join(f"{k} {n}" for k, n in sorted(parked.items())) + "): not leaks")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # what follows -- is the live command, whole: argparse would take its
    # options (or our --kernel after the scenario) for its own
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m sample_cores", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    kernels = sorted(KERNEL_LINES) + sorted(BUILT_LINES)
    b = sub.add_parser("build", help="build a scenario's core; print its directory")
    b.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO, choices=sorted(SCENARIOS))
    b.add_argument("--kernel", default=DEFAULT_KERNEL, choices=kernels + ["all"])
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    lv = sub.add_parser("live", help="boot a scenario and run a command inside it")
    lv.add_argument("scenario", choices=sorted(SCENARIOS))
    lv.add_argument("--kernel", default=DEFAULT_KERNEL, choices=kernels)
    lv.add_argument("command", nargs="*", help="the command (after --, so its options are its own)")
    for name, text in (("args", "print vmcore-tools target options for a built core"),
                       ("show", "summarize a built core's manifest")):
        p = sub.add_parser(name, help=text)
        p.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO, choices=sorted(SCENARIOS))
        p.add_argument("--kernel", default=DEFAULT_KERNEL, choices=kernels)
    f = sub.add_parser("fetch", help="download and unpack a kernel line")
    f.add_argument("--kernel", default="all", choices=kernels + ["all"])
    sub.add_parser("list", help="list scenarios and kernel lines")
    sub.add_parser("prune", help="delete cached cores that are not the current build of their scenario")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "list":
            for sc in SCENARIOS.values():
                print(f"{sc.name:18} {sc.description}")
            print("kernels:", " ".join(kernels))
        elif args.cmd == "prune":
            removed = prune(log=_log)
            print(f"removed {len(removed)} stale core directories")
        elif args.cmd == "fetch":
            for line in kernels if args.kernel == "all" else [args.kernel]:
                print(fetch(line, log=_log).root)
        elif args.cmd == "build":
            lines = SCENARIOS[args.scenario].kernel_lines if args.kernel == "all" else [args.kernel]
            for line in lines:
                print(build(args.scenario, line, log=_log, force=args.force))
        elif args.cmd == "args":
            # plain spaces: meant for $(...) in a shell, and cache paths hold no blanks
            print(" ".join(target_args(build(args.scenario, args.kernel, log=_log))))
        elif args.cmd == "show":
            print(summary(build(args.scenario, args.kernel, log=_log)))
        elif args.cmd == "live":
            cmd = args.command + command
            rc, out, err = live(args.scenario, args.kernel, shlex.join(cmd), log=_log)
            sys.stdout.write(out)
            sys.stderr.write(err)
            return rc
    except (RuntimeError, KeyError, OSError) as e:
        print(f"sample_cores: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
