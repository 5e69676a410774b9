"""How much each inference holds on the sample cores, and where the planted
leaks end up: the table issue 34 asks for.

For each core: the allocations the scan proves held, the pages of the
inferred tier by rule (``registry.INFERENCES``), the blocks taken without
``__GFP_COMP`` the census found (``census.blocks``), and of the planted
leaks how many are orphaned, in the tier, or held (a false hold: should be
none; a stale word in a kmalloc object's slack, on a kernel that does not
zero slab objects, is in the tier, rule kmalloc slack).

    .venv/bin/python benchmarks/inferred_tier.py [--scenario i40e-leak no-leak] [--kernel 5.10 6.1 ...]

It builds a core that is not cached yet.  Results are recorded in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sample_cores.__main__ import target_args  # noqa: E402
from sample_cores.scenarios import build  # noqa: E402
from vmcore_tools.core.target import open_program  # noqa: E402
from vmcore_tools.leaks.orphans import orphans  # noqa: E402


def row(scenario: str, kernel: str) -> dict:
    path = build(scenario, kernel, log=lambda *_: None)
    args = target_args(path)
    manifest = json.loads((path / "manifest.json").read_text())
    r = orphans(open_program(args[1], args[3], args[5::2]))
    a = r.census.memmap
    by_rule: Counter[str] = Counter()
    for g in r.inferred:
        by_rule[g.rule] += g.pages
    planted = {x["pfn"] for x in manifest["planted_leaks"]}
    orphaned = set(r.found.pfn.tolist())
    return {"core": f"{scenario} {kernel}", "proved_allocations": int(r.referenced_heads.size),
            "inferred_pages": r.inferred_pages, "by_rule": dict(by_rule),
            "blocks": int(a.blocks.size), "block_pages": int(a.pages_of(a.blocks).size),
            "planted": len(planted), "orphaned": len(planted & orphaned),
            "in_tier": len(planted & set(r.inferred_rules)),
            "held": len(planted - orphaned - set(r.inferred_rules))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", nargs="+", default=["i40e-leak", "no-leak"])
    p.add_argument("--kernel", nargs="+", default=["5.10", "6.1", "6.12", "7.3"])
    o = p.parse_args()
    print("| core | proved allocations | inferred pages (by rule) | blocks (pages) | planted: orphaned / "
          "in tier / held |")
    print("| --- | --- | --- | --- | --- |")
    for kernel in o.kernel:
        for scenario in o.scenario:
            d = row(scenario, kernel)
            rules = ", ".join(f"{k} {v}" for k, v in sorted(d["by_rule"].items())) or "-"
            print(f"| {d['core']} | {d['proved_allocations']} | {d['inferred_pages']} ({rules}) | "
                  f"{d['blocks']} ({d['block_pages']}) | {d['orphaned']} / {d['in_tier']} / {d['held']} "
                  f"of {d['planted']} |", flush=True)


if __name__ == "__main__":
    main()
