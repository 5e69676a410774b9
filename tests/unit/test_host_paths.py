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


def test_the_targets_of_a_caches_linked_entries_are_bound(tmp_path, monkeypatch):
    """A cache in /tmp whose entries link to another cache in /tmp (the
    factory tests' own cache shares the kernels and packages of the shared
    one): the guest binds the targets, or its modules and kernel lead
    nowhere (a cold run with the cache in /tmp failed this way)."""
    shared, own = tmp_path / "shared", tmp_path / "own"
    (shared / "kernels").mkdir(parents=True)
    (own / "cores").mkdir(parents=True)
    (own / "kernels").symlink_to(shared / "kernels")
    monkeypatch.setenv("VMCORE_TOOLS_CACHE", str(own))
    from sample_cores.scenarios import guest_paths
    bound = host_paths(*guest_paths())
    assert str(shared / "kernels") in bound and str(own) in bound
