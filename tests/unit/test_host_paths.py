"""What a guest must bind back from the host, and which links it must make
again: paths under the directories it hides (/tmp, /run, /mnt, /media)."""

from pathlib import Path

from sample_cores.scenarios import host_links, host_paths


def test_a_cache_behind_a_link_is_bound_by_its_target_and_linked(tmp_path):
    """A clone in /tmp with the cache reached through a link there (to a
    cache in /tmp too): the targets are bound, the link is made again --
    binding the link itself would follow it before its target is there."""
    assert str(tmp_path).startswith("/tmp/")
    clone, cache = tmp_path / "a clone", tmp_path / "real cache"
    clone.mkdir()
    cache.mkdir()
    link = tmp_path / "the cache"
    link.symlink_to(cache)
    assert host_paths(clone, link) == sorted([str(clone), str(cache)])
    assert host_links(clone, link) == [(str(link), str(cache))]


def test_visible_paths_need_nothing():
    root = Path("/usr")
    assert host_paths(root) == [] and host_links(root) == []


def test_a_path_inside_a_bound_one_is_not_bound_again(tmp_path):
    inner = tmp_path / "repo" / "src"
    inner.mkdir(parents=True)
    assert host_paths(tmp_path / "repo", inner) == [str(tmp_path / "repo")]
