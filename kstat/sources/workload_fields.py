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

What is found is a dict of the fields known (of WORKLOAD_FIELDS, in its order, each a string):
`kstat list` writes them as they are, with nothing imported but the standard library's `re` (no
attrs, typing or pathlib at run time), and `kstat.sources.workloads` makes kstat's `Workload`
of them.
"""

from __future__ import annotations

import functools
import os
import re

from kstat.text import from_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

    # The fields known, by name (one of WORKLOAD_FIELDS); an unknown one is absent, never None.
    WorkloadFields = dict[str, str]

# Every field, in the order kstat writes them (`kstat.core.model.Workload`'s, which a test
# holds this to).
WORKLOAD_FIELDS: Final = (
    "container_id",
    # containerd, cri-o, docker or podman, from how the cgroup is named.
    "container_runtime",
    "container_name",
    "pod_uid",
    "pod",
    "namespace",
    # Guaranteed, Burstable or BestEffort, from the kubepods cgroup.
    "qos_class",
    # nginx.service, user@1000.service: for processes outside containers.
    "unit",
)

# A container id: 64 hex digits (containerd, CRI-O, Docker and Podman all use them).
_CONTAINER_ID: Final = r"[0-9a-f]{64}"
_CONTAINER_ID_LENGTH: Final = 64
# systemd-driver scopes: (prefix, pattern, runtime).
_SCOPES: Final = (
    ("cri-containerd-", rf"^cri-containerd-({_CONTAINER_ID})\.scope$", "containerd"),
    ("crio-", rf"^crio-({_CONTAINER_ID})\.scope$", "cri-o"),
    ("docker-", rf"^docker-({_CONTAINER_ID})\.scope$", "docker"),
    ("libpod-", rf"^libpod-({_CONTAINER_ID})\.scope$", "podman"),
)
_SCOPE_PREFIXES: Final = tuple(prefix for prefix, _, _ in _SCOPES)
# cgroupfs-driver leaves: the parent says whose it is.
_BARE_ID: Final = rf"^(?:crio-|docker-|libpod-)?({_CONTAINER_ID})$"
_RUNTIME_BY_PREFIX: Final = {"crio-": "cri-o", "docker-": "docker", "libpod-": "podman"}
_RUNTIME_BY_PARENT: Final = {"docker": "docker", "libpod_parent": "podman"}
_POD_SLICE: Final = r"^kubepods(?:-(besteffort|burstable))?-pod([0-9a-f_]{36})\.slice$"
_POD_DIRECTORY: Final = r"^pod([0-9a-f-]{36})$"
_QOS: Final = {"besteffort": "BestEffort", "burstable": "Burstable", None: "Guaranteed"}
# DOTALL and \Z: a name on a crafted host may hold a newline, and is still a name.
_CONTAINER_LOG: Final = (
    rf"^(?P<pod>[^_]+)_(?P<namespace>[^_]+)_(?P<container>.+)-(?P<id>{_CONTAINER_ID})\.log\Z"
)
_POD_LOG_DIRECTORY: Final = r"^(?P<namespace>[^_]+)_(?P<pod>[^_]+)_(?P<uid>[0-9a-f-]{36})\Z"


@functools.cache
def _pattern(expression: str, flags: int = 0) -> re.Pattern[str]:
    """A pattern compiled at its first use: a host without containers compiles none but the
    unit's (each costs a start about half a millisecond)."""
    return re.compile(expression, flags)


def _known(fields: Mapping[str, str | None]) -> WorkloadFields:
    """The fields found, in WORKLOAD_FIELDS order (the order written), none of them None."""
    return {name: value for name in WORKLOAD_FIELDS if (value := fields.get(name)) is not None}


