"""The kernel matrix's runner (tests/kernels) where it needs no VM: the support table's rows,
pytest's counts, the initramfs's modules and format."""

from __future__ import annotations

from pathlib import Path

from tests.kernels import table
from tests.kernels.__main__ import PytestCounts, read_junit
from tests.kernels.matrix import KERNEL_TESTS, MATRIX
from tests.kernels.vm import _Cpio, boot_modules

FACTS = {
    "release": "5.10.0-46-amd64",
    "snapshot_method": "iterator",
    "per_cpu_offsets": "bpf_map_lookup_elem on each CPU",
    "recursion_misses": False,
    "verified_instructions": False,
    "attachment_links": ["cgroup", "netns", "xdp"],
    "attachment_netlink": ["tc", "xdp"],
    "btf_names": True,
    "memlock_charged": True,
    "optmem_max": 20480,
}


def test_rows_of_kernels_run_replace_theirs_and_the_others_stay(tmp_path: Path) -> None:
    document = tmp_path / "kernels.md"
    document.write_text(f"# Kernels\n\nProse above.\n\n{table.BEGIN}\n{table.END}\n\nProse below.\n")
    counts = PytestCounts(31, 0, 3, ())
    table.update(document, {"6.1": table.row("6.1", {**FACTS, "release": "6.1.0-57"}, counts)}, ())
    table.update(document, {"native 6.18": table.row("native 6.18", FACTS, counts)}, ())
    table.update(document, {"5.10": table.row("5.10", FACTS, counts)}, ())
    # A newer native kernel replaces the native row, whatever its version.
    table.update(document, {"native 6.19": table.row("native 6.19", FACTS, PytestCounts(1, 2, 3, ()))}, ())
    text = document.read_text()
    assert text.startswith("# Kernels\n\nProse above.\n") and text.endswith("\nProse below.\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Release" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 5.10", "| 6.1", "| native 6.19"]
    assert rows[0].endswith(
        "| iterator (per-CPU offsets by bpf_map_lookup_elem on each CPU) | no | no | cgroup, netns, xdp "
        "| tc, xdp | yes | yes | 20480 | 31, 0, 3 |"
    )
    assert rows[2].endswith("| 1, 2, 3 |")


def test_a_refused_iterator_says_why_in_its_cell() -> None:
    refused = {**FACTS, "snapshot_method": "syscalls", "iterator_refused": "this kernel lacks x | y"}
    assert "| syscalls: this kernel lacks x \\| y |" in table.row("5.4", refused, PytestCounts(1, 0, 0, ()))


def test_pytest_counts_come_from_its_junit_file(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<?xml version="1.0"?><testsuites><testsuite tests="5" failures="1" errors="1" skipped="1">'
        '<testcase name="a"/><testcase name="b"><skipped message="this kernel lacks x (since Linux 5.12)"/>'
        "</testcase></testsuite></testsuites>"
    )
    assert read_junit(junit) == PytestCounts(2, 2, 1, ("b: this kernel lacks x (since Linux 5.12)",))
    assert read_junit(tmp_path / "none.xml") is None


def test_boot_modules_load_dependencies_first_and_skip_built_in_ones(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/lib/crc16.ko.xz\n"
        "kernel/fs/jbd2/jbd2.ko.xz:\n"
        "kernel/lib/crc16.ko.xz:\n"
        "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz"
        " kernel/drivers/virtio/virtio_ring.ko.xz\n"
        "kernel/net/9p/9pnet.ko.xz:\n"
    )
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio_ring.ko\n")
    loaded = [
        path.relative_to(tmp_path).as_posix()
        for path in boot_modules(tmp_path, ("9pnet_virtio", "ext4", "nope"))
    ]
    assert loaded == [
        "kernel/net/9p/9pnet.ko.xz",
        "kernel/net/9p/9pnet_virtio.ko.xz",
        "kernel/fs/jbd2/jbd2.ko.xz",
        "kernel/lib/crc16.ko.xz",
        "kernel/fs/ext4/ext4.ko.xz",
    ]


def test_the_initramfs_is_newc_cpio() -> None:
    archive = _Cpio()
    archive.directory("bin")
    archive.file("init", b"#!/bin/sh\n", 0o755)
    data = archive.bytes()
    assert data.startswith(b"070701") and len(data) % 4 == 0
    header = data[:110]
    assert int(header[14:22], 16) == 0o040755  # the mode of the first entry, a directory
    assert b"init\0" in data and b"TRAILER!!!\0" in data


def test_the_matrix_is_declared_once() -> None:
    assert [kernel.name for kernel in MATRIX] == ["5.10", "6.1", "6.12"]
    assert all(Path(test.node.split("::")[0]).exists() for test in KERNEL_TESTS)
