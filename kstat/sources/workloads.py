"""Which container, pod and service a process belongs to, from what the node already has: its
cgroup (`/proc/PID/cgroup`) and the kubelet's log directories. No API server is asked.

cgroup paths name containers the way each runtime and cgroup driver does:

- systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
  cri-containerd-<id>.scope` (`crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`);
- cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, `/docker/<id>`, `/libpod_parent/libpod-<id>`;
- outside containers, the systemd unit: `/system.slice/nginx.service`,
  `/user.slice/user-1000.slice/user@1000.service/...`.

Pod names and namespaces come from the kubelet's log tree under the host's root:
`/var/log/containers/<pod>_<namespace>_<container>-<id>.log` names a container's pod, namespace
and container name; `/var/log/pods/<namespace>_<pod>_<uid>/` a pod's. Where the node has
nothing, the fields stay empty.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Final

from attrs import evolve

from kstat.core.model import Workload
from kstat.text import from_host

# A container id: 64 hex digits (containerd, CRI-O, Docker and Podman all use them).
_CONTAINER_ID: Final = r"[0-9a-f]{64}"
# systemd-driver scopes: (pattern, runtime).
_SCOPES: Final = (
    (re.compile(rf"^cri-containerd-({_CONTAINER_ID})\.scope$"), "containerd"),
    (re.compile(rf"^crio-({_CONTAINER_ID})\.scope$"), "cri-o"),
    (re.compile(rf"^docker-({_CONTAINER_ID})\.scope$"), "docker"),
    (re.compile(rf"^libpod-({_CONTAINER_ID})\.scope$"), "podman"),
)
# cgroupfs-driver leaves: the parent says whose it is.
_BARE_ID: Final = re.compile(rf"^(?:crio-|docker-|libpod-)?({_CONTAINER_ID})$")
_RUNTIME_BY_PREFIX: Final = {"crio-": "cri-o", "docker-": "docker", "libpod-": "podman"}
_RUNTIME_BY_PARENT: Final = {"docker": "docker", "libpod_parent": "podman"}
_POD_SLICE: Final = re.compile(r"^kubepods(?:-(besteffort|burstable))?-pod([0-9a-f_]{36})\.slice$")
_POD_DIRECTORY: Final = re.compile(r"^pod([0-9a-f-]{36})$")
_QOS: Final = {"besteffort": "BestEffort", "burstable": "Burstable", None: "Guaranteed"}
# DOTALL and \Z: a name on a crafted host may hold a newline, and is still a name.
_CONTAINER_LOG: Final = re.compile(
    rf"^(?P<pod>[^_]+)_(?P<namespace>[^_]+)_(?P<container>.+)-(?P<id>{_CONTAINER_ID})\.log\Z", re.DOTALL
)
_POD_LOG_DIRECTORY: Final = re.compile(r"^(?P<namespace>[^_]+)_(?P<pod>[^_]+)_(?P<uid>[0-9a-f-]{36})\Z")


def workload_of_cgroup_path(path: str) -> Workload:
    """What one cgroup path says: container and runtime, pod and QoS class, or systemd unit."""
    parts = [part for part in path.split("/") if part]
    found = Workload()
    for index, part in enumerate(parts):
        pod_slice = _POD_SLICE.match(part)
        if pod_slice:
            found = evolve(
                found, pod_uid=pod_slice.group(2).replace("_", "-"), qos_class=_QOS[pod_slice.group(1)]
            )
            continue
        pod_directory = _POD_DIRECTORY.match(part)
        if pod_directory and index > 0 and parts[0] == "kubepods":
            qos = parts[1] if index == 2 and parts[1] in ("besteffort", "burstable") else None
            found = evolve(found, pod_uid=pod_directory.group(1), qos_class=_QOS[qos])
            continue
        for pattern, runtime in _SCOPES:
            scope = pattern.match(part)
            if scope:
                found = evolve(found, container_id=scope.group(1), container_runtime=runtime)
                break
        else:
            bare = _BARE_ID.match(part)
            if bare:
                prefix = next((key for key in _RUNTIME_BY_PREFIX if part.startswith(key)), "")
                parent = parts[index - 1] if index else ""
                by_name = _RUNTIME_BY_PREFIX.get(prefix) or _RUNTIME_BY_PARENT.get(parent)
                found = evolve(found, container_id=bare.group(1), container_runtime=by_name)
    if found.container_id is None and found.pod_uid is None:
        services = [part for part in parts if part.endswith(".service")]
        scopes = [part for part in parts if part.endswith(".scope")]
        unit = services[-1] if services else scopes[-1] if scopes else None
        found = evolve(found, unit=unit)
    return found


def workload_of_cgroup_file(text: str) -> Workload:
    """What a `/proc/PID/cgroup` says. The unified (v2) hierarchy is read first, then systemd's
    named one, then the controllers': a hybrid host keeps the same path in several."""
    paths: list[tuple[int, str]] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if path in ("", "/"):
            continue
        rank = 0 if hierarchy == "0" else 1 if controllers == "name=systemd" else 2
        paths.append((rank, path))
    best = Workload()
    for _, path in sorted(paths, key=lambda entry: entry[0]):
        found = workload_of_cgroup_path(path)
        if found.container_id or found.pod_uid:
            return found
        if found.unit and best.unit is None:
            best = found
    return best


class KubeletLogs:
    """Pod names, namespaces and container names from the kubelet's log tree (read once per
    lookup, only when an owner in a container or pod is met)."""

    def __init__(self, host_root: Path) -> None:
        self.containers_directory = host_root / "var" / "log" / "containers"
        self.pods_directory = host_root / "var" / "log" / "pods"

    def complete(self, workload: Workload) -> Workload:
        if workload.container_id is not None:
            for name in _listing(self.containers_directory):
                match = _CONTAINER_LOG.match(name)
                if match and match["id"] == workload.container_id:
                    return evolve(
                        workload,
                        pod=match["pod"],
                        namespace=match["namespace"],
                        container_name=match["container"],
                    )
        if workload.pod_uid is not None:
            for name in _listing(self.pods_directory):
                match = _POD_LOG_DIRECTORY.match(name)
                if match and match["uid"] == workload.pod_uid:
                    return evolve(workload, pod=match["pod"], namespace=match["namespace"])
        return workload


def _listing(directory: Path) -> list[str]:
    """The names in a directory of the host's, as text (a name may hold any bytes)."""
    try:
        return [from_host(name) for name in os.listdir(os.fsencode(directory))]
    except OSError:
        return []


def node_name() -> str:
    """The node's name: NODE_NAME (set from the downward API in a pod), else the hostname."""
    return from_host(os.environ.get("NODE_NAME") or socket.gethostname())
