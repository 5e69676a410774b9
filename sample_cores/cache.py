"""Where downloaded kernels and built cores live: outside the repo."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$VMCORE_TOOLS_CACHE`` or ``~/.cache/vmcore-tools``."""
    base = os.environ.get("VMCORE_TOOLS_CACHE")
    path = Path(base) if base else Path.home() / ".cache" / "vmcore-tools"
    path.mkdir(parents=True, exist_ok=True)
    return path
