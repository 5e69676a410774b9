"""A private apt configuration for other Debian suites.

The sample cores need kernels from suites this machine does not use
(bullseye for 5.10, bookworm-backports for 6.12).  We never touch the
machine's own apt state and never write a mirror host name into the repo:
the mirror URIs are read from the machine's own ``/etc/apt/sources.list.d``
deb822 files, and a private apt tree (sources, lists, cache) is built under
the cache directory.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir

SOURCES_DIR = Path("/etc/apt/sources.list.d")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class AptError(RuntimeError):
    pass


@dataclass(frozen=True)
class Mirrors:
    debian: str
    security: str


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def machine_mirrors(sources_dir: Path = SOURCES_DIR) -> Mirrors:
    """The Debian and Debian-security mirror URIs this machine already uses."""
    debian = security = None
    for path in sorted(sources_dir.glob("*.sources")):
        for st in _deb822_stanzas(path.read_text()):
            suites = st.get("Suites", "").split()
            uris = st.get("URIs", "").split()
            if not uris or "deb" not in st.get("Types", "deb").split():
                continue
            if any(s.endswith("-security") for s in suites):
                security = security or uris[0]
            elif suites:
                debian = debian or uris[0]
    if not debian or not security:
        raise AptError(
            f"could not find a Debian and a Debian-security mirror in {sources_dir}/*.sources"
        )
    return Mirrors(debian.rstrip("/"), security.rstrip("/"))


class PrivateApt:
    """apt-get / apt-cache bound to a private sources list for ``suites``.

    ``suites`` are (which-mirror, suite) pairs, e.g. ``("debian", "bullseye")``
    or ``("security", "bullseye-security")``.
    """

    def __init__(self, name: str, suites: list[tuple[str, str]], arch: str | None = None):
        self.root = cache_dir() / "apt" / (f"{name}-{arch}" if arch else name)
        self.suites = suites
        #: the Debian architecture whose packages it lists (``arm64``); this machine's where None
        self.arch = arch
        mirrors = machine_mirrors()
        lines = [
            f"deb [signed-by={KEYRING}] {getattr(mirrors, which)} {suite} main"
            for which, suite in suites
        ]
        (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        self.sources = self.root / "etc" / "sources.list"
        text = "\n".join(lines) + "\n"
        if not self.sources.exists() or self.sources.read_text() != text:
            self.sources.write_text(text)
            (self.root / "updated").unlink(missing_ok=True)

    def _opts(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root}",
            "-o", f"Dir::Cache::archives={self.root / 'archives'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "APT::Get::List-Cleanup=0",
            "-o", "Debug::NoLocking=1",
            "-o", "Acquire::Languages=none",
        ] + (["-o", f"APT::Architecture={self.arch}", "-o", f"APT::Architectures={self.arch}"]
             if self.arch else [])

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        cmd = [tool, *self._opts(), *args]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AptError(f"{' '.join([tool, *args])} failed: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def update(self, force: bool = False) -> None:
        stamp = self.root / "updated"
        if stamp.exists() and not force:
            return
        self.run("apt-get", "-q", "update")
        stamp.touch()

    def candidate(self, package: str) -> str | None:
        """Newest version of ``package`` across the private suites, or None."""
        out = self.run("apt-cache", "policy", package)
        m = re.search(r"Candidate:\s*(\S+)", out)
        if not m or m.group(1) == "(none)":
            return None
        return m.group(1)

    def search_names(self, pattern: str) -> list[str]:
        out = self.run("apt-cache", "search", "--names-only", pattern)
        return [line.split(" - ", 1)[0] for line in out.splitlines() if line]

    def depends(self, package: str) -> list[str]:
        out = self.run("apt-cache", "depends", package)
        return [
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.strip().startswith("Depends:")
        ]

    def download_closure(self, packages: list[str], dest: Path) -> list[Path]:
        """Fetch ``packages`` and everything they depend on (as on an empty
        system, so the suite's own libc comes too) into ``dest``; return the
        ``.deb`` files there."""
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "partial").mkdir(exist_ok=True)
        self.run("apt-get", "-q", "-y", "--download-only", "-o", "APT::Install-Recommends=0",
                 "-o", f"Dir::Cache::archives={dest}", "install", *packages)
        return sorted(dest.glob("*.deb"))

    def download(self, package: str, version: str, dest: Path) -> Path:
        """Fetch ``package=version`` into ``dest`` (once) and return the .deb path."""
        dest.mkdir(parents=True, exist_ok=True)
        existing = list(dest.glob(f"{package}_*.deb"))
        if existing:
            return existing[0]
        self.run("apt-get", "-q", "download", f"{package}={version}", cwd=dest)
        found = list(dest.glob(f"{package}_*.deb"))
        if not found:
            raise AptError(f"apt-get download {package}={version} produced no .deb")
        return found[0]
