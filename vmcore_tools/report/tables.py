"""The tables of the reports, built once and rendered as text (the CLI) or
HTML (``htmlreport.py``).  Every builder takes the ``--json`` document of its
command, so what a table shows is what the JSON says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from vmcore_tools.census.classes import KERNEL_CLASSES


@dataclass
class Table:
    headers: list[str]
    rows: list[tuple]
    maxcolwidths: list[int | None] | None = None
    intfmt: str = ""
    floatfmt: str = "g"

    def text(self) -> str:
        return tabulate(self.rows, headers=self.headers, maxcolwidths=self.maxcolwidths,
                        intfmt=self.intfmt, floatfmt=self.floatfmt)

    def html(self) -> str:
        return tabulate(self.rows, headers=self.headers, tablefmt="html", intfmt=self.intfmt,
                        floatfmt=self.floatfmt)


def mib(pages: int, page_size: int) -> str:
    return f"{pages * page_size / 2**20:,.1f}"


def class_table(census: dict[str, Any]) -> Table:
    """Pages per owner class, largest first; kernel classes starred."""
    ps, total = census["page_size"], census["total_pages"]
    kernel = {k.label for k in KERNEL_CLASSES}
    return Table(["class (* kernel)", "pages", "MiB", "%"],
                 [(name + (" *" if name in kernel else ""), n, n * ps / 2**20, 100 * n / total)
                  for name, n in sorted(census["classes"].items(), key=lambda kv: -kv[1]) if n],
                 intfmt=",", floatfmt=",.1f")


def meminfo_table(census: dict[str, Any]) -> Table:
    return Table(["", "census", "kernel", ""],
                 [(name, row["census_kb"], row["kernel_kb"], row["note"]) for name, row in census["meminfo"].items()],
                 intfmt=",")


def suspect_table(orphans: dict[str, Any], top: int | None = None) -> Table:
    return Table(["#", "pages", "evidence"],
                 [(s["id"], s["pages"], s["label"]) for s in orphans["suspects"][:top]],
                 [None, None, 100])


def _frame(o: dict[str, Any]) -> str:
    f = o["frame"]
    if not f:
        return "-"
    return f"{f['dst']} <- {f['src']} {f['ethertype']} @{f['offset']}" + (f" ({f['netdev']})" if f["netdev"] else "")


def orphan_table(orphans: dict[str, Any], top: int) -> Table:
    return Table(["pfn", "order", "refcount", "node", "suspect", "contents", "stale frame"],
                 [(o["pfn"], o["order"], o["refcount"], o["node"], o["suspect"], o["contents"] or "-", _frame(o))
                  for o in orphans["orphans"][:top]])


def range_table(orphans: dict[str, Any], per_suspect: int = 4) -> Table:
    """Where each suspect's pages lie: its first runs of contiguous PFNs."""
    return Table(["#", "runs", "first runs (pfn+pages)"],
                 [(s["id"], s["range_count"], " ".join(f"{lo}+{n}" for lo, n in s["ranges"][:per_suspect])
                   + (" ..." if s["range_count"] > per_suspect else ""))
                  for s in orphans["suspects"]], [None, None, 100])


def referenced_table(orphans: dict[str, Any], top: int) -> Table:
    return Table(["pfn", "order", "refcount", "referenced from"],
                 [(x["pfn"], x["order"], x["refcount"], "; ".join(x["references"][:2]))
                  for x in orphans["referenced"][:top]])


def inferred_table(orphans: dict[str, Any], top: int) -> Table:
    """The inferred tier's groups: the rule, what the allocations look like, and some of them."""
    return Table(["pages", "allocations", "order", "refcount", "held by", "pfns"],
                 [(g["pages"], g["allocations"], g["order"], 1 if g["refcount"] == 1 else ">1", g["rule"],
                   " ".join(map(str, g["sample"][:4])) + (" ..." if g["allocations"] > 4 else ""))
                  for g in orphans["inferred"][:top]])


def ring_table(rings: list[dict[str, Any]]) -> Table:
    return Table(["driver", "device", "ring", "slots", "populated", "outside", "pages", "orders",
                  "stack refs", "bias<0", "indices", "driver stats"],
                 [(r["driver"], r["device"], f"{r['kind']}{r['queue']}", r["slots"], r["populated"],
                   r["outside_slots"], r["pages"], "/".join(map(str, r["orders"])) or "-",
                   r["stack_held_slots"],
                   r["bias_anomalies"],
                   " ".join(f"{k.replace('next_to_', 'nt')}={v}" for k, v in r["indices"].items()),
                   " ".join(f"{k}={v}" for k, v in r["stats"].items() if v))
                  for r in rings])
