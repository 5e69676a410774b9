"""What every command shares: the target options, opening the target (or
the drgn session's program), turning bad input into one line and exit 2,
writing outputs, progress, and the exit code a result earns
(``core.stages``: 0 done, 1 leak, 2 bad input, 3 partial)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import drgn

from vmcore_tools.core.parallel import default_jobs, set_jobs
from vmcore_tools.core.stages import EXIT_BAD_INPUT, EXIT_LEAK, EXIT_PARTIAL, failed_stages, set_live
from vmcore_tools.core.target import TargetError, check_arch, open_program


def target_options(f: Callable | None = None, *, json_option: bool = True, live_only: bool = False) -> Callable:
    """The options every command that reads a kernel takes; a command that
    only samples the running kernel (``live_only``) takes no ``-c``."""
    if f is None:
        return lambda g: target_options(g, json_option=json_option, live_only=live_only)
    if not live_only:
        f = click.option("-c", "--core", type=click.Path(dir_okay=False),
                         help="vmcore to analyze (ELF or kdump-compressed); default: the running kernel")(f)
    f = click.option("-s", "--vmlinux", type=click.Path(dir_okay=False),
                     help="kernel debug info (vmlinux with DWARF)")(f)
    f = click.option("-d", "--debug-dir", "debug_dirs", multiple=True, type=click.Path(),
                     help="module debug info: a .ko file or a directory of them (repeatable)")(f)
    if json_option:
        f = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
    f = click.option("--quiet", is_flag=True, help="no progress on stderr")(f)
    f = click.option("-j", "--jobs", type=click.IntRange(1, 64), expose_value=False, callback=_remember_jobs,
                     help="processes that read large parts of the dump (forked: each reads a part and sends "
                          "back what it found); default the CPUs this process may use, at most 8 "
                          f"({default_jobs()} here; 1 inside drgn)")(f)
    return f


#: ``--jobs`` as given (None: ``default_jobs()``), applied to the program ``open_target`` opens
_jobs: int | None = None


def _remember_jobs(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    global _jobs
    _jobs = value
    return value


#: the program a drgn session already opened (``session``); None from the shell
_session_program: drgn.Program | None = None


@contextmanager
def session(prog: drgn.Program) -> Iterator[None]:
    """Commands run inside the block use ``prog`` (the drgn plugin's
    program), not a target of their own."""
    global _session_program
    _session_program = prog
    try:
        yield
    finally:
        _session_program = None


def open_target(core, vmlinux, debug_dirs) -> drgn.Program:
    if _session_program is not None:
        if core or vmlinux or debug_dirs:
            click.echo("vmcore-tools: error: inside drgn the session's program is used; "
                       "-c/-s/-d are not taken", err=True)
            sys.exit(EXIT_BAD_INPUT)
        try:
            check_arch(_session_program, "the drgn session's program")
        except TargetError as e:
            click.echo(f"vmcore-tools: error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        if _jobs:       # the session's program reads in one process unless told
            set_jobs(_session_program, _jobs)
        set_live(_session_program)
        return _session_program
    try:
        prog = open_program(core, vmlinux, debug_dirs)
        set_jobs(prog, _jobs or default_jobs())
        set_live(prog)
        return prog
    except TargetError as e:
        click.echo(f"vmcore-tools: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@contextmanager
def reading(target: str | None):
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


def analyze(core, vmlinux, debug_dirs, analysis: Callable[[drgn.Program], Any]) -> Any:
    """Open the target and run ``analysis`` on it; bad input or memory the
    analysis cannot read ends the command with one line and exit code 2."""
    prog = open_target(core, vmlinux, debug_dirs)
    with reading(core):
        return analysis(prog)


def emit(data: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    click.echo(json.dumps(data, indent=1) if as_json else text(data))


def write_output(path: str | Path, content: str | bytes) -> None:
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


def fail_on_leak_option(what: str) -> Callable:
    """``--fail-on-leak``, the same flag on every command that finds leaks:
    exit 1 when ``what`` (and no stage failed: that is exit 3)."""
    return click.option("--fail-on-leak", is_flag=True, help=f"exit 1 when {what}")


#: rows of a text table, on every command that lists (``--top``)
TOP_ROWS = 20


def top_option(what: str) -> Callable:
    """``--top N``, the same on every command that lists: rows of its text
    tables (0: all), 20 by default; a ``--json`` document says how many
    there are in all."""
    return click.option("--top", default=TOP_ROWS, show_default=True, type=click.IntRange(min=0),
                        help=f"rows of the {what} in the text output (0: all)")


def exit_for(problems: list[str], leak: bool = False) -> None:
    """Exit 3 when a stage failed (the output above says which), else 1 when
    a leak is to fail the command, else return (exit 0)."""
    if failed_stages(problems):
        sys.exit(EXIT_PARTIAL)
    if leak:
        sys.exit(EXIT_LEAK)


def progress_printer(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(what: str, done: int, total: int) -> None:
        click.echo(f"\r\033[K{what}: {done * 100 // max(total, 1):3d}% ({done}/{total} pages)",
                   err=True, nl=done >= total)
    return show


def write_lines(path: str, lines) -> None:
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


def parse_duration(text: str) -> float:
    """Seconds in "30s", "10m", "1h" or a plain number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (30s, 10m, 1h)") from None
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return value
