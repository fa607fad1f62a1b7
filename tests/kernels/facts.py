"""What kstat reads on the running kernel, found by kstat's own code: one row of the support
table (docs/kernels.md)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from kstat.abi import bpf
from kstat.abi.btf import KernelLayout
from kstat.errors import KstatError
from kstat.sources.iterator import VMLINUX_BTF, IteratorReader
from kstat.testing.loader import SocketFilter

# The bpf_link types kstat places programs by, and the kernel struct that says a kernel has them.
_LINK_STRUCTS = (
    ("cgroup", "bpf_cgroup_link"),
    ("netns", "bpf_netns_link"),
    ("xdp", "bpf_xdp_link"),
    ("tcx", "tcx_link"),
    ("netkit", "netkit_link"),
)


def kernel_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"release": os.uname().release}
    facts["memlock_charged"] = bpf.memlock_charged()
    try:
        reader = IteratorReader()
    except (OSError, KstatError) as error:
        facts["snapshot_method"] = "syscalls"
        facts["iterator_refused"] = str(error).strip().splitlines()[0]
    else:
        facts["snapshot_method"] = "iterator"
        facts["per_cpu_offsets"] = reader.per_cpu_offsets_by
        facts["iterator_recursion_misses"] = reader.counts_recursion_misses
        facts["iterator_reads"] = reader.reads_by
        reader.close()
    with SocketFilter("kstat_facts", function_name="kstat_facts_full_name") as program:
        filled = bpf.filled_prog_info_fields(program.fd)
        facts["recursion_misses"] = "recursion_misses" in filled
        facts["verified_instructions"] = "verified_insns" in filled
        facts["btf_names"] = program.stats().name == "kstat_facts_full_name"
    links: list[str] = []
    with contextlib.suppress(OSError, KstatError):
        layout = KernelLayout(VMLINUX_BTF.read_bytes())
        links = [link for link, struct_name in _LINK_STRUCTS if layout.has_struct(struct_name)]
    facts["attachment_links"] = links
    # tc filters and XDP attached the legacy way are known to netlink alone, on every kernel.
    facts["attachment_netlink"] = ["tc", "xdp"]
    optmem = Path("/proc/sys/net/core/optmem_max")
    facts["optmem_max"] = int(optmem.read_text()) if optmem.exists() else None
    return facts
