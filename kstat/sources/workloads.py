"""Which container, pod and service a process belongs to, as kstat's `Workload` values: what
`kstat.sources.workload_fields` finds (its cgroup, the kubelet's log tree), and the node's name.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from kstat.core.model import NO_WORKLOAD, Workload
from kstat.sources.workload_fields import (
    WORKLOAD_FIELDS,
    completed_by_kubelet_logs,
    fields_of_cgroup_file,
    fields_of_cgroup_path,
)
from kstat.text import from_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kstat.sources.workload_fields import WorkloadFields


def workload_of(fields: WorkloadFields) -> Workload:
    """The fields found, as a value (one shared value where none is known)."""
    return Workload(**fields) if fields else NO_WORKLOAD


def fields_of(workload: Workload) -> WorkloadFields:
    """A workload's known fields, by name."""
    return {name: value for name in WORKLOAD_FIELDS if (value := getattr(workload, name)) is not None}


def workload_of_cgroup_path(path: str) -> Workload:
    """What one cgroup path says: container and runtime, pod and QoS class, or systemd unit."""
    return workload_of(fields_of_cgroup_path(path))


def workload_of_cgroup_file(text: str) -> Workload:
    """What a `/proc/PID/cgroup` says. The unified (v2) hierarchy is read first, then systemd's
    named one, then the controllers': a hybrid host keeps the same path in several."""
    return workload_of(fields_of_cgroup_file(text))


class KubeletLogs:
    """Pod names, namespaces and container names from the kubelet's log tree (read once per
    lookup, only when an owner in a container or pod is met)."""

    def __init__(self, host_root: Path) -> None:
        self.host_root = host_root

    def complete(self, workload: Workload) -> Workload:
        return workload_of(completed_by_kubelet_logs(fields_of(workload), os.fspath(self.host_root)))


def node_name() -> str:
    """The node's name: NODE_NAME (set from the downward API in a pod), else the hostname."""
    return from_host(os.environ.get("NODE_NAME") or socket.gethostname())
