"""The sample-core factory, proven on real kernels: each core opens in drgn
with the right debug info and its planted ground truth is really there."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from drgn.helpers.linux.mm import compound_order, pfn_to_page, PageHead, PageTail
from drgn.helpers.linux.net import for_each_netdev, netdev_priv

from sample_cores.cache import cache_dir
from sample_cores.scenarios import HANG_CMDLINE, SCENARIOS, _prepare
from vmcore_tools.core.debuginfo import load_module_debug_info
from vmcore_tools.core.features import constant
from vmcore_tools.net.devices import driver_modules

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]


def test_manifest_has_ground_truth(leak_core):
    m = leak_core.manifest
    leaks = m["planted_leaks"]
    assert {x["order"] for x in leaks} == {0, 1}, "both ring orders leak"
    assert any(x["refcount"] == 1 for x in leaks), "never-used pages (refcount 1)"
    assert any(x["refcount"] > 60000 for x in leaks), "pages with a bias-like refcount"
    assert len({x["pfn"] for x in leaks}) == len(leaks)
    assert {d["kind"] for d in m["decoys"]} >= {"large_kmalloc", "page_frag", "netdev_frag", "exact_run"}
    assert [x["ring"] for x in leaks].count("-") == 1, "vmct_workload's split_leak"
    for key in ("MemTotal", "MemFree", "Slab", "Cached", "AnonPages", "Shmem", "PageTables",
                "KernelStack", "VmallocUsed"):
        assert key in m["meminfo_kb"]
    assert m["meminfo_kb"]["AnonPages"] >= 64 * 1024, "the workload's 64 MB of anon memory"
    assert m["meminfo_kb"]["Shmem"] >= 24 * 1024, "the workload's 24 MB in /dev/shm"
    assert m["vmstat"]["nr_free_pages"] > 0
    assert m["buddyinfo"] and m["slabinfo"]["dentry"]["active_objs"] >= 20000
    flags = m["kpageflags"]["flags"]
    assert flags["SLAB"] > 0 and flags["BUDDY"] > 0 and flags["ANON"] > 0 and flags["LRU"] > 0
    assert m["osrelease"] == m["kernel"]["abi"]


def test_drgn_opens_core_with_matching_debug_info(leak_core):
    prog = leak_core.program()
    release = prog["init_uts_ns"].name.release.string_().decode()
    assert release == leak_core.manifest["kernel"]["abi"] == leak_core.manifest["osrelease"]


def test_planted_pages_are_in_the_core_as_planted(leak_core):
    prog = leak_core.program()
    for leak in leak_core.manifest["planted_leaks"]:
        page = pfn_to_page(prog, leak["pfn"])
        assert page._refcount.counter.value_() == leak["refcount"], leak
        assert not PageTail(page), leak
        if leak["order"]:
            assert PageHead(page), leak
            assert compound_order(page).value_() == leak["order"], leak
        else:
            assert not PageHead(page), leak
        assert page.mapping.value_() == 0, leak


def test_decoys_are_in_the_core(leak_core):
    """Each decoy is in the core with the order the module recorded, and
    holds a reference, except large kmalloc where the kernel allocates it
    frozen (``PGTY_large_kmalloc`` kernels: 7.3's ``___kmalloc_large_node()``
    takes frozen pages, refcount 0)."""
    prog = leak_core.program()
    frozen = constant(prog, "PGTY_large_kmalloc") is not None
    for decoy in leak_core.manifest["decoys"]:
        page = pfn_to_page(prog, decoy["pfn"])
        assert compound_order(page).value_() == decoy["order"], decoy
        refcount = page._refcount.counter.value_()
        assert refcount >= (0 if frozen and decoy["kind"] == "large_kmalloc" else 1), decoy


def test_fake_i40e_rings_are_real_i40e_objects(leak_core):
    """The netdev route reaches real struct i40e_ring objects, typed by the
    i40e driver's own headers, holding pages in all their slots."""
    prog = leak_core.program()
    assert load_module_debug_info(prog, driver_modules(prog, "i40e")) == []
    found = []
    for dev in for_each_netdev(prog):
        parent = dev.dev.parent
        if not parent or not parent.driver:
            continue
        if parent.driver.name.string_() != b"i40e":
            continue
        np = netdev_priv(dev, "struct i40e_netdev_priv")
        vsi = np.vsi
        for q in range(vsi.num_queue_pairs.value_()):
            ring = vsi.rx_rings[q]
            held = sum(1 for i in range(ring.count.value_()) if ring.rx_bi[i].page)
            found.append((ring.count.value_(), ring.rx_buf_len.value_(), held))
    assert [(c, b) for c, b, _ in found] == [(256, 2048), (128, 3072)]
    for count, _, held in found:
        assert held >= count // 2
    assert "pagecnt_bias" in {m.name for m in prog.type("struct i40e_rx_buffer").members}


