"""The commands' text output: each renders the JSON document its command
emits with ``--json``, so the two never say different things."""

from __future__ import annotations

import sys
import time
from typing import Any

from tabulate import tabulate

from vmcore_tools.census.census import Census
from vmcore_tools.leaks.orphans import OrphanReport
from vmcore_tools.leaks.verdict import answer, coverage_parts, orphans_json
from vmcore_tools.report.tables import (class_table, inferred_table, meminfo_table, mib as _mib, orphan_table,
                                        range_table, referenced_table, ring_table, suspect_table)


def problem_lines(problems: list[str]) -> list[str]:
    """The closing lines of a text report: what went wrong while reading."""
    return ["", "Problems found:", *(f"  - {p}" for p in problems)] if problems else []


def census_text(c: Census) -> str:
    d = c.to_json()
    ps = d["page_size"]
    total = d["total_pages"]
    out = [f"Page census of {d['release']}: {total} pages ({_mib(total, ps)} MiB)", "", class_table(d).text()]
    dec = d["decomposition"]
    out += ["", "T = U + K + S + C + F  (total = user + kernel + shared + cache + free)",
            "  " + " + ".join(f"{k} {_mib(dec[k], ps)}" for k in "UKSCF") + f"  =  T {_mib(dec['T'], ps)} MiB"]
    un = d["classes"]["unattributed"]
    out.append(f"  unexplained kernel memory: \033[1m{_mib(un, ps)} MiB ({un} pages)\033[0m"
               if sys.stdout.isatty() else f"  unexplained kernel memory: {_mib(un, ps)} MiB ({un} pages)")
    out += ["", buddyinfo_text(d["zones"])]
    out += ["", "Census beside the kernel's own counters, /proc/meminfo style (kB)"]
    out.append(meminfo_table(d).text())
    out += ["", pagetypeinfo_text(d["zones"])]
    return "\n".join(out + problem_lines(d["problems"]))


def buddyinfo_text(zones: list[dict[str, Any]]) -> str:
    orders = range(len(zones[0]["free_blocks"])) if zones else range(0)
    return "\n".join(["Free memory by zone (buddyinfo: free blocks per order)", tabulate(
        [(f"Node {z['node']}, zone {z['zone']}", *z["free_blocks"], z["free_pages"], z["pcp_pages"])
         for z in zones], headers=["zone", *orders, "free pages", "pcp pages"])])


def pagetypeinfo_text(zones: list[dict[str, Any]]) -> str:
    orders = range(len(zones[0]["free_blocks"])) if zones else range(0)
    return "\n".join(["Free blocks by migrate type (pagetypeinfo)", tabulate(
        [(f"Node {z['node']}, zone {z['zone']}", mt, *blocks)
         for z in zones for mt, blocks in z["free_by_migratetype"].items() if any(blocks)],
        headers=["zone", "type", *orders])])


def buddy_text(d: dict[str, Any]) -> str:
    ps = d["page_size"]
    check = ("= NR_FREE_PAGES" if d["nr_free_pages"] == d["free_pages_walked"]
             else f"!= NR_FREE_PAGES {d['nr_free_pages']}")
    return "\n".join([
        f"Free memory of {d['release']}: {d['free_pages_walked']} pages ({_mib(d['free_pages_walked'], ps)} MiB) "
        f"on the buddy lists {check}, {d['pcp_pages']} more on per-CPU lists", "",
        buddyinfo_text(d["zones"]), "", pagetypeinfo_text(d["zones"]), *problem_lines(d["problems"])])


