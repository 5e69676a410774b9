"""``python -m sample_cores``: build sample cores, run commands in live guests.

    python -m sample_cores build i40e-leak --kernel 6.1   # prints the core's directory
    python -m sample_cores live i40e-leak --kernel 6.12 -- drgn -c /proc/kcore ...
    python -m sample_cores fetch --kernel 5.10
    python -m sample_cores list
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .kernels import KERNEL_LINES, fetch
from .scenarios import DEFAULT_KERNEL, DEFAULT_SCENARIO, SCENARIOS, build, live


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sample_cores", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    kernels = sorted(KERNEL_LINES)
    b = sub.add_parser("build", help="build a scenario's core; print its directory")
    b.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO, choices=sorted(SCENARIOS))
    b.add_argument("--kernel", default=DEFAULT_KERNEL, choices=kernels + ["all"])
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    lv = sub.add_parser("live", help="boot a scenario and run a command inside it")
    lv.add_argument("scenario", choices=sorted(SCENARIOS))
    lv.add_argument("--kernel", default=DEFAULT_KERNEL, choices=kernels)
    lv.add_argument("command", nargs=argparse.REMAINDER)
    f = sub.add_parser("fetch", help="download and unpack a kernel line")
    f.add_argument("--kernel", default="all", choices=kernels + ["all"])
    sub.add_parser("list", help="list scenarios and kernel lines")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "list":
            for sc in SCENARIOS.values():
                print(f"{sc.name:18} {sc.description}")
            print("kernels:", " ".join(kernels))
        elif args.cmd == "fetch":
            for line in kernels if args.kernel == "all" else [args.kernel]:
                print(fetch(line, log=_log).root)
        elif args.cmd == "build":
            for line in kernels if args.kernel == "all" else [args.kernel]:
                print(build(args.scenario, line, log=_log, force=args.force))
        elif args.cmd == "live":
            cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
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
