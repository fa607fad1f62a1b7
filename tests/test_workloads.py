"""Which container, pod and service: cgroup paths of every runtime and driver, the kubelet's log
tree, and real cgroups shaped like a Kubernetes node's with real programs held inside them."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from attrs import evolve

import kstat
from kstat.analysis.compare import compare
from kstat.core.filters import ProgramFilter
from kstat.core.model import ProgramDetails, ProgramOwner, Workload
from kstat.sources.workload_fields import WORKLOAD_FIELDS, completed_by_kubelet_logs, fields_of_cgroup_path
from kstat.sources.workloads import KubeletLogs, node_name, workload_of_cgroup_file, workload_of_cgroup_path
from tests.builders import program, report_of, snapshot
from tests.holders import HolderProcess, program_holder
from tests.kstat_process import run_kstat
from tests.names import KT

CONTAINER = "0123456789abcdef" * 4
POD_UID = "5f0c6d1e-8a2b-4c3d-9e8f-0a1b2c3d4e5f"
SYSTEMD_POD = POD_UID.replace("-", "_")


BURSTABLE = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_POD}.slice"
BESTEFFORT = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_POD}.slice"
GUARANTEED = f"/kubepods.slice/kubepods-pod{SYSTEMD_POD}.slice"
IN_A_POD = {"pod_uid": POD_UID}
A_CONTAINER = {"container_id": CONTAINER}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # systemd driver, every runtime
        (
            f"{BURSTABLE}/cri-containerd-{CONTAINER}.scope",
            Workload(**A_CONTAINER, container_runtime="containerd", **IN_A_POD, qos_class="Burstable"),
        ),
        (
            f"{BESTEFFORT}/crio-{CONTAINER}.scope",
            Workload(**A_CONTAINER, container_runtime="cri-o", **IN_A_POD, qos_class="BestEffort"),
        ),
        (
            f"{GUARANTEED}/docker-{CONTAINER}.scope",
            Workload(**A_CONTAINER, container_runtime="docker", **IN_A_POD, qos_class="Guaranteed"),
        ),
        (f"/machine.slice/libpod-{CONTAINER}.scope", Workload(**A_CONTAINER, container_runtime="podman")),
        # cgroupfs driver
        (
            f"/kubepods/burstable/pod{POD_UID}/{CONTAINER}",
            Workload(**A_CONTAINER, **IN_A_POD, qos_class="Burstable"),
        ),
        (f"/kubepods/pod{POD_UID}/{CONTAINER}", Workload(**A_CONTAINER, **IN_A_POD, qos_class="Guaranteed")),
        (
            f"/kubepods/besteffort/pod{POD_UID}/crio-{CONTAINER}",
            Workload(**A_CONTAINER, container_runtime="cri-o", **IN_A_POD, qos_class="BestEffort"),
        ),
        (f"/docker/{CONTAINER}", Workload(**A_CONTAINER, container_runtime="docker")),
        (f"/libpod_parent/libpod-{CONTAINER}", Workload(**A_CONTAINER, container_runtime="podman")),
        # a pod's own cgroup (its pause process, or a process outside its containers)
        (BURSTABLE, Workload(**IN_A_POD, qos_class="Burstable")),
        # outside containers: the systemd unit
        ("/system.slice/nginx.service", Workload(unit="nginx.service")),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-tmux.scope",
            Workload(unit="user@1000.service"),
        ),
        ("/user.slice/user-1000.slice/session-2.scope", Workload(unit="session-2.scope")),
        ("/process_api/4a4c3de23080061b9f7db17be2f5f1b1", Workload()),
    ],
)
def test_every_runtime_and_driver_names_its_containers(path: str, expected: Workload) -> None:
    assert workload_of_cgroup_path(path) == expected


def test_a_hybrid_hosts_cgroup_file_is_read_v2_first() -> None:
    text = (
        "12:memory:/process_api/abc\n"
        f"1:name=systemd:/kubepods.slice/kubepods-pod{SYSTEMD_POD}.slice/cri-containerd-{CONTAINER}.scope\n"
        "0::/\n"
    )
    assert workload_of_cgroup_file(text).container_id == CONTAINER
    assert workload_of_cgroup_file(
        "0::/system.slice/cron.service\n5:pids:/system.slice/cron.service\n"
    ).unit == ("cron.service")
    assert workload_of_cgroup_file("0::/\n") == Workload()


def kubelet_tree(
    root: Path, *, namespace: str, pod: str, uid: str, container: str, container_id: str
) -> None:
    """The directories a kubelet keeps for a container's logs."""
    (root / "var/log/pods" / f"{namespace}_{pod}_{uid}" / container).mkdir(parents=True, exist_ok=True)
    (root / "var/log/pods" / f"{namespace}_{pod}_{uid}" / container / "0.log").touch()
    (root / "var/log/containers").mkdir(parents=True, exist_ok=True)
    (root / "var/log/containers" / f"{pod}_{namespace}_{container}-{container_id}.log").touch()


