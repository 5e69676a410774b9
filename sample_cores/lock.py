"""Locks that serialize the builds of one core across processes.

A lock is ``flock(2)`` on a file beside the core.  The kernel drops it when
its holder's descriptor is closed, so a build that is killed leaves no stale
lock.  A lock file that nobody holds may be removed (``remove_unheld``): whoever
opened it before then finds, once it has the lock, that the path now names
another file or none, and locks again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` if nobody holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file ``fd`` is open on."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


@contextmanager
def exclusive(path: Path, waiting: Callable[[], None]) -> Iterator[bool]:
    """Hold the lock ``path`` (created if missing) for the ``with`` block.

    When another process holds it, ``waiting()`` is called once and the lock
    is waited for.  Yields whether it was waited for."""
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            if not waited:
                waiting()
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        if _names(fd, path):
            break
        os.close(fd)
    try:
        yield waited
    finally:
        os.close(fd)


@contextmanager
def _opened(path: Path) -> Iterator[int | None]:
    """``path`` open read-only for the ``with`` block; None where no such file is."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def held(path: Path) -> bool:
    """Whether a process holds the lock ``path`` (False where no such file is)."""
    with _opened(path) as fd:
        return fd is not None and not _try_lock(fd)


def remove_unheld(path: Path) -> bool:
    """Remove the lock file ``path`` unless a process holds it; whether it was removed."""
    with _opened(path) as fd:
        if fd is None or not _try_lock(fd) or not _names(fd, path):
            return False
        path.unlink()
        return True
