"""Builds of one core are serialized by a lock file beside it (flock): a
second process waits for the first and then sees its result; a killed
holder releases the lock; prune and retire leave a build in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sample_cores import lock
from sample_cores.scenarios import IN_USE_SECONDS, prune, retire_older_builds

#: a process that takes the lock, says so, then writes its result after
#: ``hold`` seconds (or reads the result the holder before it wrote)
CONTENDER = """
import sys, time
from pathlib import Path
from sample_cores import lock
path, result, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
with lock.exclusive(path, lambda: print("waiting", flush=True)):
    print("locked", flush=True)
    if result.exists():
        print("found", result.read_text(), flush=True)
    else:
        time.sleep(hold)
        result.write_text(str(sys.argv[4]))
"""


def _contender(path: Path, result: Path, hold: float, tag: str) -> subprocess.Popen:
    """A process running ``CONTENDER`` on ``path``, tagging its result ``tag``,
    run from the repo so that it takes this checkout's code."""
    return subprocess.Popen([sys.executable, "-c", CONTENDER, str(path), str(result), str(hold), tag],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])


def test_a_second_process_waits_then_sees_the_first_ones_result(tmp_path):
    path, result = tmp_path / "key.lock", tmp_path / "result"
    first = _contender(path, result, 3, "first")
    assert first.stdout.readline() == "locked\n"
    t0 = time.time()
    second = _contender(path, result, 0, "second")
    assert second.stdout.readline() == "waiting\n"
    assert lock.held(path)
    out, _ = second.communicate(timeout=30)
    assert time.time() - t0 >= 2, "the second got the lock while the first held it"
    assert out == "locked\nfound first\n"
    assert first.wait(timeout=30) == 0 and second.returncode == 0
    assert not lock.held(path)


def test_a_killed_holder_releases_the_lock(tmp_path):
    path, result = tmp_path / "key.lock", tmp_path / "result"
    first = _contender(path, result, 600, "first")
    assert first.stdout.readline() == "locked\n"
    second = _contender(path, result, 0, "second")
    assert second.stdout.readline() == "waiting\n"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    out, _ = second.communicate(timeout=30)
    assert out == "locked\n" and result.read_text() == "second"


def test_a_lock_file_removed_while_waited_for_is_locked_again(tmp_path):
    """Whoever opened a lock file that is then removed (``remove_unheld``,
    between its holders) locks the file the path names next, so two
    processes never hold the same path's lock at once."""
    path = tmp_path / "key.lock"
    with lock.exclusive(path, lambda: None):
        assert not lock.remove_unheld(path), "held: not removed"
    assert lock.remove_unheld(path) and not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT)          # a waiter's old file, now removed
    os.unlink(path)
    try:
        with lock.exclusive(path, lambda: None):
            assert path.exists() and os.stat(path).st_ino != os.fstat(fd).st_ino
            assert lock.held(path)
    finally:
        os.close(fd)


def _old(*paths: Path) -> None:
    """Make ``paths`` look unused for longer than ``IN_USE_SECONDS``."""
    long_ago = time.time() - IN_USE_SECONDS - 60
    for p in paths:
        os.utime(p, (long_ago, long_ago))


def test_retire_leaves_a_build_whose_lock_is_held(tmp_path):
    name_dir = tmp_path / "cores" / "6.1" / "seed"
    new, old, rebuilding = (name_dir / n for n in ("aaa", "bbb", "ccc"))
    for d in (new, old, rebuilding):
        d.mkdir(parents=True)
    (name_dir / "bbb.lock").touch()
    _old(old, rebuilding, name_dir / "bbb.lock")
    removed = []
    with lock.exclusive(name_dir / "ccc.lock", lambda: None):
        retire_older_builds(new, removed.append)
    assert sorted(p.name for p in name_dir.iterdir()) == ["aaa", "bbb.lock", "ccc", "ccc.lock"]
    assert removed == [f"removed an older build: {old}"]


def test_prune_leaves_a_build_in_progress(tmp_path, monkeypatch):
    """A scenario no longer known: prune deletes its builds, its dead run and
    its unheld lock files, not a run whose lock is held."""
    monkeypatch.setenv("VMCORE_TOOLS_CACHE", str(tmp_path))
    name_dir = tmp_path / "cores" / "6.1" / "gone"
    for d in ("aaa", "aaa.run", "bbb.run"):
        (name_dir / d).mkdir(parents=True)
    (name_dir / "aaa.lock").touch()
    with lock.exclusive(name_dir / "bbb.lock", lambda: None):
        removed = prune(log=lambda m: None)
    assert sorted(p.name for p in name_dir.iterdir()) == ["bbb.lock", "bbb.run"]
    assert sorted(p.name for p in removed) == ["aaa", "aaa.lock", "aaa.run"]