def test_the_kubelets_log_tree_names_pods_and_containers(tmp_path: Path) -> None:
    kubelet_tree(
        tmp_path,
        namespace="monitoring",
        pod="flow-agent-x7k2p",
        uid=POD_UID,
        container="exporter",
        container_id=CONTAINER,
    )
    logs = KubeletLogs(tmp_path)
    container = logs.complete(Workload(container_id=CONTAINER, pod_uid=POD_UID))
    assert (container.pod, container.namespace, container.container_name) == (
        "flow-agent-x7k2p",
        "monitoring",
        "exporter",
    )
    # A pod's own process: the pod's directory names it.
    pod = logs.complete(Workload(pod_uid=POD_UID))
    assert (pod.pod, pod.namespace, pod.container_name) == ("flow-agent-x7k2p", "monitoring", None)
    # Nothing on the node about it: nothing invented.
    assert KubeletLogs(tmp_path / "nowhere").complete(Workload(pod_uid=POD_UID)) == Workload(pod_uid=POD_UID)


def test_the_fields_found_come_in_the_order_written(tmp_path: Path) -> None:
    """kstat list writes an owner's fields as they are found (kstat.sources.workload_fields):
    in Workload's order, however the path and the log tree gave them."""
    kubelet_tree(
        tmp_path, namespace="team", pod="web", uid=POD_UID, container="exporter", container_id=CONTAINER
    )
    found = fields_of_cgroup_path(f"/kubepods/burstable/pod{POD_UID}/crio-{CONTAINER}")
    completed = completed_by_kubelet_logs(found, str(tmp_path))
    assert list(completed) == [name for name in WORKLOAD_FIELDS if name != "unit"]
    assert completed == {
        "container_id": CONTAINER,
        "container_runtime": "cri-o",
        "container_name": "exporter",
        "pod_uid": POD_UID,
        "pod": "web",
        "namespace": "team",
        "qos_class": "Burstable",
    }


def test_the_node_is_named_by_the_downward_api_else_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "worker-3")
    assert node_name() == "worker-3"
    monkeypatch.delenv("NODE_NAME")
    assert node_name() == os.uname().nodename


IN_POD = Workload(
    container_id=CONTAINER,
    container_name="exporter",
    pod="flow-agent-x7k2p",
    pod_uid=POD_UID,
    namespace="monitoring",
)


def details(*workloads: Workload) -> ProgramDetails:
    return ProgramDetails(
        owners=tuple(ProgramOwner(100 + index, "agent", workload) for index, workload in enumerate(workloads))
    )


@pytest.mark.parametrize(
    ("selection", "selected"),
    [
        (ProgramFilter(containers=(CONTAINER[:12],)), True),
        (ProgramFilter(containers=("exporter",)), True),
        (ProgramFilter(containers=("other",)), False),
        (ProgramFilter(pods=("flow-agent-x7k2p",)), True),
        (ProgramFilter(pods=(POD_UID,)), True),
        (ProgramFilter(namespaces=("monitoring",)), True),
        (ProgramFilter(namespaces=("default",)), False),
        (ProgramFilter(units=("nginx",)), False),
    ],
)
def test_filters_select_by_where_owners_run(selection: ProgramFilter, selected: bool) -> None:
    assert selection.selects(program(1, 0, 0), details(IN_POD)) is selected


def test_units_are_selected_with_or_without_their_suffix() -> None:
    nginx = details(Workload(unit="nginx.service"))
    assert ProgramFilter(units=("nginx",)).selects(program(1, 0, 0), nginx)
    assert ProgramFilter(units=("nginx.service",)).selects(program(1, 0, 0), nginx)


def test_compare_by_pod_matches_one_workloads_pods_across_a_rollout() -> None:
    def report(pod: str, runtime_ns: int) -> kstat.Report:
        base = report_of(
            snapshot(0, 0.0, program(1, 0, 0, name="parse"), program(2, 0, 0, name="select")),
            snapshot(
                1, 1.0, program(1, runtime_ns, 100, name="parse"), program(2, runtime_ns, 100, name="select")
            ),
        )
        owner = (ProgramOwner(7, "agent", evolve(IN_POD, pod=pod)),)
        return evolve(
            base, program_stats={key: evolve(line, owners=owner) for key, line in base.program_stats.items()}
        )

    comparison = compare(report("flow-agent-x7k2p", 10_000), report("flow-agent-9zq4m", 15_000), by="pod")
    (row,) = comparison.rows
    assert row.name == "monitoring/flow-agent-x7k2p → monitoring/flow-agent-9zq4m"
    assert row.baseline is not None and row.baseline.programs == 2
    assert row.change_percent("avg_runtime_ns") == pytest.approx(50.0)


# --- real cgroups shaped like a Kubernetes node's --------------------------------------------


def cgroup2_root() -> Path:
    """The unified hierarchy: /sys/fs/cgroup on a pure v2 host, .../unified on a hybrid one."""
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.procs").exists() and (candidate / "cgroup.controllers").exists():
            return candidate
    pytest.skip("no cgroup v2 hierarchy mounted")


