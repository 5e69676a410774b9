"""The private apt configuration takes its mirrors from the machine's own sources."""

import pytest

from sample_cores.apt import AptError, machine_mirrors


def test_mirrors_from_deb822(tmp_path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n")
    m = machine_mirrors(tmp_path)
    assert m.debian == "http://mirror.example/debian"
    assert m.security == "http://mirror.example/debian-security"


def test_no_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(AptError, match="could not find"):
        machine_mirrors(tmp_path)
