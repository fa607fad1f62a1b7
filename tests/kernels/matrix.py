"""The kernels kstat is tested on, and the tests that run on each.

Every kernel is a Debian kernel image: what fleets run (Debian 11's 5.10, the same long-term
branch Amazon Linux 2 and many appliances carry; Debian 12's 6.1; 6.12 from Debian 12's
security suite, the long-term branch that followed) and that the only kernel registry reachable
here, Debian's, still serves. 5.14, 5.15, 6.6 and 6.8 are not among them (no Debian suite carries
them any more). The native kernel, the machine's own, runs the same tests without a VM.

A meta-package names each kernel: its dependency, resolved at run time, is the current image
(versioned names leave the mirror when Debian moves on).
"""

from __future__ import annotations

from typing import Final

from attrs import frozen


@frozen
class MatrixKernel:
    """One kernel of the matrix: where Debian serves it, and why it is in the matrix."""

    name: str  # the branch, "5.10": what the resolved image's version must start with
    distribution: str  # its suites are DISTRIBUTION and DISTRIBUTION-security
    meta_package: str
    why: str


MATRIX: Final = (
    MatrixKernel(
        "5.10",
        "bullseye",
        "linux-image-amd64",
        "Debian 11, Amazon Linux 2: stats in bpf_prog_aux without recursion misses, no "
        "bpf_map_lookup_percpu_elem, no per-CPU variables in its BTF, BPF memory charged to "
        "RLIMIT_MEMLOCK, no verified_insns, optmem_max 20480",
    ),
    MatrixKernel(
        "6.1",
        "bookworm",
        "linux-image-amd64",
        "Debian 12: stats in bpf_prog with recursion misses, no tcx links, optmem_max 20480",
    ),
    MatrixKernel(
        "6.12",
        "bookworm",
        "linux-image-6.12-amd64",
        "the long-term branch after 6.1: tcx and netkit links, optmem_max 131072",
    ),
)

NATIVE: Final = "native"


@frozen
class KernelTest:
    """A test (a file, or one test in it) that runs on every kernel, and what in it differs
    between kernels: the reason it is worth a VM's minutes."""

    node: str
    differs: str


# Only what depends on the kernel: the rest of the suite (report arithmetic, sinks, signals,
# the CLI's parsing, files) runs the same on every kernel and is left to `make test`. Under
# emulation Python runs about twelve times slower than natively, so each VM gets these alone.
KERNEL_TESTS: Final = (
    KernelTest("tests/test_bpf.py", "how much of bpf_prog_info the kernel fills; loading under memlock"),
    KernelTest(
        "tests/test_iterator.py",
        "struct layouts from BTF, per-CPU offsets, iterator against syscalls, the fallback",
    ),
    KernelTest(
        "tests/test_kernel_features.py",
        "memlock, bpf_prog_info's counters, per-CPU offsets, BTF fallbacks, optmem_max and the demo",
    ),
    KernelTest(
        "tests/test_footprint.py::test_the_report_carries_each_programs_footprint_as_bpftool_sees_it",
        "verified_insns (5.16), memlock accounting (memcg from 5.11)",
    ),
    KernelTest(
        "tests/test_identity.py::test_the_full_btf_name_is_reported_and_the_kernels_kept",
        "program BTF and func_info",
    ),
    KernelTest(
        "tests/test_listing.py",
        "kstat list's iterator: bpf_prog's pages, len and jited_len, verified_insns (5.16) against syscalls",
    ),
    KernelTest("tests/test_runtime_stats.py", "BPF_ENABLE_STATS and the sysctl"),
    KernelTest("tests/test_real_loaders.py", "attachments: XDP links, tc by netlink, cgroup programs"),
    KernelTest("tests/test_cli.py::test_the_demo_counts_exactly_what_it_sends", "the demo's socket filters"),
)