class NodeCgroups:
    """cgroups created for a test, and the processes moved into them; all undone at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[Path] = []
        self.moved: list[int] = []

    def place(self, pid: int, relative: str) -> None:
        path = self.root
        for part in relative.strip("/").split("/"):
            path = path / part
            if not path.exists():
                path.mkdir()
                self.created.append(path)
        (path / "cgroup.procs").write_text(str(pid))
        self.moved.append(pid)

    def remove(self) -> None:
        for pid in self.moved:
            with contextlib.suppress(OSError):  # already gone
                (self.root / "cgroup.procs").write_text(str(pid))
        for path in reversed(self.created):
            with contextlib.suppress(OSError):  # still busy: better left than failing the rest
                path.rmdir()


@pytest.fixture
def node_cgroups() -> Iterator[NodeCgroups]:
    cgroups = NodeCgroups(cgroup2_root())
    try:
        yield cgroups
    finally:
        cgroups.remove()


@pytest.fixture
def holders() -> Iterator[list[HolderProcess]]:
    started: list[HolderProcess] = []
    try:
        yield started
    finally:
        for holder in started:
            holder.close()


@pytest.mark.kernel
def test_every_program_is_attributed_on_a_host_shaped_like_a_node(
    node_cgroups: NodeCgroups, holders: list[HolderProcess], tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    systemd_uid, cgroupfs_uid = str(uuid.uuid4()), str(uuid.uuid4())
    systemd_id, cgroupfs_id = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    layouts = {
        # systemd driver, containerd, a Burstable pod
        f"{KT}cri": (
            "kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{systemd_uid.replace('-', '_')}.slice/cri-containerd-{systemd_id}.scope"
        ),
        # cgroupfs driver, a BestEffort pod
        f"{KT}cgfs": f"kubepods/besteffort/pod{cgroupfs_uid}/{cgroupfs_id}",
        # a service on the node
        f"{KT}svc": f"system.slice/kstat-test-{suffix}.service",
    }
    for name, relative in layouts.items():
        holder = program_holder(name)
        holders.append(holder)
        node_cgroups.place(holder.pid, relative)
    host = tmp_path / "host"
    kubelet_tree(
        host, namespace="monitoring", pod="flow-agent-x7k2p", uid=systemd_uid, container="exporter",
        container_id=systemd_id,
    )  # fmt: skip
    kubelet_tree(
        host,
        namespace="security",
        pod="sensor-4k9pz",
        uid=cgroupfs_uid,
        container="sensor",
        container_id=cgroupfs_id,
    )
    output = tmp_path / "r.json"
    completed = run_kstat(
        [
            "-duration",
            "1s",
            "--interval",
            "250ms",
            "--host-root",
            str(host),
            "--name",
            f"^{KT}",
            "-o",
            str(output),
        ],
        timeout_s=60,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(output.read_text())
    owners = {key: line["owners"][0] for key, line in report["program_stats"].items()}
    assert owners[f"{KT}cri"] | {} == {
        "pid": holders[0].pid,
        "command": owners[f"{KT}cri"]["command"],
        "container_id": systemd_id,
        "container_runtime": "containerd",
        "container_name": "exporter",
        "pod_uid": systemd_uid,
        "pod": "flow-agent-x7k2p",
        "namespace": "monitoring",
        "qos_class": "Burstable",
    }
    assert (owners[f"{KT}cgfs"]["pod"], owners[f"{KT}cgfs"]["namespace"]) == (
        "sensor-4k9pz",
        "security",
    )
    assert owners[f"{KT}cgfs"]["qos_class"] == "BestEffort"
    assert owners[f"{KT}cgfs"]["container_name"] == "sensor"
    assert owners[f"{KT}svc"]["unit"] == f"kstat-test-{suffix}.service"
    assert "pod" not in owners[f"{KT}svc"]
    assert report["node"] == node_name()

    # The filters select exactly them, on the command line and in the library.
    def selected(*flags: str) -> list[str]:
        listed = run_kstat(["list", "--json", "--host-root", str(host), *flags])
        assert listed.returncode == 0, listed.stderr
        return sorted(entry["name"] for entry in json.loads(listed.stdout))

    assert selected("--pod", "flow-agent-x7k2p") == [f"{KT}cri"]
    assert selected("--namespace", "security") == [f"{KT}cgfs"]
    assert selected("--container", systemd_id[:12]) == [f"{KT}cri"]
    assert selected("--container", "sensor") == [f"{KT}cgfs"]
    assert selected("--unit", f"kstat-test-{suffix}") == [f"{KT}svc"]
    with kstat.collect_sync(
        interval="100ms", host_root=host, select=kstat.ProgramFilter(namespaces=("monitoring", "security"))
    ) as session:
        pass
    assert sorted(session.report.program_stats) == [f"{KT}cgfs", f"{KT}cri"]
    table = run_kstat(["list", "--host-root", str(host), "--name", f"^{KT}"]).stdout
    assert "monitoring/flow-agent-x7k2p/exporter" in table and f"kstat-test-{suffix}.service" in table