def slab_text(d: dict[str, Any]) -> str:
    table = tabulate([(c["name"], c["objects"], c["active"],
                       f"{100 * c['active'] / c['objects']:.0f}%" if c["objects"] else "-",
                       c["object_size"], c["slabs"], c["pages_per_slab"],
                       f"{c['total_bytes'] / 1024:,.0f}K", ", ".join(c["aliases"]))
                      for c in d["caches"]],
                     headers=["cache", "objs", "active", "use", "obj size", "slabs", "pages/slab",
                              "cache size", "merged with"], disable_numparse=True)
    ps = d["caches"][0]["page_size"] if d["caches"] else 4096
    return "\n".join([f"Slab: {d['total_pages']} pages ({_mib(d['total_pages'], ps)} MiB) in all caches", "",
                      table, *problem_lines(d.get("problems", []))])


def rings_text(data: dict[str, Any]) -> str:
    out = [ring_table(data["rings"]).text()]
    out.append(f"\nwalkers that found their driver: {', '.join(data['walked']) or 'none'}")
    return "\n".join(out + problem_lines(data["problems"]))


def page_text(d: dict[str, Any]) -> str:
    rows = [("pfn", f"{d['pfn']} ({d['pfn']:#x}), from a {d['given']}"), ("class", d["class"]),
            ("compound", f"head pfn {d['head']}, order {d['order']}"
             + (" (a block allocated without __GFP_COMP)" if d.get("block") else "")
             if d["order"] or d["head"] != d["pfn"] else "no (order 0)"),
            ("flags", d["flags"]), ("refcount", d["refcount"]), ("mapcount/type", d["mapcount"] if d["mapcount"] > -1024 else f"{d['mapcount'] & 0xffffffff:#x}"),
            ("mapping", f"{d['mapping']:#x}"), ("owner", d["owner"] or "-")]
    if d["references"] is not None:
        rows.append(("referenced from", "\n".join(d["references"]) or "nowhere: ORPHANED"))
        if d.get("inferred"):
            rows.append(("held", f"only by inference ({d['inferred']}): the dump does not prove it held"))
    rec = d.get("page_owner")
    if rec:
        rows += [("page_owner", owner_summary(rec)), ("stack", "\n".join(rec["stack"]) or "-")]
    return "\n".join([tabulate(rows, tablefmt="plain", disable_numparse=True), *problem_lines(d["problems"])])


PAGE_OWNER_HINTS = {
    "off": "built in, but off: boot with page_owner=on to record who allocates each page",
    "absent": "not in this kernel (CONFIG_PAGE_OWNER is not set): no allocating stacks",
    "unsupported": "this kernel's memory model keeps page_ext where we do not read it",
}


def owner_summary(rec: dict) -> str:
    """One line of a page_owner record: who allocated it, order, GFP mask."""
    task = (f" by {rec['comm']} (pid {rec['pid']})" if rec["comm"] is not None
            else f" by pid {rec['pid']}" if rec["pid"] is not None else "")
    return (f"{'allocated' if rec['allocated'] else 'freed'}{task}, "
            f"order {rec['order']}, gfp {rec['gfp_mask']:#x}")


def allocating_stacks(d: dict) -> list[str]:
    """Per suspect, the page_owner record of its first orphan: task, order,
    GFP mask and the allocating stack; or one line on why there is none."""
    state = d["page_owner"]
    if state != "on":
        return [f"page_owner: {PAGE_OWNER_HINTS[state]}"]
    out = ["Allocating stacks (page_owner), one per suspect"]
    for s in d["suspects"]:
        rec = next((o["page_owner"] for o in d["orphans"] if o["suspect"] == s["id"] and o["page_owner"]), None)
        if rec is None:
            out.append(f"  #{s['id']}: no page_owner record")
            continue
        out.append(f"  #{s['id']}: {owner_summary(rec)}")
        out += [f"      {frame}" for frame in rec["stack"]]
    return out


def stacks_text(d: dict[str, Any]) -> str:
    if d["page_owner"] != "on":
        return f"page_owner: {PAGE_OWNER_HINTS[d['page_owner']]}"
    ps = d["page_size"]
    out = [f"Allocating stacks of {', '.join(d['classes'])} pages: {len(d['stacks'])} of "
           f"{d['stacks_in_all']} stacks, most pages first; {d['pages_without_record']} pages have no "
           f"current record", ""]
    for s in d["stacks"]:
        out.append(f"{s['pages']} pages ({_mib(s['pages'], ps)} MiB) in {s['allocations']} allocations, "
                   f"allocated by {s['alloc_site'] or '?'}")
        out += [f"    {frame}" for frame in s["stack"]]
    return "\n".join(out)


