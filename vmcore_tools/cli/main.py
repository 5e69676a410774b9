"""The ``vmcore-tools`` command line.

Every command takes the same target options (live kernel by default, or
``-c VMCORE``), ``--json`` and ``--quiet``.  Exit codes (``stages``):

* 0: the analysis ran whole;
* 1: a leak was found and ``--fail-on-leak`` was given (``report``,
  ``orphans``, ``unreachable``), or
  ``diff --quiet`` saw the orphaned pages grow;
* 2: bad input (a missing or foreign core, debug info that does not match,
  an unwritable output path, a bad option), one line on stderr;
* 3: a partial result: a stage failed (its problem line says which, and what
  the result lacks), or the command itself met an internal error.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import click
import drgn

from vmcore_tools.census.census import census as run_census, free_memory
from vmcore_tools.census.classes import PageClass
from vmcore_tools.cli.common import (Commands, analyze, emit, exit_for, fail_on_leak_option, open_target,
                                     parse_duration, progress_printer, reading, session, target_options,
                                     top_option, write_lines, write_output)
from vmcore_tools.cli.texts import (buddy_text, census_text, compare_text, diff_text, orphans_text, page_text,
                                    report_text, rings_text, slab_text, snapshot_text, stacks_text, watch_text)
from vmcore_tools.core.features import has_object, kernel_release
from vmcore_tools.core.stages import EXIT_BAD_INPUT, run_stage
from vmcore_tools.leaks.orphans import orphans as run_orphans
from vmcore_tools.leaks.page import explain_page
from vmcore_tools.leaks.reachability import reachability as run_reachability, reachability_text
from vmcore_tools.leaks.verdict import orphans_json, verdict
from vmcore_tools.mm.counters import totalram_pages
from vmcore_tools.mm.slab import SORT_KEYS, slab_caches
from vmcore_tools.net.devices import bound_devices
from vmcore_tools.net.rings import all_walkers, walker_ready
from vmcore_tools.report.compare import ORPHANED, compare as compare_fleet, load_fleet
from vmcore_tools.report.html import report_html
from vmcore_tools.report.metrics import exposition, write_textfile
from vmcore_tools.report.pictures import class_bar_svg, growth_svg, memory_map
from vmcore_tools.report.snapshot import (SnapshotError, diff as diff_snapshots, load_snapshot, steady_growth,
                                          take_snapshot)


def run_on(prog: drgn.Program, args: list[str]) -> int:
    """Run a ``vmcore-tools`` command line on an already open program (what
    the drgn plugin does); returns the exit code the shell would see."""
    with session(prog):
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


@click.group(cls=Commands)
@click.version_option(package_name="vmcore-tools")
def main() -> None:
    """Where did every page go, and who leaked it?

    Exit codes: 0 done, 1 leak found (--fail-on-leak, diff --quiet),
    2 bad input, 3 partial result (a stage failed; the output says which)."""


@main.command()
@target_options
def info(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Kernel release, memory size, and the NIC drivers bound to devices with
    whether their modules' debug info was found."""
    prog = open_target(core, vmlinux, debug_dirs)
    with reading(core):
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
    emit(data, as_json, text)


