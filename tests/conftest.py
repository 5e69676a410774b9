"""Shared fixtures: sample cores built from real Debian kernels under QEMU.

Cores are built once and cached outside the repo (see sample_cores); a test
that needs one takes the fixture below.  Nothing here mocks a kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sample_cores.__main__ import target_args
from sample_cores.scenarios import build

KERNELS = ("5.10", "6.1", "6.12", "7.3")


def lines(all_lines: tuple[str, ...] = KERNELS, ci: tuple[str, ...] = ("6.1",)) -> list:
    """Parameters for a test over ``all_lines``: the ``ci`` ones run in
    ``make test``, the others are marked ``full`` and run in ``make
    test-all`` (a cold ``make test`` must stay within CI's budget; each
    feature still runs there on at least one line, each line on many)."""
    return [k if k in ci else pytest.param(k, marks=pytest.mark.full) for k in all_lines]


def assert_census_whole(c) -> None:
    """Every page of census ``c`` in one class, none unreadable or damaged,
    and its free pages the kernel's own count."""
    t = c.totals()
    assert sum(t.values()) == c.total_pages and t["unreadable"] == 0 and t["damaged"] == 0, t
    assert t["free"] == c.counters["free"], (t["free"], c.counters["free"])


def planted_class(leak: dict, pool_pages_marked: bool) -> str:
    """The census class of a planted leak's pages: the page lost from
    vmct_shapes' page_pool keeps the pool's mark where the kernel marks pool
    pages (``pool_pages_marked``: struct page has ``pp_magic``, 5.14+), and
    is class page_pool; every other lost page is unattributed."""
    return "page_pool" if leak["ring"] == "page-pool" and pool_pages_marked else "unattributed"


class Core:
    """A built sample core: its directory, manifest and vmcore-tools options."""

    def __init__(self, path: Path):
        self.path = path
        self.manifest = json.loads((path / "manifest.json").read_text())
        self.args = target_args(path)
        self._expected: dict[int, dict] | None = None
        self._inferred: dict[int, str] = {}

    @property
    def core(self) -> Path:
        return self.path / self.manifest["core"]["file"]

    @property
    def vmlinux(self) -> str:
        return self.manifest["kernel"]["vmlinux"]

    @property
    def debug(self) -> list[str]:
        k = self.manifest["kernel"]
        return [*k["test_modules"].values(), k["debug_modules_dir"]]

    def netdevs(self, driver: str) -> list[str]:
        """The guest's net devices bound to ``driver`` (recorded by the workload)."""
        return sorted(n for n, d in self.manifest["netdevs"].items() if d["driver"] == driver)

    def program(self):
        from vmcore_tools import open_program
        return open_program(self.core, self.vmlinux, self.debug)

    def planted_class(self, prog, leak: dict) -> str:
        """``planted_class`` on this core's kernel."""
        return planted_class(leak, prog.type("struct page").has_member("pp_magic"))

    def expected_orphans(self) -> dict[int, dict]:
        """The planted leaks the report must find orphaned, by PFN: all of
        them, except those in the inferred tier (``OrphanReport.inferred_heads``):
        a refcount-1 page that lands right after a heap-held
        ``alloc_pages_exact()`` run in its buddy block, which the run rule
        takes for the run's tail (``runs.extend_runs``), and the pages its
        contents name; on a kernel that does not zero slab objects when it
        hands them out (our built page_owner and CMA kernels), a page whose
        only pointer lies in a kmalloc object's slack (``mm.kmalloc``).
        Nothing in the dump tells either from a hold, so the report lists
        them in that tier -- never as held -- and ``inferred_leaks`` says
        which those are.

        Every other planted page held counts as a false hold: it fails here."""
        if self._expected is None:
            from vmcore_tools import orphans
            r = orphans(self.program())
            planted = {x["pfn"]: x for x in self.manifest["planted_leaks"]}
            inferred = set(r.inferred_heads.tolist()) & planted.keys()
            held = {p for p in planted if p in r.references} - inferred
            assert not held, {p: r.references[p] for p in held}
            self._inferred = {p: r.inferred_rules[p] for p in inferred}
            self._expected = {p: x for p, x in planted.items() if p not in inferred}
        return self._expected

    def inferred_leaks(self) -> dict[int, str]:
        """The planted leaks the report lists in its inferred tier, and the rule each rests on."""
        self.expected_orphans()
        return self._inferred


_built: dict[tuple[str, str], Core] = {}


def sample_core(scenario: str, kernel: str) -> Core:
    key = (scenario, kernel)
    if key not in _built:
        _built[key] = Core(build(scenario, kernel, log=lambda m: print(m, flush=True)))
    return _built[key]


@pytest.fixture(scope="session", params=KERNELS)
def leak_core(request) -> Core:
    """The i40e-leak scenario on each supported kernel line."""
    return sample_core("i40e-leak", request.param)


@pytest.fixture(scope="session")
def kdump_core() -> Core:
    """The i40e leak captured by a real kexec'd capture kernel, makedumpfile -c -d 31."""
    return sample_core("i40e-leak-kdump", "6.1")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``vmcore-tools ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "vmcore_tools.cli", *args], capture_output=True, text=True)


def cli_json(*args: str, quiet: bool = True) -> dict:
    """``vmcore-tools ARGS --json --quiet``: exit 0, nothing on stderr, and a
    document that validates against the schema it names (``quiet=False``
    for ``diff``, whose ``--quiet`` prints nothing)."""
    from .schemas import validate
    run = run_cli(*args, "--json", *(["--quiet"] if quiet else []))
    assert run.returncode == 0, run.stderr
    assert not run.stderr, run.stderr
    doc = json.loads(run.stdout)
    validate(doc)
    return doc


def run_in_guest(scenario: str, kernel: str, command: str) -> str:
    """Boot the ``scenario`` guest of ``kernel``, run the shell ``command``
    in it and return its stdout; ``{debug}`` in the command becomes the
    kernel's vmlinux and the debug info of the scenario's modules, as
    arguments (``VMLINUX DEBUG...``)."""
    from sample_cores.build_modules import debug_info
    from sample_cores.kernels import fetch
    from sample_cores.scenarios import SCENARIOS, live

    k = fetch(kernel)
    debug = " ".join([str(k.vmlinux), *debug_info(k, SCENARIOS[scenario].modules)])
    rc, out, err = live(scenario, kernel, command.replace("{debug}", debug))
    assert rc == 0, err
    return out


def run_probe_in_guest(kernel: str, probe: Path, scenario: str = "i40e-leak") -> dict:
    """Boot the ``scenario`` guest of ``kernel`` and run the Python script
    ``probe`` in it with the kernel's vmlinux and module debug info as
    arguments; return the JSON document it prints."""
    from sample_cores.kernels import fetch
    from sample_cores.scenarios import guest_python

    return json.loads(run_in_guest(scenario, kernel, f"{guest_python(fetch(kernel))} {probe} {{debug}}"))
