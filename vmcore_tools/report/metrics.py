"""The census and the orphans as Prometheus metrics: text exposition
format 0.0.4, for node_exporter's textfile collector or any scraper.

Conventions kept (prometheus.io, "Writing exporters" and "Metric and label
naming"): a ``vmcore_tools_`` prefix, base units (``_bytes``,
``_seconds``), HELP and TYPE on every family, no timestamps, and bounded
cardinality -- one series per class, per ring and per slab cache of the top
``TOP_CACHES``; never a PFN, a stack or an address as a label.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from vmcore_tools.census.classes import PageClass
from vmcore_tools.leaks.orphans import OrphanReport
from vmcore_tools.mm.slab import SlabCache

#: slab caches exported, largest first
TOP_CACHES = 20


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        tags = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        text = str(int(value)) if float(value).is_integer() else repr(float(value))     # exact bytes
        out.append(f"{name}{{{tags}}} {text}" if tags else f"{name} {text}")
    return out


def exposition(r: OrphanReport, caches: list[SlabCache], version: str, release: str,
               seconds: float, now: float | None = None) -> str:
    """Every family of one analysis, as Prometheus text."""
    c = r.census
    page = c.memmap.page_size
    totals = c.totals()
    orphaned = r.found
    rows = c.ring_rows()
    lines: list[str] = []
    lines += _family("vmcore_tools_info", "gauge", "The analysed kernel and the tool's version.",
                     [({"kernel": release, "version": version}, 1)])
    lines += _family("vmcore_tools_memory_bytes", "gauge",
                     "Memory by owner class; the classes of RAM add up to all of it (census).",
                     [({"class": k.label}, totals[k.label] * page) for k in PageClass if k != PageClass.NO_PAGE])
    if r.scanned:       # a failed reference scan knows no orphan: no series rather than a false 0
        lines += _family("vmcore_tools_orphaned_bytes", "gauge",
                         "Pages allocated from the page allocator that nothing references (orphans).",
                         [({}, orphaned.pages * page)])
        lines += _family("vmcore_tools_orphaned_allocations", "gauge", "Orphaned allocations (one per head page).",
                         [({}, len(orphaned))])
        lines += _family("vmcore_tools_inferred_bytes", "gauge",
                         "Pages held only by an inference (an allocation run, a physical-address match, a table's "
                         "shape): a leak of this size could hide there.",
                         [({}, r.inferred_pages * page)])
        lines += _family("vmcore_tools_inferred_allocations", "gauge", "Allocations held only by an inference.",
                         [({}, int(r.inferred_heads.size))])
    lines += _family("vmcore_tools_unexplained_bytes", "gauge",
                     "Kernel memory no owner was found for (census class unattributed), referenced or not.",
                     [({}, totals[PageClass.UNATTRIBUTED.label] * page)])
    lines += _family("vmcore_tools_damaged_bytes", "gauge",
                     "Memory whose struct page holds a state no kernel writes: not classed.",
                     [({}, totals[PageClass.DAMAGED.label] * page)])
    lines += _family("vmcore_tools_ring_pages", "gauge", "Pages a NIC rx ring (or page_pool) holds.",
                     [({"driver": x["driver"], "device": x["device"], "ring": f"{x['kind']}{x['queue']}"}, x["pages"])
                      for x in rows])
    top = sorted(caches, key=lambda s: -s.total_bytes)[:TOP_CACHES]
    lines += _family("vmcore_tools_slab_cache_bytes", "gauge",
                     f"Bytes of the {TOP_CACHES} largest slab caches.",
                     [({"cache": s.name}, s.total_bytes) for s in top])
    lines += _family("vmcore_tools_scan_seconds", "gauge", "Seconds the analysis took.", [({}, round(seconds, 3))])
    lines += _family("vmcore_tools_last_success_timestamp_seconds", "gauge",
                     "When the last analysis that wrote these metrics ended (Unix time).",
                     [({}, round(time.time() if now is None else now, 3))])
    return "\n".join(lines) + "\n"


def write_textfile(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same
    directory, then a rename, so a scraper never reads half a file and a
    failed run leaves the last good one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
