"""A fleet at a glance: snapshots of many hosts side by side, each host's
memory by class as a share of its RAM, its orphaned pages and how fast they
grow, and the hosts that stand out from the fleet's median.

Hosts differ in size, so a host is compared by shares of its own RAM: a
host stands out on a measure when its share is more than ``factor`` times
the fleet's median share and the excess is at least ``min_mb`` of its RAM
(so that a fleet whose median is near zero does not flag every few pages).
Several snapshots of one host make a series: the last is its state, and the
first and last give the growth of its orphaned pages per hour.

    >>> doc = compare([load_snapshot(p) for p in paths])
    >>> [(o["host"], o["measure"]) for o in doc["outliers"]]
    [('ceph-17', 'orphaned'), ('ceph-17', 'unattributed')]
"""

from __future__ import annotations

import statistics
from pathlib import Path

from vmcore_tools.report.snapshot import SnapshotError, diff, load_snapshot

SCHEMA = "vmcore-tools/compare/1"
#: what a host is compared on: the orphaned pages, then every census class
ORPHANED = "orphaned"


def snapshot_files(paths: list[str]) -> list[Path]:
    """The snapshot files ``paths`` name: files as given, and every ``*.json`` in a directory."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise SnapshotError(f"{p}: no snapshot (*.json) in this directory")
            out += found
        else:
            out.append(p)
    return out


def _measures(snap: dict) -> dict[str, int]:
    """Pages per measure: the orphaned pages and each census class."""
    return {ORPHANED: snap["orphaned_pages"], **snap["classes"]}


def compare(snapshots: list[dict], factor: float = 2.0, min_mb: float = 64.0) -> dict:
    """The fleet's hosts side by side, the median of each measure (as a share
    of RAM) and the hosts that stand out (see the module's docstring)."""
    if not snapshots:
        raise SnapshotError("no snapshot to compare")
    by_host: dict[str, list[dict]] = {}
    for s in snapshots:
        by_host.setdefault(s["host"], []).append(s)
    hosts = []
    for host, series in sorted(by_host.items()):
        series.sort(key=lambda s: s["taken_at"] if s["taken_at"] is not None else float("-inf"))
        first, last = series[0], series[-1]
        mb = last["page_size"] / 2**20
        grow = next(g["mb_per_hour"] for g in diff(first, last)["growth"] if g["kind"] == ORPHANED)
        hosts.append({"host": host, "release": last["release"], "snapshots": len(series),
                      "ram_mb": round(last["total_pages"] * mb, 1),
                      "mb": {k: round(v * mb, 3) for k, v in _measures(last).items()},
                      "share": {k: v / last["total_pages"] for k, v in _measures(last).items()},
                      "orphaned_mb_per_hour": grow})
    names = sorted({k for h in hosts for k in h["share"]}, key=lambda k: (k != ORPHANED, k))
    median = {k: statistics.median(h["share"].get(k, 0.0) for h in hosts) for k in names}
    outliers = []
    for h in hosts:
        for k in names:
            share = h["share"].get(k, 0.0)
            excess_mb = (share - median[k]) * h["ram_mb"]
            if share > factor * median[k] and excess_mb >= min_mb:
                outliers.append({"host": h["host"], "measure": k, "mb": h["mb"].get(k, 0.0),
                                 "share": round(share, 6), "median_share": round(median[k], 6),
                                 "excess_mb": round(excess_mb, 3)})
    for h in hosts:
        h["share"] = {k: round(v, 6) for k, v in h["share"].items()}
    return {"schema": SCHEMA, "factor": factor, "min_mb": min_mb, "hosts": hosts,
            "median_share": {k: round(v, 6) for k, v in median.items()},
            "outliers": sorted(outliers, key=lambda o: -o["excess_mb"])}


def load_fleet(paths: list[str]) -> list[dict]:
    """Every snapshot ``paths`` name (files, or directories of them)."""
    return [load_snapshot(p) for p in snapshot_files(paths)]