@main.command()
@target_options
def buddy(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Free memory: buddy free lists per zone, order and migrate type, and per-CPU lists."""
    data = analyze(core, vmlinux, debug_dirs, lambda prog: free_memory(prog, progress_printer(quiet)))
    emit(data, as_json, buddy_text)
    exit_for(data["problems"])


@main.command()
@target_options
def census(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """Every physical page classified by owner, reconciled with the kernel's counters."""
    c = analyze(core, vmlinux, debug_dirs, lambda prog: run_census(prog, progress_printer(quiet)))
    emit(c.to_json(), as_json, lambda _: census_text(c))
    exit_for(c.problems)


@main.command()
@target_options
@click.option("--sort", type=click.Choice(sorted(SORT_KEYS)), default="size", show_default=True,
              help="order of the caches: total size, objects, active objects, object size, slabs or name")
@top_option("cache table")
def slab(core, vmlinux, debug_dirs, as_json, quiet, sort, top) -> None:
    """Slab caches, slabtop-style, with the caches merged into each (--json: every cache)."""
    problems: list[str] = []
    caches = analyze(core, vmlinux, debug_dirs,
                     lambda prog: run_stage("slab caches", lambda: slab_caches(prog, sort), [], problems))
    data = {"schema": "vmcore-tools/slab/1", "sort": sort,
            "total_pages": sum(c.pages for c in caches),
            "caches": [{**asdict(c), "pages": c.pages, "total_bytes": c.total_bytes} for c in caches],
            "problems": problems}
    emit(data, as_json, lambda d: slab_text({**d, "caches": d["caches"][:top or None]}))
    exit_for(problems)


@main.command()
@target_options
def rings(core, vmlinux, debug_dirs, as_json, quiet) -> None:
    """NIC rx rings (i40e family, virtio_net, e1000e) and page pools: the pages each holds."""
    c = analyze(core, vmlinux, debug_dirs, lambda prog: run_census(prog, progress_printer(quiet)))
    data = {"schema": "vmcore-tools/rings/1", "rings": c.ring_rows(), "walked": c.rings.walked,
            "problems": c.rings.problems, "nic_ring_pages": c.totals()["nic_ring"]}
    emit(data, as_json, rings_text)
    exit_for(c.problems)


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
    prog = open_target(core, vmlinux, debug_dirs)
    with reading(core):
        c = run_census(prog, progress_printer(quiet))
        try:
            r = explain_page(prog, value, c, references=not no_refs)
        except ValueError as e:
            click.echo(f"vmcore-tools: error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    emit(r.to_json(), as_json, page_text)
    exit_for(c.problems + r.problems)


@main.command()
@target_options
@click.option("--class", "klasses", multiple=True, type=click.Choice(sorted(c.label for c in PageClass
                                                                              if c > PageClass.FREE_PCP)),
              help="only the pages of this census class (repeatable); default: every allocated page")
@top_option("stack list (and of the --json document, which says how many there are)")
def stacks(core, vmlinux, debug_dirs, as_json, quiet, klasses, top) -> None:
    """Allocating stacks (page_owner) that hold the most pages now, like
    page_owner_sort on a live system: needs a kernel booted with page_owner=on."""
    def analysis(prog: drgn.Program):
        c = run_census(prog, progress_printer(quiet))
        chosen = [PageClass[k.upper()] for k in klasses] or [k for k in PageClass if k > PageClass.FREE_PCP]
        owners = c.page_owners
        found = owners.by_stack(c.pfns_of(*chosen), top) if owners else ([], 0, 0)
        return c, chosen, found

    c, chosen, (rows, distinct, unrecorded) = analyze(core, vmlinux, debug_dirs, analysis)
    data = {"schema": "vmcore-tools/stacks/1", "page_owner": c.page_owner_state,
            "classes": [k.label for k in chosen], "page_size": c.memmap.page_size,
            "stacks_in_all": distinct, "pages_without_record": unrecorded,
            "stacks": [asdict(r) for r in rows]}
    emit(data, as_json, stacks_text)
    exit_for(c.problems)


@main.command()
@target_options
@top_option("orphan, inferred and referenced tables")
@click.option("--pfns", "pfns_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="also write every orphan here, one 'PFN ORDER REFCOUNT SUSPECT' line each ('-': stderr)")
@click.option("--inferred-pfns", "inferred_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="also write every allocation held only by inference here, in the --pfns format "
                   "(suspect -1)")
@fail_on_leak_option("orphaned pages are found")
def orphans(core, vmlinux, debug_dirs, as_json, quiet, top, pfns_path, inferred_path, fail_on_leak) -> None:
    """Allocated pages that no owner, ring or pointer in kernel memory accounts for.

    The report lists each suspect's pages as runs of PFNs and a sample;
    --pfns lists them all.  Pages that only an inference holds (an
    allocation run, a physical-address match, a table's shape) are a tier
    of their own: --inferred-pfns lists them."""
    r = analyze(core, vmlinux, debug_dirs, lambda prog: run_orphans(prog, progress=progress_printer(quiet)))
    if pfns_path:
        write_lines(pfns_path, r.pfn_lines())
    if inferred_path:
        write_lines(inferred_path, r.inferred_pfn_lines())
    emit(orphans_json(r), as_json, lambda _: orphans_text(r, top))
    exit_for(r.census.problems + r.problems, leak=fail_on_leak and len(r.found) > 0)


@main.command()
@target_options
@fail_on_leak_option("pages held only by unreachable objects are found")
def unreachable(core, vmlinux, debug_dirs, as_json, quiet, fail_on_leak) -> None:
    """Slab objects and large kmalloc buffers that nothing reaches from the
    roots (kmemleak-style, offline), and the pages only they hold.

    Its own tier: an unreachable object is a suspect, not a verdict."""
    def analysis(prog: drgn.Program):
        r = run_orphans(prog, progress=progress_printer(quiet))
        return r, run_reachability(r, progress_printer(quiet))

    r, rr = analyze(core, vmlinux, debug_dirs, analysis)
    data = {"schema": "vmcore-tools/unreachable/1", **rr.to_json()}
    emit(data, as_json, lambda _: reachability_text(rr))
    exit_for(r.census.problems + r.problems + rr.problems, leak=fail_on_leak and rr.hidden_pages > 0)


@main.command()
@target_options
@fail_on_leak_option("orphaned pages are found")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="also write a self-contained HTML report (tables, memory map, bar) here")
@click.option("--pictures", "pictures_dir", type=click.Path(file_okay=False),
              help="also write memory-map.png and classes.svg into this directory")
@click.option("--reachability", "reach", is_flag=True,
              help="add the unreachable tier: objects nothing reaches, pages only they hold "
                   "(reads all slab memory once more)")
@top_option("suspect table")
def report(core, vmlinux, debug_dirs, as_json, quiet, fail_on_leak, html_path, pictures_dir, reach, top) -> None:
    """The one-shot answer: where the memory went, and who leaked it."""
    def analysis(prog: drgn.Program):
        r = run_orphans(prog, progress=progress_printer(quiet))
        return r, (run_reachability(r, progress_printer(quiet)) if reach else None)

    r, rr = analyze(core, vmlinux, debug_dirs, analysis)
    c = r.census
    m = None
    if html_path or pictures_dir:
        m = run_stage("pictures", lambda: memory_map(c.classes, r.found.pfn, r.found.order), None, r.problems)
    data = {"schema": "vmcore-tools/report/3", "verdict": verdict(r),
            "census": c.to_json(), "rings": c.ring_rows(), "orphans": orphans_json(r)}
    if rr is not None:
        data["reachability"] = {"schema": "vmcore-tools/unreachable/1", **rr.to_json()}
    if html_path:
        write_output(html_path, report_html(data, m))
    if pictures_dir and m is not None:
        Path(pictures_dir).mkdir(parents=True, exist_ok=True)
        write_output(Path(pictures_dir) / "memory-map.png", m.png())
        write_output(Path(pictures_dir) / "classes.svg", class_bar_svg(m.pages, data["census"]["page_size"]))
    emit(data, as_json, lambda d: report_text(r, d, top) + (f"\n\n{reachability_text(rr)}" if rr else ""))
    exit_for(c.problems + r.problems + (rr.problems if rr else []), leak=fail_on_leak and len(r.found) > 0)


@main.command()
@target_options(json_option=False)
@click.option("--textfile", "textfile", type=click.Path(dir_okay=False),
              help="write the metrics here, atomically (node_exporter's textfile collector), not to stdout")
def metrics(core, vmlinux, debug_dirs, quiet, textfile) -> None:
    """The census and the orphans as Prometheus metrics (text exposition).

    One analysis, written to stdout or, with --textfile, to a file that is
    replaced only once the analysis ended: a scraper never sees half of one,
    and a failed run leaves the last good file (node_exporter's textfile
    collector reads the directory)."""
    t0 = time.monotonic()

    def analysis(prog: drgn.Program):
        r = run_orphans(prog, progress=progress_printer(quiet))
        problems: list[str] = []
        caches = run_stage("slab caches", lambda: slab_caches(prog), [], problems)
        return r, caches, problems, kernel_release(prog)

    r, caches, problems, release = analyze(core, vmlinux, debug_dirs, analysis)
    text = exposition(r, caches, version("vmcore-tools"), release, time.monotonic() - t0)
    if textfile:
        try:
            write_textfile(textfile, text)
        except OSError as e:
            click.echo(f"vmcore-tools: error: cannot write {textfile}: {e.strerror}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    else:
        click.echo(text, nl=False)
    exit_for(r.census.problems + r.problems + problems)


@main.command()
@target_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the snapshot (JSON) here")
def snapshot(core, vmlinux, debug_dirs, as_json, quiet, output) -> None:
    """A compact JSON summary (classes, slab caches, rings, orphans) to compare later with ``diff``.

    -o FILE writes it; --json prints it; otherwise a one-line summary is printed."""
    doc = analyze(core, vmlinux, debug_dirs, lambda prog: take_snapshot(prog, progress_printer(quiet)))
    if output:
        write_output(output, json.dumps(doc, indent=1) + "\n")
    emit(doc, as_json, lambda d: snapshot_text(d, output))
    exit_for(doc["problems"])


@main.command()
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--any-host", is_flag=True, help="compare snapshots of different hosts")
@click.option("--all", "show_all", is_flag=True, help="also list what did not change")
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False), help="also draw the growth as an SVG chart here")
@fail_on_leak_option("the orphaned pages grew from BEFORE to AFTER")
@click.option("--quiet", is_flag=True,
              help="print nothing; implies --fail-on-leak (as git diff --quiet implies --exit-code)")
def diff(before, after, as_json, any_host, show_all, svg_path, fail_on_leak, quiet) -> None:
    """Growth from snapshot BEFORE to AFTER: per class, slab cache and ring, in MB and MB/hour."""
    try:
        a, b = load_snapshot(before), load_snapshot(after)
        d = diff_snapshots(a, b, any_host)
    except SnapshotError as e:
        click.echo(f"vmcore-tools: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if svg_path:
        write_output(svg_path, growth_svg([a, b]))
    grew = any(g["kind"] == "orphaned" and g["pages"] > 0 for g in d["growth"])
    if not quiet:
        if not show_all:
            d["growth"] = [g for g in d["growth"] if g["pages"] or g["kind"] == "orphaned"]
        emit(d, as_json, diff_text)
    exit_for([], leak=(fail_on_leak or quiet) and grew)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--factor", default=2.0, show_default=True, type=click.FloatRange(min=1.0),
              help="a host stands out when its share of RAM is more than this many times the fleet's median")
@click.option("--min-mb", default=64.0, show_default=True, type=click.FloatRange(min=0.0),
              help="... and its excess over the median is at least this many MB")
@top_option("host table")
@fail_on_leak_option("a host stands out on its orphaned pages")
def compare(paths, as_json, factor, min_mb, top, fail_on_leak) -> None:
    """Snapshots of many hosts (files, or directories of them) side by side.

    Each host's memory by class as a share of its RAM, its orphaned pages and
    their growth (from its first snapshot to its last), and the hosts that
    stand out from the fleet's median."""
    try:
        doc = compare_fleet(load_fleet(list(paths)), factor, min_mb)
    except SnapshotError as e:
        click.echo(f"vmcore-tools: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    emit(doc, as_json, lambda d: compare_text(d, top))
    exit_for([], leak=fail_on_leak and any(o["measure"] == ORPHANED for o in doc["outliers"]))


@main.command()
@target_options(live_only=True)
@click.option("--interval", default="10m", show_default=True, help="time between samples: 30s, 10m, 1h")
@click.option("--count", default=0, help="stop after this many samples (0: run until interrupted)")
@click.option("--steps", default=3, show_default=True, help="flag what grew at each of this many steps")
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False),
              help="keep an SVG chart of the growth so far here, redrawn at every sample")