def orphans_text(r: OrphanReport, top: int) -> str:
    """The orphans report; ``top`` rows of each table (0: all)."""
    d = orphans_json(r)
    top = top or len(d["orphans"]) + len(d["inferred"]) + len(d["referenced"])
    ps = d["page_size"]
    out = [f"Orphaned pages: {d['orphaned_pages']} pages ({_mib(d['orphaned_pages'], ps)} MiB) in "
           f"{d['orphaned_allocations']} allocations that nothing references",
           f"Unattributed but referenced: {d['referenced_pages']} pages; "
           f"{d['candidates']} candidates checked, {d['scan']['bytes'] / 2**20:,.0f} MiB of kernel memory "
           f"scanned in {d['scan']['seconds']:.2f} s", ""]
    if r.suspects:
        listed = min(top, len(d["orphans"]))
        out += ["Suspects", suspect_table(d).text(), "", "Where they lie (runs of contiguous pages)",
                range_table(d).text(), "",
                f"Orphans ({listed} of the {len(d['orphans'])} sampled; --pfns FILE lists all "
                f"{d['orphaned_allocations']})", orphan_table(d, top).text(), "", *allocating_stacks(d)]
    elif not d["scanned"]:
        out.append("Orphans not known: the reference scan failed, no unattributed page was checked.")
    elif not d["orphaned_allocations"]:
        out.append("No orphaned pages: every unattributed page is referenced from live kernel memory.")
    if d["inferred"]:
        out += ["", f"Held only by inference: {d['inferred_pages']} more pages ({d['inferred_allocations']} "
                    "allocations); if they are leaks, they look like this (--inferred-pfns FILE lists all)",
                inferred_table(d, top).text()]
    if d["referenced"]:
        out += ["", f"Unattributed but referenced (first {min(top, d['referenced_allocations'])} "
                    f"of {d['referenced_allocations']})", referenced_table(d, top).text()]
    return "\n".join(out + problem_lines(r.problems))


def report_text(r: OrphanReport, d: dict[str, Any], rows: int = 5) -> str:
    """The one-shot answer; ``rows`` rows of the suspect table (0: all)."""
    cj = d["census"]
    ps = cj["page_size"]
    dec = cj["decomposition"]
    top = sorted(((k, v) for k, v in cj["classes"].items() if v and k != "free"), key=lambda kv: -kv[1])[:6]
    out = [f"vmcore-tools report: {cj['release']}, {_mib(cj['total_pages'], ps)} MiB", "",
           "Verdict: " + answer(r), "Coverage:",
           *(f"  - {part}" for part in coverage_parts(d["orphans"]["coverage"], ps)), "",
           "T = U + K + S + C + F:  " + " + ".join(f"{k} {_mib(dec[k], ps)}" for k in "UKSCF")
           + f"  =  T {_mib(dec['T'], ps)} MiB",
           "Largest owners: " + ", ".join(f"{k} {_mib(v, ps)} MiB" for k, v in top),
           f"Unexplained kernel memory after the reference scan: "
           f"{_mib(r.orphaned_pages, ps)} MiB orphaned, "
           f"{_mib(r.referenced_pages, ps)} MiB unattributed but referenced"
           + (f", {_mib(r.inferred_pages, ps)} MiB held only by inference" if r.inferred_pages else ""), ""]
    if r.suspects:
        out.append(suspect_table(d["orphans"], rows or None).text())
    rings = [x for x in d["rings"] if x["populated"]]
    if rings:
        out += ["", "Rings: " + "; ".join(f"{x['driver']} {x['device']} {x['kind']}{x['queue']} "
                                           f"{x['populated']}/{x['slots']} slots" for x in rings)]
    return "\n".join(out + problem_lines(cj["problems"] + r.problems))


