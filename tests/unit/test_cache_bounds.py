"""The core cache keeps one build per scenario and kernel line, plus the
older ones something used recently."""

import os
import time

from sample_cores.scenarios import IN_USE_SECONDS, retire_older_builds


def test_a_new_build_retires_older_unused_builds(tmp_path):
    name_dir = tmp_path / "cores" / "6.1" / "seed"
    new, old, recent, running = (name_dir / n for n in ("new", "old", "recent", "other.run"))
    for d in (new, old, recent, running):
        d.mkdir(parents=True)
        (d / "vmcore").write_bytes(b"x")
    long_ago = time.time() - IN_USE_SECONDS - 60
    for d in (old, running):
        os.utime(d, (long_ago, long_ago))
    removed = []
    retire_older_builds(new, removed.append)
    assert sorted(p.name for p in name_dir.iterdir()) == ["new", "other.run", "recent"]
    assert removed == [f"removed an older build: {old}"]
