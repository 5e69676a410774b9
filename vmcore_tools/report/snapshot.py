"""Snapshots and growth: a leak is memory that keeps growing.

A snapshot is a small JSON document: the census class totals, pages per slab
cache, pages per ring, the orphaned pages, the host and the time.  ``diff``
of two snapshots of one host gives the growth of each, in MB and MB/hour;
``watch`` keeps taking snapshots of a live kernel and flags what grows at
every step.

The time is the kernel's own wall clock (``tk_core.timekeeper.xtime_sec``,
updated every tick), so a snapshot of a vmcore carries the time of the
crash, not the time it was analysed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import drgn

from vmcore_tools.core.features import has_object, kernel_release
from vmcore_tools.leaks.orphans import OrphanReport, orphans
from vmcore_tools.mm.slab import slab_caches

SCHEMA = "vmcore-tools/snapshot/1"
REQUIRED = ("schema", "host", "release", "taken_at", "page_size", "total_pages", "classes", "slab", "rings",
            "orphaned_pages")


class SnapshotError(ValueError):
    """A snapshot that cannot be read or compared (one line, for the user)."""


def kernel_time(prog: drgn.Program) -> float | None:
    """Seconds since the epoch by the kernel's clock (None if it has none we know)."""
    if has_object(prog, "tk_core"):
        return float(prog["tk_core"].timekeeper.xtime_sec.value_())
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        return time.time()
    return None


def take_snapshot(prog: drgn.Program, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Census, slab, rings and orphans of ``prog``, summed up for later comparison."""
    return snapshot_of(prog, orphans(prog, progress=progress))


def snapshot_of(prog: drgn.Program, r: OrphanReport) -> dict:
    """The snapshot of an orphan report already made of ``prog``."""
    c = r.census
    uts = prog["init_uts_ns"].name
    return {
        "schema": SCHEMA,
        "host": uts.nodename.string_().decode(errors="replace"),
        "release": kernel_release(prog),
        "taken_at": kernel_time(prog),
        "page_size": 1 << c.memmap.page_shift,
        "total_pages": c.total_pages,
        "classes": c.totals(),
        "slab": {x.name: x.pages for x in slab_caches(prog, "name")},
        "rings": {f"{x['driver']} {x['device']} {x['kind']}{x['queue']}": x["pages"] for x in c.ring_rows()},
        "orphaned_pages": r.orphaned_pages,
        "orphans": len(r.found),
        "problems": c.problems + r.problems,
    }


def load_snapshot(path: str | Path) -> dict:
    """Read and check a snapshot file; SnapshotError says what is wrong with it."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SnapshotError(f"{path}: not a snapshot (not JSON: {e})") from None
    if not isinstance(doc, dict) or "schema" not in doc:
        raise SnapshotError(f"{path}: not a vmcore-tools snapshot (no schema)")
    if doc["schema"] != SCHEMA:
        raise SnapshotError(f"{path}: schema {doc['schema']!r}, this vmcore-tools reads {SCHEMA!r}")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise SnapshotError(f"{path}: snapshot lacks {', '.join(missing)}")
    return doc


@dataclass
class Growth:
    kind: str           # "class", "slab", "ring", "orphaned"
    name: str
    before: int         # pages
    after: int

    @property
    def pages(self) -> int:
        return self.after - self.before


def diff(a: dict, b: dict, any_host: bool = False) -> dict:
    """Growth from snapshot ``a`` to ``b`` of everything they count."""
    if a["host"] != b["host"] and not any_host:
        raise SnapshotError(f"the snapshots are of different hosts ({a['host']} and {b['host']}); "
                            "--any-host compares them anyway")
    if a["page_size"] != b["page_size"]:
        raise SnapshotError(f"page sizes differ ({a['page_size']} and {b['page_size']})")
    rows = [Growth("orphaned", "orphaned pages", a["orphaned_pages"], b["orphaned_pages"])]
    for kind, key in (("class", "classes"), ("slab", "slab"), ("ring", "rings")):
        for name in sorted(set(a[key]) | set(b[key])):
            rows.append(Growth(kind, name, a[key].get(name, 0), b[key].get(name, 0)))
    hours = None
    if a["taken_at"] is not None and b["taken_at"] is not None and b["taken_at"] > a["taken_at"]:
        hours = (b["taken_at"] - a["taken_at"]) / 3600
    mb = a["page_size"] / 2**20
    return {
        "schema": "vmcore-tools/diff/1",
        "host": b["host"], "hours": hours,
        "growth": [{"kind": g.kind, "name": g.name, "before": g.before, "after": g.after, "pages": g.pages,
                    "mb": round(g.pages * mb, 3),
                    "mb_per_hour": round(g.pages * mb / hours, 3) if hours else None}
                   for g in rows],
    }


def steady_growth(series: list[dict], steps: int = 3) -> list[tuple[str, str]]:
    """(kind, name) of what grew at each of the last ``steps`` steps of a
    series of snapshots: the shape of a leak, not of a workload's ups and downs."""
    if len(series) < steps + 1:
        return []
    last = series[-(steps + 1):]
    steps_diffs = [diff(x, y) for x, y in zip(last, last[1:])]
    grew = None
    for d in steps_diffs:
        now = {(g["kind"], g["name"]) for g in d["growth"] if g["pages"] > 0}
        grew = now if grew is None else grew & now
    return sorted(grew or ())
