"""The metrics textfile is replaced whole or not at all (``report.metrics.write_textfile``)."""

from __future__ import annotations

import os

import pytest

from vmcore_tools.report import metrics


def test_a_write_replaces_the_file(tmp_path):
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    metrics.write_textfile(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["m.prom"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.prom"
    path.write_text("old\n")

    def broken(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        metrics.write_textfile(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["m.prom"]
