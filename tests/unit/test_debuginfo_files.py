"""Module debug files found by name, as the kernel names modules."""

from __future__ import annotations

from vmcore_tools.core.debuginfo import module_files, module_name_of_file


def test_module_names_follow_the_kernels_rules():
    assert module_name_of_file("/x/i2c-algo-bit.ko") == "i2c_algo_bit"
    assert module_name_of_file("virtio_net.ko.debug") == "virtio_net"
    assert module_name_of_file("vmlinux-6.1.0-56-amd64") is None
    assert module_name_of_file("notes.txt") is None


def test_directories_are_searched_and_files_taken_as_given(tmp_path):
    drivers = tmp_path / "kernel" / "drivers"
    (drivers / "net").mkdir(parents=True)
    (drivers / "net" / "virtio_net.ko").write_bytes(b"")
    (drivers / "i2c-algo-bit.ko").write_bytes(b"")
    (drivers / "README").write_text("")
    single = tmp_path / "fake_i40e.ko"
    single.write_bytes(b"")
    files = module_files([tmp_path / "kernel", single])
    assert files == {"virtio_net": [str(drivers / "net" / "virtio_net.ko")],
                     "i2c_algo_bit": [str(drivers / "i2c-algo-bit.ko")],
                     "fake_i40e": [str(single)]}
