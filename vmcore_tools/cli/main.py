"""The ``vmcore-tools`` command line.

Every command takes the same target options (live kernel by default, or
``-c VMCORE``), ``--json`` and ``--quiet``.  Exit codes (``stages``):

* 0: the analysis ran whole;
* 1: a leak was found and ``--fail-on-leak`` was given (``report``), or
  ``diff --quiet`` saw the orphaned pages grow;
* 2: bad input (a missing or foreign core, debug info that does not match,
  an unwritable output path, a bad option), one line on stderr;
* 3: a partial result: a stage failed (its problem line says which, and what
  the result lacks), or the command itself met an internal error.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import drgn
from tabulate import tabulate

from vmcore_tools.census.classes import PageClass
from vmcore_tools.census.census import Census, census as run_census, free_memory
from vmcore_tools.mm.counters import totalram_pages
from vmcore_tools.core.features import has_object, kernel_release
from vmcore_tools.leaks.orphans import OrphanReport, orphans as run_orphans
from vmcore_tools.leaks.verdict import orphans_json, verdict
from vmcore_tools.report.html import report_html
from vmcore_tools.leaks.page import explain_page
from vmcore_tools.net.rings import all_walkers, walker_ready
from vmcore_tools.net.devices import bound_devices
from vmcore_tools.leaks.reachability import reachability as run_reachability, reachability_text
from vmcore_tools.report.pictures import class_bar_svg, growth_svg, memory_map
from vmcore_tools.mm.slab import SORT_KEYS, slab_caches
from vmcore_tools.report.snapshot import SnapshotError, diff as diff_snapshots, load_snapshot, steady_growth, take_snapshot
from vmcore_tools.core.stages import EXIT_BAD_INPUT, EXIT_LEAK, EXIT_PARTIAL, failed_stages, run_stage
from vmcore_tools.report.tables import (class_table, meminfo_table, mib as _mib, orphan_table, range_table, referenced_table,
                     ring_table, suspect_table)
from vmcore_tools.core.target import TargetError, open_program


def target_options(f: Callable | None = None, *, json_option: bool = True) -> Callable:
    """The options every command that reads a kernel takes."""
    if f is None:
        return lambda g: target_options(g, json_option=json_option)
    f = click.option("-c", "--core", type=click.Path(dir_okay=False),
                     help="vmcore to analyze (ELF or kdump-compressed); default: the running kernel")(f)
    f = click.option("-s", "--vmlinux", type=click.Path(dir_okay=False),
                     help="kernel debug info (vmlinux with DWARF)")(f)
    f = click.option("-d", "--debug-dir", "debug_dirs", multiple=True, type=click.Path(),
                     help="module debug info: a .ko file or a directory of them (repeatable)")(f)
    if json_option:
        f = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
    f = click.option("--quiet", is_flag=True, help="no progress on stderr")(f)
    return f


#: the program a drgn session already opened (``run_on``); None from the shell
_session_program: drgn.Program | None = None


def _open(core, vmlinux, debug_dirs) -> drgn.Program:
    if _session_program is not None:
        if core or vmlinux or debug_dirs:
            click.echo("vmcore-tools: error: inside drgn the session's program is used; "
                       "-c/-s/-d are not taken", err=True)
            sys.exit(EXIT_BAD_INPUT)
        return _session_program
    try:
        return open_program(core, vmlinux, debug_dirs)
    except TargetError as e:
        click.echo(f"vmcore-tools: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)


def run_on(prog: drgn.Program, args: list[str]) -> int:
    """Run a ``vmcore-tools`` command line on an already open program (what
    the drgn plugin does); returns the exit code the shell would see."""
    global _session_program
    _session_program = prog
    try:
        main.main(args=args, prog_name="vmcore-tools", standalone_mode=False)
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    finally:
        _session_program = None


@contextmanager
def _reading(target: str | None):
    """Turn a fault while reading kernel memory into a one-line error (exit 2);
    with ``VMCORE_TOOLS_DEBUG=1`` in the environment, the traceback too."""
    try:
        yield
    except drgn.FaultError as e:
        if os.environ.get("VMCORE_TOOLS_DEBUG"):
            traceback.print_exc()
        hint = "the core is truncated" if "short read" in str(e) else "the core lacks memory the analysis needs"
        click.echo(f"vmcore-tools: error: {target or '/proc/kcore'}: {hint} ({e})", err=True)
        sys.exit(EXIT_BAD_INPUT)


def _analyze(core, vmlinux, debug_dirs, analysis: Callable[[drgn.Program], Any]) -> Any:
    """Open the target and run ``analysis`` on it; bad input or memory the
    analysis cannot read ends the command with one line and exit code 2."""
    prog = _open(core, vmlinux, debug_dirs)
    with _reading(core):
        return analysis(prog)


def _emit(data: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    click.echo(json.dumps(data, indent=1) if as_json else text(data))


def _write(path: str | Path, content: str | bytes) -> None:
    """Write an output file the user asked for; a path we cannot write is an input error."""
    try:
        if isinstance(content, bytes):
            Path(path).write_bytes(content)
        else:
            Path(path).write_text(content)
    except OSError as e:
        click.echo(f"vmcore-tools: error: cannot write {path}: {e.strerror}", err=True)
        sys.exit(EXIT_BAD_INPUT)


class Commands(click.Group):
    """The command group; an error no stage caught ends the command with one
    line and exit code 3, never a traceback (``VMCORE_TOOLS_DEBUG=1`` shows it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:      # noqa: BLE001 -- the last guard
            if os.environ.get("VMCORE_TOOLS_DEBUG"):
                traceback.print_exc()
            name = ctx.invoked_subcommand or "vmcore-tools"
            click.echo(f"vmcore-tools: error: {name} failed ({type(e).__name__}: {e}); no result "
                       "(VMCORE_TOOLS_DEBUG=1 shows where)", err=True)
            sys.exit(EXIT_PARTIAL)


def _exit_for(problems: list[str], leak: bool = False) -> None:
    """Exit 3 when a stage failed (the output above says which), else 1 when
    a leak is to fail the command, else return (exit 0)."""
    if failed_stages(problems):
        sys.exit(EXIT_PARTIAL)
    if leak:
        sys.exit(EXIT_LEAK)


@click.group(cls=Commands)
@click.version_option(package_name="vmcore-tools")
def main() -> None:
    """Where did every page go, and who leaked it?

    Exit codes: 0 done, 1 leak found (report --fail-on-leak, diff --quiet),
    2 bad input, 3 partial result (a stage failed; the output says which)."""


@main.command()
@target_options
def info(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Kernel release, memory size, and the NIC drivers bound to devices with
    whether their modules' debug info was found."""
    prog = _open(core, vmlinux, debug_dirs)
    with _reading(core):
        _info(prog, core, as_json)


def _info(prog: drgn.Program, core: str | None, as_json: bool) -> None:
    uts = prog["init_uts_ns"].name
    page_size = prog["PAGE_SIZE"].value_() if has_object(prog, "PAGE_SIZE") else 4096
    data = {
        "schema": "vmcore-tools/info/2",
        "target": core or "/proc/kcore",
        "release": kernel_release(prog),
        "machine": uts.machine.string_().decode(),
        "page_size": page_size,
        "totalram_pages": totalram_pages(prog),
        "nic_drivers": {w.name: {"devices": users, "debug_info": walker_ready(prog, w)}
                        for w in all_walkers() if (users := bound_devices(prog, w.name))},
    }

    def text(d: dict) -> str:
        nics = ", ".join(f"{name} {' '.join(n['devices'])} ({'' if n['debug_info'] else 'no '}debug info)"
                         for name, n in d["nic_drivers"].items())
        return "\n".join(f"{k:15} {nics if k == 'nic_drivers' else v}" for k, v in d.items() if k != "schema")
    _emit(data, as_json, text)


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(what: str, done: int, total: int) -> None:
        click.echo(f"\r\033[K{what}: {done * 100 // max(total, 1):3d}% ({done}/{total} pages)",
                   err=True, nl=done >= total)
    return show


def _problems(problems: list[str]) -> list[str]:
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
    return "\n".join(out + _problems(d["problems"]))


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


@main.command()
@target_options
def buddy(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Free memory: buddy free lists per zone, order and migrate type, and per-CPU lists."""
    data = _analyze(core, vmlinux, debug_dirs, lambda prog: free_memory(prog, _progress(quiet)))
    _emit(data, as_json, buddy_text)
    _exit_for(data["problems"])


def buddy_text(d: dict[str, Any]) -> str:
    ps = d["page_size"]
    check = ("= NR_FREE_PAGES" if d["nr_free_pages"] == d["free_pages_walked"]
             else f"!= NR_FREE_PAGES {d['nr_free_pages']}")
    return "\n".join([
        f"Free memory of {d['release']}: {d['free_pages_walked']} pages ({_mib(d['free_pages_walked'], ps)} MiB) "
        f"on the buddy lists {check}, {d['pcp_pages']} more on per-CPU lists", "",
        buddyinfo_text(d["zones"]), "", pagetypeinfo_text(d["zones"]), *_problems(d["problems"])])


@main.command()
@target_options
def census(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Every physical page classified by owner, reconciled with the kernel's counters."""
    c = _analyze(core, vmlinux, debug_dirs, lambda prog: run_census(prog, _progress(quiet)))
    _emit(c.to_json(), as_json, lambda _: census_text(c))
    _exit_for(c.problems)


@main.command()
@target_options
@click.option("--sort", type=click.Choice(sorted(SORT_KEYS)), default="size", show_default=True)
@click.option("--top", default=0, help="show only the first N caches (0: all)")
def slab(core, vmlinux, debug_dirs, as_json, quiet, sort, top) -> None:
    """Slab caches, slabtop-style, with the caches merged into each."""
    caches = _analyze(core, vmlinux, debug_dirs, lambda prog: slab_caches(prog, sort))
    rows = caches[:top] if top else caches
    data = {"schema": "vmcore-tools/slab/1", "sort": sort,
            "total_pages": sum(c.pages for c in caches),
            "caches": [{**asdict(c), "pages": c.pages, "total_bytes": c.total_bytes} for c in rows]}
    _emit(data, as_json, slab_text)


def slab_text(d: dict[str, Any]) -> str:
    table = tabulate([(c["name"], c["objects"], c["active"],
                       f"{100 * c['active'] / c['objects']:.0f}%" if c["objects"] else "-",
                       c["object_size"], c["slabs"], c["pages_per_slab"],
                       f"{c['total_bytes'] / 1024:,.0f}K", ", ".join(c["aliases"]))
                      for c in d["caches"]],
                     headers=["cache", "objs", "active", "use", "obj size", "slabs", "pages/slab",
                              "cache size", "merged with"], disable_numparse=True)
    ps = d["caches"][0]["page_size"] if d["caches"] else 4096
    return f"Slab: {d['total_pages']} pages ({_mib(d['total_pages'], ps)} MiB) in all caches\n\n{table}"


def rings_text(data: dict[str, Any]) -> str:
    out = [ring_table(data["rings"]).text()]
    out.append(f"\nwalkers that found their driver: {', '.join(data['walked']) or 'none'}")
    return "\n".join(out + _problems(data["problems"]))


@main.command()
@target_options
def rings(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """NIC rx rings (i40e family, virtio_net, e1000e) and page pools: the pages each holds."""
    c = _analyze(core, vmlinux, debug_dirs, lambda prog: run_census(prog, _progress(quiet)))
    data = {"schema": "vmcore-tools/rings/1", "rings": c.ring_rows(), "walked": c.rings.walked,
            "problems": c.rings.problems, "nic_ring_pages": c.totals()["nic_ring"]}
    _emit(data, as_json, rings_text)
    _exit_for(c.problems)


@main.command()
@target_options
@click.argument("where")
@click.option("--no-refs", is_flag=True, help="do not scan for references to a leak candidate (an unattributed or page_pool page)")
def page(core, vmlinux, debug_dirs, as_json, quiet, where, no_refs) -> None:
    """Explain one page: WHERE is a PFN, a struct page address, or a kernel virtual address."""
    try:
        value = int(where, 0)
    except ValueError:
        raise click.BadParameter(f"{where!r} is not a number (PFN or address, 0x... for hex)")
    prog = _open(core, vmlinux, debug_dirs)
    with _reading(core):
        c = run_census(prog, _progress(quiet))
        try:
            r = explain_page(prog, value, c, references=not no_refs)
        except ValueError as e:
            click.echo(f"vmcore-tools: error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    _emit(r.to_json(), as_json, page_text)
    _exit_for(c.problems + r.problems)


def page_text(d: dict[str, Any]) -> str:
    rows = [("pfn", f"{d['pfn']} ({d['pfn']:#x}), from a {d['given']}"), ("class", d["class"]),
            ("compound", f"head pfn {d['head']}, order {d['order']}" if d["order"] or d["head"] != d["pfn"]
             else "no (order 0)"),
            ("flags", d["flags"]), ("refcount", d["refcount"]), ("mapcount/type", d["mapcount"] if d["mapcount"] > -1024 else f"{d['mapcount'] & 0xffffffff:#x}"),
            ("mapping", f"{d['mapping']:#x}"), ("owner", d["owner"] or "-")]
    if d["references"] is not None:
        rows.append(("referenced from", "\n".join(d["references"]) or "nowhere: ORPHANED"))
    rec = d.get("page_owner")
    if rec:
        rows += [("page_owner", owner_summary(rec)), ("stack", "\n".join(rec["stack"]) or "-")]
    return "\n".join([tabulate(rows, tablefmt="plain", disable_numparse=True), *_problems(d["problems"])])


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


@main.command()
@target_options
@click.option("--class", "klasses", multiple=True, type=click.Choice(sorted(c.label for c in PageClass
                                                                              if c > PageClass.FREE_PCP)),
              help="only the pages of this census class (repeatable); default: every allocated page")
@click.option("--top", default=20, show_default=True, help="stacks listed")
def stacks(core, vmlinux, debug_dirs, as_json, quiet, klasses, top) -> None:
    """Allocating stacks (page_owner) that hold the most pages now, like
    page_owner_sort on a live system: needs a kernel booted with page_owner=on."""
    def analysis(prog: drgn.Program):
        c = run_census(prog, _progress(quiet))
        chosen = [PageClass[k.upper()] for k in klasses] or [k for k in PageClass if k > PageClass.FREE_PCP]
        owners = c.page_owners
        found = owners.by_stack(c.pfns_of(*chosen), top) if owners else ([], 0, 0)
        return c, chosen, found

    c, chosen, (rows, distinct, unrecorded) = _analyze(core, vmlinux, debug_dirs, analysis)
    data = {"schema": "vmcore-tools/stacks/1", "page_owner": c.page_owner_state,
            "classes": [k.label for k in chosen], "page_size": c.memmap.page_size,
            "stacks_in_all": distinct, "pages_without_record": unrecorded,
            "stacks": [asdict(r) for r in rows]}
    _emit(data, as_json, stacks_text)
    _exit_for(c.problems)


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
    d = orphans_json(r)
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
    elif not d["orphaned_allocations"]:
        out.append("No orphaned pages: every unattributed page is referenced from live kernel memory.")
    if d["referenced"]:
        out += ["", f"Unattributed but referenced (first {min(top, d['referenced_allocations'])} "
                    f"of {d['referenced_allocations']})", referenced_table(d, top).text()]
    return "\n".join(out + _problems(r.problems))


@main.command()
@target_options
@click.option("--top", default=20, show_default=True, help="rows of the orphan and referenced tables")
@click.option("--pfns", "pfns_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="also write every orphan here, one 'PFN ORDER REFCOUNT SUSPECT' line each ('-': stderr)")
def orphans(core, vmlinux, debug_dirs, as_json, quiet, top, pfns_path) -> None:
    """Allocated pages that no owner, ring or pointer in kernel memory accounts for.

    The report lists each suspect's pages as runs of PFNs and a sample;
    --pfns lists them all."""
    r = _analyze(core, vmlinux, debug_dirs, lambda prog: run_orphans(prog, progress=_progress(quiet)))
    if pfns_path:
        _write_lines(pfns_path, r.pfn_lines())
    _emit(orphans_json(r), as_json, lambda _: orphans_text(r, top))
    _exit_for(r.census.problems + r.problems)


@main.command()
@target_options
def unreachable(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Slab objects and large kmalloc buffers that nothing reaches from the
    roots (kmemleak-style, offline), and the pages only they hold.

    Its own tier: an unreachable object is a suspect, not a verdict."""
    def analysis(prog: drgn.Program):
        r = run_orphans(prog, progress=_progress(quiet))
        return r, run_reachability(r, _progress(quiet))

    r, rr = _analyze(core, vmlinux, debug_dirs, analysis)
    data = {"schema": "vmcore-tools/unreachable/1", **rr.to_json()}
    _emit(data, as_json, lambda _: reachability_text(rr))
    _exit_for(r.census.problems + r.problems + rr.problems)


def _write_lines(path: str, lines) -> None:
    """Stream text chunks to ``path`` ('-': stderr, stdout being the report)."""
    try:
        if path == "-":
            for chunk in lines:
                sys.stderr.write(chunk)
            return
        with open(path, "w") as f:
            for chunk in lines:
                f.write(chunk)
    except OSError as e:
        click.echo(f"vmcore-tools: error: cannot write {path}: {e.strerror}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@target_options
@click.option("--fail-on-leak", is_flag=True, help="exit 1 when orphaned pages are found")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="also write a self-contained HTML report (tables, memory map, bar) here")
@click.option("--pictures", "pictures_dir", type=click.Path(file_okay=False),
              help="also write memory-map.png and classes.svg into this directory")
@click.option("--reachability", "reach", is_flag=True,
              help="add the unreachable tier: objects nothing reaches, pages only they hold "
                   "(reads all slab memory once more)")
def report(core, vmlinux, debug_dirs, as_json, quiet, fail_on_leak, html_path, pictures_dir, reach) -> None:
    """The one-shot answer: where the memory went, and who leaked it."""
    def analysis(prog: drgn.Program):
        r = run_orphans(prog, progress=_progress(quiet))
        return r, (run_reachability(r, _progress(quiet)) if reach else None)

    r, rr = _analyze(core, vmlinux, debug_dirs, analysis)
    c = r.census
    m = None
    if html_path or pictures_dir:
        m = run_stage("pictures", lambda: memory_map(c.classes, r.found.pfn, r.found.order), None, r.problems)
    data = {"schema": "vmcore-tools/report/2", "verdict": verdict(r),
            "census": c.to_json(), "rings": c.ring_rows(), "orphans": orphans_json(r)}
    if rr is not None:
        data["reachability"] = {"schema": "vmcore-tools/unreachable/1", **rr.to_json()}
    if html_path:
        _write(html_path, report_html(data, m))
    if pictures_dir and m is not None:
        Path(pictures_dir).mkdir(parents=True, exist_ok=True)
        _write(Path(pictures_dir) / "memory-map.png", m.png())
        _write(Path(pictures_dir) / "classes.svg", class_bar_svg(m.pages, data["census"]["page_size"]))
    _emit(data, as_json, lambda d: report_text(r, d) + (f"\n\n{reachability_text(rr)}" if rr else ""))
    _exit_for(c.problems + r.problems + (rr.problems if rr else []), leak=fail_on_leak and len(r.found) > 0)


def report_text(r: OrphanReport, d: dict[str, Any]) -> str:
    cj = d["census"]
    ps = cj["page_size"]
    dec = cj["decomposition"]
    top = sorted(((k, v) for k, v in cj["classes"].items() if v and k != "free"), key=lambda kv: -kv[1])[:6]
    out = [f"vmcore-tools report: {cj['release']}, {_mib(cj['total_pages'], ps)} MiB", "",
           "Verdict: " + d["verdict"], "",
           "T = U + K + S + C + F:  " + " + ".join(f"{k} {_mib(dec[k], ps)}" for k in "UKSCF")
           + f"  =  T {_mib(dec['T'], ps)} MiB",
           "Largest owners: " + ", ".join(f"{k} {_mib(v, ps)} MiB" for k, v in top),
           f"Unexplained kernel memory after the reference scan: "
           f"{_mib(r.orphaned_pages, ps)} MiB orphaned, "
           f"{_mib(r.referenced_pages, ps)} MiB unattributed but referenced", ""]
    if r.suspects:
        out.append(suspect_table(d["orphans"], 5).text())
    rings = [x for x in d["rings"] if x["populated"]]
    if rings:
        out += ["", "Rings: " + "; ".join(f"{x['driver']} {x['device']} {x['kind']}{x['queue']} "
                                           f"{x['populated']}/{x['slots']} slots" for x in rings)]
    return "\n".join(out + _problems(cj["problems"] + r.problems))


@main.command()
@target_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the snapshot (JSON) here")
def snapshot(core, vmlinux, debug_dirs, as_json, quiet, output) -> None:
    """A compact JSON summary (classes, slab caches, rings, orphans) to compare later with ``diff``.

    -o FILE writes it; --json prints it; otherwise a one-line summary is printed."""
    doc = _analyze(core, vmlinux, debug_dirs, lambda prog: take_snapshot(prog, _progress(quiet)))
    if output:
        _write(output, json.dumps(doc, indent=1) + "\n")
    _emit(doc, as_json, lambda d: snapshot_text(d, output))
    _exit_for(doc["problems"])


def snapshot_text(d: dict[str, Any], output: str | None) -> str:
    ps = d["page_size"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(d["taken_at"])) if d["taken_at"] else "unknown time"
    return (f"snapshot of {d['host']} ({d['release']}) at {when}: {_mib(d['total_pages'], ps)} MiB, "
            f"{_mib(d['orphaned_pages'], ps)} MiB orphaned in {d['orphans']} allocations, "
            f"{len(d['slab'])} slab caches, {len(d['rings'])} rings"
            + (f"; written to {output}" if output else "; -o FILE keeps it for diff"))


@main.command()
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--any-host", is_flag=True, help="compare snapshots of different hosts")
@click.option("--all", "show_all", is_flag=True, help="also list what did not change")
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False), help="also draw the growth as an SVG chart here")
@click.option("--quiet", is_flag=True,
              help="print nothing; exit 1 if the orphaned pages grew, else 0 (as git diff --quiet)")
def diff(before, after, as_json, any_host, show_all, svg_path, quiet) -> None:
    """Growth from snapshot BEFORE to AFTER: per class, slab cache and ring, in MB and MB/hour."""
    try:
        a, b = load_snapshot(before), load_snapshot(after)
        d = diff_snapshots(a, b, any_host)
    except SnapshotError as e:
        click.echo(f"vmcore-tools: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if svg_path:
        _write(svg_path, growth_svg([a, b]))
    if quiet:
        sys.exit(EXIT_LEAK if any(g["kind"] == "orphaned" and g["pages"] > 0 for g in d["growth"]) else 0)
    if not show_all:
        d["growth"] = [g for g in d["growth"] if g["pages"] or g["kind"] == "orphaned"]
    _emit(d, as_json, diff_text)


def diff_text(d: dict[str, Any]) -> str:
    span = f"{d['hours'] * 60:.1f} minutes" if d["hours"] else "unknown time (no clock in a snapshot)"
    rows = sorted(d["growth"], key=lambda g: -abs(g["pages"]))
    return "\n".join([f"Growth on {d['host']} over {span}", tabulate(
        [(g["kind"], g["name"], g["before"], g["after"], f"{g['pages']:+}", f"{g['mb']:+.2f}",
          "-" if g["mb_per_hour"] is None else f"{g['mb_per_hour']:+.1f}") for g in rows],
        headers=["", "name", "pages before", "after", "pages", "MB", "MB/hour"], disable_numparse=True)])


@main.command()
@target_options
@click.option("--interval", default="10m", show_default=True, help="time between samples: 30s, 10m, 1h")
@click.option("--count", default=0, help="stop after this many samples (0: run until interrupted)")
@click.option("--steps", default=3, show_default=True, help="flag what grew at each of this many steps")
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False),
              help="keep an SVG chart of the growth so far here, redrawn at every sample")
def watch(core, vmlinux, debug_dirs, as_json, quiet, interval, count, steps, svg_path) -> None:
    """Sample a live kernel, print what grew, and flag what grows at every step (a leak)."""
    try:
        seconds = _duration(interval)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--interval")
    if core:
        click.echo("vmcore-tools: error: watch samples a live kernel; a vmcore does not change", err=True)
        sys.exit(EXIT_BAD_INPUT)
    prog = _open(core, vmlinux, debug_dirs)
    series: list[dict] = []
    while True:
        with _reading(core):
            series.append(take_snapshot(prog, _progress(quiet)))
        flagged = steady_growth(series, steps)
        if len(series) > 1 and svg_path:
            _write(svg_path, growth_svg(series))
        last = diff_snapshots(series[-2] if len(series) > 1 else series[-1], series[-1])
        since = diff_snapshots(series[0], series[-1])
        record = {"schema": "vmcore-tools/watch/1", "sample": len(series), "taken_at": series[-1]["taken_at"],
                  "growth": [g for g in last["growth"] if g["pages"]],
                  "since_start": [g for g in since["growth"] if g["pages"]],
                  "steady": [{"kind": k, "name": n} for k, n in flagged]}
        click.echo(json.dumps(record) if as_json else watch_text(record, since, series[-1]))
        if count and len(series) >= count:
            break
        time.sleep(seconds)


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


def _duration(text: str) -> float:
    """Seconds in "30s", "10m", "1h" or a plain number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (30s, 10m, 1h)") from None
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return value