def watch(vmlinux, debug_dirs, as_json, quiet, interval, count, steps, svg_path) -> None:
    """Sample the running kernel, print what grew, and flag what grows at every step (a leak).

    It takes no -c: a vmcore does not change."""
    try:
        seconds = parse_duration(interval)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--interval")
    prog = open_target(None, vmlinux, debug_dirs)
    series: list[dict] = []
    while True:
        with reading(None):
            series.append(take_snapshot(prog, progress_printer(quiet)))
        flagged = steady_growth(series, steps)
        if len(series) > 1 and svg_path:
            write_output(svg_path, growth_svg(series))
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




#: the examples each command's --help ends with (a vmcore needs -c, -s and -d; nothing: the live kernel)
EXAMPLES = {
    "info": ["vmcore-tools info -c vmcore -s vmlinux", "vmcore-tools info          # the running kernel"],
    "buddy": ["vmcore-tools buddy -c vmcore -s vmlinux --json | jq '.zones[].free_pages'"],
    "census": ["vmcore-tools census -c vmcore -s vmlinux -d /usr/lib/debug/lib/modules/$(uname -r)"],
    "slab": ["vmcore-tools slab --sort objects --top 10"],
    "rings": ["vmcore-tools rings -c vmcore -s vmlinux -d i40e.ko"],
    "page": ["vmcore-tools page 13346 -c vmcore -s vmlinux", "vmcore-tools page 0xffffea00004d0880 --no-refs"],
    "stacks": ["vmcore-tools stacks --class unattributed --top 5     # a kernel booted with page_owner=on"],
    "orphans": ["vmcore-tools orphans -c vmcore -s vmlinux -d i40e.ko --pfns orphans.txt",
                "vmcore-tools orphans --inferred-pfns inferred.txt --fail-on-leak"],
    "unreachable": ["vmcore-tools unreachable -c vmcore -s vmlinux --json > unreachable.json"],
    "report": ["vmcore-tools report -c vmcore -s vmlinux -d i40e.ko --html report.html",
               "vmcore-tools report --fail-on-leak --quiet    # the running kernel, exit 1 on a leak"],
    "metrics": ["vmcore-tools metrics --quiet --textfile /var/lib/prometheus/node-exporter/vmcore_tools.prom"],
    "snapshot": ["vmcore-tools snapshot -o before.json"],
    "diff": ["vmcore-tools diff before.json after.json --svg growth.svg",
             "vmcore-tools diff --quiet before.json after.json || echo 'orphaned pages grew'"],
    "compare": ["vmcore-tools compare fleet/ --fail-on-leak"],
    "watch": ["vmcore-tools watch --interval 10m --count 12 --svg growth.svg"],
}
for _name, _command in main.commands.items():
    _command.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[_name])