def snapshot_text(d: dict[str, Any], output: str | None) -> str:
    ps = d["page_size"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(d["taken_at"])) if d["taken_at"] else "unknown time"
    return (f"snapshot of {d['host']} ({d['release']}) at {when}: {_mib(d['total_pages'], ps)} MiB, "
            f"{_mib(d['orphaned_pages'], ps)} MiB orphaned in {d['orphans']} allocations, "
            f"{len(d['slab'])} slab caches, {len(d['rings'])} rings"
            + (f"; written to {output}" if output else "; -o FILE keeps it for diff"))


def diff_text(d: dict[str, Any]) -> str:
    span = f"{d['hours'] * 60:.1f} minutes" if d["hours"] else "unknown time (no clock in a snapshot)"
    rows = sorted(d["growth"], key=lambda g: -abs(g["pages"]))
    return "\n".join([f"Growth on {d['host']} over {span}", tabulate(
        [(g["kind"], g["name"], g["before"], g["after"], f"{g['pages']:+}", f"{g['mb']:+.2f}",
          "-" if g["mb_per_hour"] is None else f"{g['mb_per_hour']:+.1f}") for g in rows],
        headers=["", "name", "pages before", "after", "pages", "MB", "MB/hour"], disable_numparse=True)])


def watch_text(record: dict[str, Any], since: dict[str, Any], snap: dict[str, Any]) -> str:
    if record["sample"] == 1:
        return (f"sample 1: {snap['orphaned_pages']} orphaned pages in {snap['orphans']} allocations; "
                "what grows is shown from the next sample")
    steady = {(x["kind"], x["name"]) for x in record["steady"]}
    lines = [f"sample {record['sample']}: " + (", ".join(
        f"{g['name']} {g['pages']:+} pages" for g in sorted(record["growth"], key=lambda g: -abs(g["pages"]))[:6])
        or "no change")]
    for g in since["growth"]:
        if (g["kind"], g["name"]) in steady:
            rate = "" if g["mb_per_hour"] is None else f", {g['mb_per_hour']:+.1f} MB/hour"
            what = g["name"] if g["kind"] == "orphaned" else f"{g['kind']} {g['name']}"
            lines.append(f"  GROWS STEADILY: {what}: {g['mb']:+.2f} MB since the first sample{rate}")
    return "\n".join(lines)


def compare_text(d: dict[str, Any], top: int) -> str:
    """The fleet's hosts, most orphaned share first, and who stands out."""
    hosts = sorted(d["hosts"], key=lambda h: -h["share"].get("orphaned", 0.0))[:top or None]
    rows = [(h["host"], h["release"], f"{h['ram_mb']:,.0f}", f"{h['mb'].get('orphaned', 0):,.1f}",
             "-" if h["orphaned_mb_per_hour"] is None else f"{h['orphaned_mb_per_hour']:+.1f}",
             f"{h['mb'].get('unattributed', 0):,.1f}", f"{h['mb'].get('slab', 0):,.1f}")
            for h in hosts]
    out = [f"{len(d['hosts'])} hosts; a host stands out at more than {d['factor']:g}x the median share of RAM "
           f"and {d['min_mb']:g} MB over it", tabulate(
        rows, headers=["host", "release", "RAM MB", "orphaned MB", "MB/hour", "unattributed MB", "slab MB"],
        disable_numparse=True)]
    for o in d["outliers"]:
        out.append(f"  STANDS OUT: {o['host']} {o['measure']}: {o['mb']:,.1f} MB ({100 * o['share']:.2f}% of RAM, "
                   f"median {100 * o['median_share']:.2f}%, {o['excess_mb']:+,.1f} MB)")
    if not d["outliers"]:
        out.append("No host stands out.")
    return "\n".join(out)