def test_kdump_compressed_core_from_real_capture_kernel(kdump_core):
    m = kdump_core.manifest
    assert m["core"]["format"] == "kdump-compressed -d 31"
    assert kdump_core.core.read_bytes()[:8] == b"KDUMP   "
    prog = kdump_core.program()
    assert prog["init_uts_ns"].name.release.string_().decode() == m["kernel"]["abi"]
    for leak in m["planted_leaks"]:
        page = pfn_to_page(prog, leak["pfn"])
        assert page._refcount.counter.value_() == leak["refcount"], leak


def test_a_clone_anywhere_boots_its_guest(tmp_path):
    """The factory run from a copy of the repo in a path with a space under
    /tmp (which the guest mounts its own tmpfs on), with the cache reached
    through a link there too: the guest runs the copy's code and reads the
    cache by the link's path."""
    clone = tmp_path / "a clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache"))
    link = tmp_path / "the cache"
    link.symlink_to(cache_dir())
    probe = ("import json, os, sample_cores, vmcore_tools; "
             "print(json.dumps({'code': [sample_cores.__file__, vmcore_tools.__file__], "
             "'cache': os.listdir(os.environ['VMCORE_TOOLS_CACHE'])}))")
    run = subprocess.run([sys.executable, "-m", "sample_cores", "live", "intel-family", "--kernel", "6.1", "--",
                          "env", f"VMCORE_TOOLS_CACHE={link}", sys.executable, "-c", probe],
                         cwd=clone, env={**os.environ, "VMCORE_TOOLS_CACHE": str(link)},
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(f.startswith(str(clone) + "/") for f in seen["code"]), seen
    assert "kernels" in seen["cache"], seen


#: the cheapest guest to build: a small built kernel, no workload (boot and
#: dump in about 12 s under TCG)
SMALL = ("cma", "6.1-page-owner")


@pytest.fixture
def own_cache(tmp_path):
    """A cache of its own, for builds the shared cache's cores must not see:
    the shared cache's kernels (``SMALL``'s prepared there first), packages,
    QEMU and toolchains through links, and no core.  Its cores (1 GB each)
    are deleted afterwards."""
    _prepare(SCENARIOS[SMALL[0]], SMALL[1], print)
    own = tmp_path / "cache"
    own.mkdir()
    for entry in cache_dir().iterdir():
        if entry.name not in ("cores", "live"):
            (own / entry.name).symlink_to(entry)
    yield own
    shutil.rmtree(own / "cores", ignore_errors=True)


def _build_small(cache, **env: str):
    """``python -m sample_cores build`` of ``SMALL`` in ``cache``, started
    from this checkout with ``env`` added; the process, its output piped."""
    return subprocess.Popen([sys.executable, "-m", "sample_cores", "build", SMALL[0], "--kernel", SMALL[1]],
                            cwd=REPO, text=True,
                            env={**os.environ, "VMCORE_TOOLS_CACHE": str(cache), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_builds_of_one_core_at_once_share_one_build(own_cache):
    """Two processes build the same core at once: one boots the guest, the
    other waits for it and returns the same intact core."""
    procs = [_build_small(own_cache), _build_small(own_cache)]
    outs = [p.communicate(timeout=900) for p in procs]
    errs = [err for _, err in outs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(errs)
    [path] = {out.strip() for out, _ in outs}
    core = Path(path)
    assert sum(f"booting {SMALL[0]} guest" in e for e in errs) == 1, errs
    assert sum(f"waiting for another build of {SMALL[0]}" in e for e in errs) == 1, errs
    m = json.loads((core / "manifest.json").read_text())
    assert (core / m["core"]["file"]).stat().st_size == m["core"]["bytes"] > 0
    assert m["boot_retries"] == [] and m["boot_seconds"] < m["boot_bound_seconds"]
    assert sorted(p.name for p in core.parent.iterdir()) == [core.name, core.name + ".lock"]


def test_a_hung_boot_is_retried_once_then_fails_naming_its_log(own_cache):
    """Both boots made to hang before init (``VMCT_HANG_BOOTS``) under a 20 s
    bound: the first is killed and booted again, the second ends the build
    with an error that names its kept log; both logs are there."""
    proc = _build_small(own_cache, VMCT_HANG_BOOTS="2", VMCT_BOOT_BOUND="20")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err
    assert "boot 1 failed (no VMCT-READY within 20s)" in err and "booting again" in err, err
    named = re.search(r"sample_cores: error: .*failed to boot 2 times.* kept in (\S+/failed-boot-2\.log)", err)
    assert named, err
    for kept in (Path(named[1]), Path(named[1]).with_name("failed-boot-1.log")):
        text = kept.read_text()
        assert HANG_CMDLINE in text and "Linux version" in text and "VMCT-BOOTED" not in text, kept


@pytest.mark.full
def test_a_boot_that_hung_once_is_recorded_beside_the_core(own_cache):
    """The first boot made to hang: the second builds the core, whose
    manifest records the retry and whose directory keeps the hung boot's log."""
    proc = _build_small(own_cache, VMCT_HANG_BOOTS="1", VMCT_BOOT_BOUND="60")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    core = Path(out.strip())
    m = json.loads((core / "manifest.json").read_text())
    [retry] = m["boot_retries"]
    assert retry["reason"] == "hung" and retry["marker"] == "VMCT-READY" and retry["waited_seconds"] >= 60
    assert (core / retry["log"]).read_text().count("VMCT-BOOTED") == 0
    assert "VMCT-READY" in (core / "console.log").read_text()
    assert m["boot_bound_seconds"] == 60 and m["boot_seconds"] < 60


@pytest.mark.full
def test_two_builds_that_need_one_kernel_unpack_it_once(tmp_path):
    """Two processes build two different cores of one kernel line at once
    from a cache that has its packages but not the kernel unpacked: one
    unpacks the kernel, the other waits for it (an unlocked second unpack
    removed the first one's tree under it), and both cores are built."""
    _prepare(SCENARIOS["released"], "6.1", print)        # the packages, in the shared cache
    own = tmp_path / "cache"
    own.mkdir()
    for entry in cache_dir().iterdir():
        if entry.name not in ("cores", "live", "kernels"):
            (own / entry.name).symlink_to(entry)
    procs = [subprocess.Popen([sys.executable, "-m", "sample_cores", "build", name, "--kernel", "6.1"], cwd=REPO,
                              text=True, env={**os.environ, "VMCORE_TOOLS_CACHE": str(own)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in ("released", "intel-family")]
    try:
        outs = [p.communicate(timeout=1200) for p in procs]
        errs = [err for _, err in outs]
        assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(errs)
        assert sum("unpacking image and modules" in e for e in errs) == 1, errs
        assert sum("waiting for another fetch of" in e for e in errs) == 1, errs
        for out, _ in outs:
            m = json.loads((Path(out.strip()) / "manifest.json").read_text())
            assert m["planted_leaks"]
    finally:
        shutil.rmtree(own, ignore_errors=True)
