"""A guest that does not reach its first mark within a few times its normal
boot is killed and booted once more, its logs kept beside the core; the
bound comes from the boot times recorded for its kind and memory size."""

from __future__ import annotations

import pytest

from sample_cores.arch import ARCHES
from sample_cores import scenarios
from sample_cores.scenarios import (BOOT_FLOOR, HANG_CMDLINE, SCENARIOS, BootFailed, boot_bound, _boot,
                                    _spec)
from sample_cores.vm import GuestHung

#: (scenario, line, seconds) measured under TCG, quiet or loaded: to the
#: guest's mark (session 28's cold run), or its whole build (the built
#: kernel's, and the seeds' in benchmarks/RESULTS.md)
RECORDED = (("i40e-leak", "6.12", 78), ("no-leak", "6.1", 134), ("iommu", "6.1", 84), ("hosts", "6.1", 86),
            ("i40e-leak-kdump", "6.1", 69), ("intel-family", "6.1", 22), ("cma", "6.1-page-owner", 16),
            ("page-owner", "6.1-page-owner", 18), ("seed", "6.1", 121), ("seed", "7.3", 219),
            ("seed-4g", "6.1", 402), ("seed-16g", "6.1", 806))


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    monkeypatch.delenv("VMCT_BOOT_BOUND", raising=False)
    monkeypatch.delenv("VMCT_HANG_BOOTS", raising=False)


def test_each_recorded_boot_is_well_inside_its_bound():
    for name, line, seconds in RECORDED:
        assert boot_bound(SCENARIOS[name], line) >= 2 * seconds, (name, line)


def test_the_ci_guests_are_bounded_far_below_the_old_900_s():
    for name in ("i40e-leak", "no-leak", "i40e-leak-kdump", "iommu", "pti", "released", "intel-family"):
        assert boot_bound(SCENARIOS[name], "6.1") <= 360, name
    assert boot_bound(SCENARIOS["cma"], "6.1-page-owner") == BOOT_FLOOR
    assert boot_bound(SCENARIOS["scale-16g"], "6.1") > boot_bound(SCENARIOS["scale-1g"], "6.1")


def test_the_environment_sets_the_bound(monkeypatch):
    monkeypatch.setenv("VMCT_BOOT_BOUND", "20")
    assert boot_bound(SCENARIOS["seed-16g"], "6.1") == 20


class FakeGuest:
    """Stands in for vm.Guest: a boot whose command line has ``HANG_CMDLINE``
    never shows a mark; each boot writes its console and QEMU log."""

    boots = 0

    def __init__(self, spec):
        self.spec = spec

    def start(self) -> None:
        FakeGuest.boots += 1
        self.spec.console.write_text(f"boot {FakeGuest.boots}\n")
        self.spec.qemu_log.write_text(f"qemu {FakeGuest.boots}\n")

    def wait_for(self, *markers: str, timeout: float) -> str:
        if HANG_CMDLINE in self.spec.cmdline:
            raise GuestHung(markers, timeout, self.spec.console)
        return markers[0]

    def kill(self) -> None:
        pass


def _run_boot(tmp_path, monkeypatch, hangs: int):
    """``_boot`` of the cma guest with the first ``hangs`` boots made to hang;
    its result and what it logged."""
    monkeypatch.setattr(scenarios, "Guest", FakeGuest)
    monkeypatch.setattr(scenarios, "_nics", lambda arch="amd64": ("virtio-net-pci",))
    monkeypatch.setenv("VMCT_HANG_BOOTS", str(hangs))
    FakeGuest.boots = 0
    k = type("K", (), {"vmlinuz": tmp_path / "vmlinuz", "arch": ARCHES["amd64"]})
    spec = _spec(SCENARIOS["cma"], k, tmp_path / "initrd", tmp_path / "run", "")
    spec.out_dir.mkdir(parents=True)
    said = []
    return spec, said, lambda: _boot(spec, "VMCT-READY", 7, lambda guest: "core", "6.1", said.append)


def test_a_hung_boot_is_retried_and_recorded(tmp_path, monkeypatch):
    spec, said, boot = _run_boot(tmp_path, monkeypatch, hangs=1)
    result, record = boot()
    assert result == "core" and FakeGuest.boots == 2
    [retry] = record["boot_retries"]
    assert retry["attempt"] == 1 and retry["reason"] == "hung" and retry["marker"] == "VMCT-READY"
    assert retry["log"] == "failed-boot-1.log" and record["boot_bound_seconds"] == 7
    kept = (spec.out_dir / "failed-boot-1.log").read_text()
    assert HANG_CMDLINE in kept and "boot 1\n" in kept and "qemu 1\n" in kept
    assert said == [f"[6.1] boot 1 failed (no VMCT-READY within 7s); its logs are kept in "
                    f"{spec.out_dir / 'failed-boot-1.log'}; booting again"]


def test_a_second_hang_fails_naming_the_kept_log(tmp_path, monkeypatch):
    spec, said, boot = _run_boot(tmp_path, monkeypatch, hangs=2)
    with pytest.raises(BootFailed, match="failed-boot-2.log"):
        boot()
    assert FakeGuest.boots == 2 and len(said) == 1
    assert "boot 2\n" in (spec.out_dir / "failed-boot-2.log").read_text()
    assert "boot 1\n" in (spec.out_dir / "failed-boot-1.log").read_text()
