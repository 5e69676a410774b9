"""The HTML report: one self-contained file (no script, no link to fetch)
with the verdict, the pictures of ``pictures.py`` and the report's tables,
for a ticket, a mail or a browser on a machine far from the sick host."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from vmcore_tools.report.pictures import HEX_COLOURS, MemoryMap, class_bar_svg
from vmcore_tools.report.tables import (class_table, inferred_table, meminfo_table, mib, orphan_table,
                                        range_table, referenced_table, ring_table, suspect_table)

STYLE = """
body { font-family: "DejaVu Sans", sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; }
.verdict { font-size: 16px; padding: 10px 14px; background: #fff4e5; border-left: 5px solid #e67e00; }
.verdict.clean { background: #eef8ee; border-left-color: #3a3; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.map { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
.map img { width: 512px; image-rendering: pixelated; border: 1px solid #888; }
.legend td:first-child { width: 14px; }
.caption { font-size: 12px; color: #555; }
.problems li { color: #a00; }
"""


def map_legend(m: MemoryMap, page_size: int) -> str:
    rows = [f'<tr><td style="background:{HEX_COLOURS[k]}"></td><td>{escape(k)}</td>'
            f"<td>{mib(n, page_size)} MiB</td></tr>"
            for k, n in sorted(m.pages.items(), key=lambda kv: -kv[1]) if n]
    return f'<table class="legend"><tr><th></th><th>class</th><th>size</th></tr>{"".join(rows)}</table>'


def map_section(m: MemoryMap | None, page_size: int) -> list[str]:
    """The class bar and the physical memory map; one line if they could not be drawn."""
    if m is None:
        return ["<h2>Physical memory map</h2>", "<p>Not drawn: the pictures stage failed (see the problems).</p>"]
    png = base64.b64encode(m.png()).decode()
    return [class_bar_svg(m.pages, page_size),
            "<h2>Physical memory map</h2>",
            f'<div class="map"><figure><img id="memory-map" alt="physical memory map" '
            f'src="data:image/png;base64,{png}" width="512">'
            f'<figcaption class="caption">{escape(m.caption(page_size))}</figcaption></figure>'
            f"{map_legend(m, page_size)}</div>"]


def report_html(data: dict[str, Any], m: MemoryMap | None) -> str:
    """The report of ``vmcore-tools report`` (``data`` is its JSON document)
    as HTML, with ``m`` the memory map of its census and orphans (None: not drawn)."""
    cj, oj = data["census"], data["orphans"]
    ps = cj["page_size"]
    dec = cj["decomposition"]
    problems = cj["problems"] + oj["problems"]
    title = f"vmcore-tools report: {cj['release']}, {mib(cj['total_pages'], ps)} MiB"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="verdict{"" if oj["orphans"] or oj["inferred"] or not oj["scanned"] else " clean"}" '
        f'id="verdict">{escape(data["verdict"])}</p>',
        "<p>T = U + K + S + C + F: " + " + ".join(f"{k} {mib(dec[k], ps)}" for k in "UKSCF")
        + f" = T {mib(dec['T'], ps)} MiB (user, kernel, shared, cache, free). "
        f"Unexplained kernel memory: <b>{mib(oj['orphaned_pages'], ps)} MiB orphaned</b>, "
        f"{mib(oj['referenced_pages'], ps)} MiB unattributed but referenced"
        + (f", {mib(oj['inferred_pages'], ps)} MiB held only by inference" if oj["inferred"] else "") + ".</p>",
        *map_section(m, ps),
        "<h2>Suspects</h2>",
        suspect_table(oj).html() if oj["suspects"] else
        "<p>No orphaned pages.</p>" if oj["scanned"] else "<p>Not known: the reference scan failed.</p>",
        range_table(oj).html() if oj["suspects"] else "",
        f"<h2>Orphaned pages (a sample of each suspect: {len(oj['orphans'])} of "
        f"{oj['orphaned_allocations']} allocations)</h2>",
        orphan_table(oj, 200).html() if oj["orphans"] else "<p>None.</p>",
        "<h2>Unattributed but referenced</h2>",
        referenced_table(oj, 50).html() if oj["referenced"] else "<p>None.</p>",
        "<h2>Held only by inference</h2>",
        f"<p>{oj['inferred_pages']} more pages ({oj['inferred_allocations']} allocations) are held only by "
        "inference: if they are leaks, they look like this.</p>" + inferred_table(oj, 50).html()
        if oj["inferred"] else "<p>None: every hold above is proved by the dump.</p>",
        "<h2>Memory by owner class</h2>", class_table(cj).html(),
        "<h2>NIC rx rings</h2>", ring_table(data["rings"]).html() if data["rings"] else "<p>No rings found.</p>",
        "<h2>Census beside the kernel's counters (kB)</h2>", meminfo_table(cj).html(),
    ]
    if problems:
        parts += ["<h2>Problems found while reading</h2>", '<ul class="problems">',
                  *(f"<li>{escape(p)}</li>" for p in problems), "</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