def fields_of_cgroup_path(path: str) -> WorkloadFields:
    """What one cgroup path says: container and runtime, pod and QoS class, or systemd unit.
    Each pattern is tried only on a part that could match it (its fixed start, its length)."""
    parts = [part for part in path.split("/") if part]
    found: dict[str, str | None] = {}
    for index, part in enumerate(parts):
        pod_slice = _pattern(_POD_SLICE).match(part) if part.startswith("kubepods") else None
        if pod_slice:
            found["pod_uid"] = pod_slice.group(2).replace("_", "-")
            found["qos_class"] = _QOS[pod_slice.group(1)]
            continue
        pod_directory = _pattern(_POD_DIRECTORY).match(part) if part.startswith("pod") else None
        if pod_directory and index > 0 and parts[0] == "kubepods":
            qos = parts[1] if index == 2 and parts[1] in ("besteffort", "burstable") else None
            found["pod_uid"], found["qos_class"] = pod_directory.group(1), _QOS[qos]
            continue
        scope = _scoped_container(part)
        if scope is not None:
            found["container_id"], found["container_runtime"] = scope
            continue
        bare = _pattern(_BARE_ID).match(part) if len(part) >= _CONTAINER_ID_LENGTH else None
        if bare:
            prefix = next((key for key in _RUNTIME_BY_PREFIX if part.startswith(key)), "")
            parent = parts[index - 1] if index else ""
            found["container_id"] = bare.group(1)
            found["container_runtime"] = _RUNTIME_BY_PREFIX.get(prefix) or _RUNTIME_BY_PARENT.get(parent)
    if found.get("container_id") is None and found.get("pod_uid") is None:
        services = [part for part in parts if part.endswith(".service")]
        scopes = [part for part in parts if part.endswith(".scope")]
        found["unit"] = services[-1] if services else scopes[-1] if scopes else None
    return _known(found)


def _scoped_container(part: str) -> tuple[str, str] | None:
    """A systemd-driver scope's container id and runtime, or None."""
    if part.startswith(_SCOPE_PREFIXES):
        for _, expression, runtime in _SCOPES:
            scope = _pattern(expression).match(part)
            if scope:
                return scope.group(1), runtime
    return None


def fields_of_cgroup_file(text: str) -> WorkloadFields:
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
    best: WorkloadFields = {}
    for _, path in sorted(paths, key=lambda entry: entry[0]):
        found = fields_of_cgroup_path(path)
        if found.get("container_id") or found.get("pod_uid"):
            return found
        if found.get("unit") and "unit" not in best:
            best = found
    return best


def completed_by_kubelet_logs(fields: WorkloadFields, host_root: str) -> WorkloadFields:
    """`fields` with the pod, namespace and container name the kubelet's log tree under
    `host_root` gives its container (or its pod), where it has them."""
    container_id, pod_uid = fields.get("container_id"), fields.get("pod_uid")
    if container_id is not None:
        for name in _listing(os.path.join(host_root, "var", "log", "containers")):
            match = _pattern(_CONTAINER_LOG, re.DOTALL).match(name)
            if match and match["id"] == container_id:
                return _known(
                    {
                        **fields,
                        "pod": match["pod"],
                        "namespace": match["namespace"],
                        "container_name": match["container"],
                    }
                )
    if pod_uid is not None:
        for name in _listing(os.path.join(host_root, "var", "log", "pods")):
            match = _pattern(_POD_LOG_DIRECTORY).match(name)
            if match and match["uid"] == pod_uid:
                return _known({**fields, "pod": match["pod"], "namespace": match["namespace"]})
    return fields


def _listing(directory: str) -> list[str]:
    """The names in a directory of the host's, as text (a name may hold any bytes)."""
    try:
        return [from_host(name) for name in os.listdir(os.fsencode(directory))]
    except OSError:
        return []


def fields_of_process(pid: int, proc: str = "/proc", host_root: str = "/") -> WorkloadFields:
    """Where process `pid` runs now (nothing when it is gone): its cgroup, and for a container
    or a pod, what the kubelet's log tree under `host_root` names them."""
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as cgroup:
            found = fields_of_cgroup_file(from_host(cgroup.read()))
    except OSError:
        return {}
    if "container_id" in found or "pod_uid" in found:
        found = completed_by_kubelet_logs(found, host_root)
    return found
