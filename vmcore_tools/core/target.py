"""Opening the thing we analyze: a live kernel or a vmcore, with its debug info.

Every command goes through :func:`open_program`.  Bad input is reported as a
:class:`TargetError` whose message is one line a user can act on; the CLI
turns it into exit code 2.  Cores are opened read-only by drgn; nothing here
writes to them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import drgn

from vmcore_tools.core.debuginfo import module_files, quiet_drgn, use_module_files, use_module_kallsyms

LIVE = "/proc/kcore"
#: architectures whose memory layout the analysis knows
SUPPORTED_ARCHES = (drgn.Architecture.X86_64, drgn.Architecture.AARCH64)
#: page sizes tested: x86-64's, arm64's 4 KiB and 16 KiB flavours
SUPPORTED_PAGE_SIZES = (4096, 16384)


class TargetError(Exception):
    """Input we cannot analyze; ``str()`` is a one-line explanation."""


def check_arch(prog: drgn.Program, target: str) -> None:
    """Refuse a kernel of an architecture whose page tables and stacks the
    analysis does not know (``vmcore_tools.arch``)."""
    arch = prog.platform.arch if prog.platform is not None else None
    if arch not in SUPPORTED_ARCHES:
        raise TargetError(f"{target}: a {arch.name.lower() if arch else 'unknown'} kernel; vmcore-tools "
                          "supports x86-64 and aarch64 only (their page tables and stacks)")
    try:
        page_size = prog["PAGE_SIZE"].value_()
    except (KeyError, LookupError, drgn.FaultError):
        return
    if page_size not in SUPPORTED_PAGE_SIZES:
        raise TargetError(f"{target}: {page_size // 1024} KiB pages; vmcore-tools supports 4 and 16 KiB "
                          "pages only (arm64's 64 KiB kernels are untested, and with 52-bit addresses run "
                          "on 48 bits their kernel root starts past swapper_pg_dir)")


def open_program(core: str | os.PathLike | None = None,
                 vmlinux: str | os.PathLike | None = None,
                 extra_debug: Iterable[str | os.PathLike] = ()) -> drgn.Program:
    """A drgn Program for ``core`` (``None``: the running kernel) with debug info.

    ``vmlinux`` is the kernel's DWARF; ``extra_debug`` are module ``.ko``
    files or directories searched for them.  Without ``vmlinux`` drgn's
    default search (``/usr/lib/debug``, build ids) is used.  Only vmlinux's
    debug info is loaded here; a module's is loaded when an analysis needs it
    (:mod:`vmcore_tools.debuginfo`).
    """
    prog = drgn.Program()
    target = str(core) if core is not None else LIVE
    try:
        if core is None:
            prog.set_kernel()
        else:
            path = Path(core)
            if not path.exists():
                raise TargetError(f"{path}: no such file")
            if path.stat().st_size == 0:
                raise TargetError(f"{path}: empty file, not a vmcore")
            prog.set_core_dump(str(path))
    except TargetError:
        raise
    except Exception as e:  # libelf/libkdumpfile failures arrive as plain Exception
        raise TargetError(f"{target}: cannot open as a kernel core: {e}") from None
    if not (prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL):
        raise TargetError(f"{target}: not a Linux kernel core (no VMCOREINFO)")
    check_arch(prog, target)

    extra_debug = list(extra_debug)
    for p in [vmlinux, *extra_debug]:
        if p is not None and not Path(p).exists():
            raise TargetError(f"{p}: no such debug info file")
    # Only vmlinux's debug info now; a module's when an analysis needs it.
    use_module_files(prog, module_files(extra_debug), only=vmlinux is not None)
    use_module_kallsyms(prog)
    try:
        with quiet_drgn():
            if vmlinux is None:
                prog.load_debug_info(main=True)
            else:
                prog.load_debug_info([str(vmlinux)])
    except drgn.MissingDebugInfoError as e:
        raise TargetError(
            f"{target}: no kernel debug info found (give -s VMLINUX; {str(e).splitlines()[0]})"
        ) from None
    try:
        prog["init_uts_ns"]
    except (KeyError, LookupError):
        if vmlinux is not None:
            raise TargetError(f"{target}: {vmlinux} does not match the core "
                              "(its build id is not the running kernel's)") from None
        raise TargetError(f"{target}: no kernel debug info found (give -s VMLINUX)") from None
    check_debug_info_matches(prog, target)
    return prog


def check_debug_info_matches(prog: drgn.Program, target: str) -> None:
    """Refuse a vmlinux from another build: its ``linux_banner`` must be the core's."""
    try:
        banner_sym = prog.symbol("linux_banner")
        in_core = prog.read(banner_sym.address, 256).split(b"\0")[0].decode(errors="replace")
    except (LookupError, drgn.FaultError) as e:
        if "short read" in str(e):
            raise TargetError(f"{target}: the core file is truncated ({e})") from None
        raise TargetError(f"{target}: cannot read linux_banner to check the debug info: {e}") from None
    release = prog["init_uts_ns"].name.release
    try:
        rel = release.string_().decode()
    except drgn.FaultError:
        raise TargetError(f"{target}: the debug info does not match the core "
                          "(init_uts_ns is unreadable)") from None
    if not in_core.startswith("Linux version ") or rel not in in_core:
        raise TargetError(
            f"{target}: the debug info does not match the core "
            f"(core says {in_core[:60]!r}, debug info release {rel!r})")
