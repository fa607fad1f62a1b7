"""deploy/: what can be checked here without a cluster or an image registry.

The DaemonSet grants what kstat needs and mounts what it reads; its arguments are ones kstat's
own parser accepts, and its ports agree everywhere; the image builds the package the way
pyproject.toml describes it; the Prometheus configuration and rules pass promtool and use only
metrics kstat exposes.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kstat._version import __version__
from kstat.cli import parse_command_line
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.formats.prometheus import Format, exposition_of
from kstat.sinks.prometheus import parse_prometheus_url
from tests.builders import events_of, program, snapshot
from tests.kstat_process import KstatProcess
from tests.names import KT
from tests.prometheus_server import PROMTOOL, require, running_prometheus
from tests.statsd_daemon import free_port
from tests.windows import LoadFilter

REPO = Path(__file__).parents[1]
DEPLOY = REPO / "deploy"


def manifests() -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if document]


def daemonset() -> dict[str, Any]:
    found = [document for document in manifests() if document["kind"] == "DaemonSet"]
    assert len(found) == 1
    return found[0]


def container() -> dict[str, Any]:
    containers = daemonset()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def test_the_pod_sees_the_hosts_processes_and_has_the_capabilities_kstat_needs() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    assert pod["hostPID"] is True  # owners are found in the host's /proc/<pid>/fdinfo
    security = container()["securityContext"]
    # BPF_ENABLE_STATS and BPF_PROG_GET_FD_BY_ID of other processes' programs need SYS_ADMIN.
    assert "SYS_ADMIN" in security["capabilities"]["add"]
    assert "SYS_PTRACE" in security["capabilities"]["add"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security.get("privileged", False) is False
    assert {"operator": "Exists"} in pod["tolerations"]  # every node


def test_what_kstat_reads_from_the_host_is_mounted() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container()["volumeMounts"]}
    cgroup = mounts["/sys/fs/cgroup"]
    assert cgroup["readOnly"] is True
    assert volumes[cgroup["name"]]["hostPath"]["path"] == "/sys/fs/cgroup"
    # The kubelet's log tree, where --host-root says the host's filesystem is.
    _, _, options = parse_command_line(["serve", *container()["args"]])
    logs = mounts[str(options.host_root / "var/log")]
    assert logs["readOnly"] is True
    assert volumes[logs["name"]]["hostPath"]["path"] == "/var/log"
    env = {variable["name"]: variable for variable in container()["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_arguments_are_kstats_and_the_ports_agree() -> None:
    _, _, options = parse_command_line(["serve", *container()["args"]])
    (spec,) = options.sinks
    endpoint = parse_prometheus_url(spec)
    assert endpoint.host == "0.0.0.0"  # reachable on the pod's address, not only loopback
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    annotations = daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert ports["metrics"] == endpoint.port == int(annotations["prometheus.io/port"])
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert container()["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container()["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container()[probe]["httpGet"]["port"] == "metrics"


def test_the_image_is_built_from_what_pyproject_packages() -> None:
    containerfile = (DEPLOY / "Containerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    top_level = {package.split(".")[0] for package in pyproject["tool"]["setuptools"]["packages"]}
    copied = set(re.findall(r"^COPY (\w+) \./", containerfile, flags=re.MULTILINE))
    assert top_level <= copied
    assert re.search(r'^ENTRYPOINT \["kstat", "serve"\]$', containerfile, flags=re.MULTILINE)
    command = re.search(r"^CMD (\[.*\])$", containerfile, flags=re.MULTILINE)
    assert command is not None
    assert yaml.safe_load(command.group(1)) == container()["args"]  # the same defaults either way
    assert f"EXPOSE {parse_prometheus_url(container()['args'][1]).port}" in containerfile
    # The version's one source is kstat/_version.py (pyproject reads it when the package is built).
    assert pyproject["project"]["dynamic"] == ["version"]
    assert container()["image"] == f"kstat:{__version__}"


def test_prometheus_configuration_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require(PROMTOOL)
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    # Debian's Prometheus is built without Kubernetes discovery: the rest of the file (relabel
    # rules, rule files) is checked with a static target in its place.
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
        job["static_configs"] = [{"targets": ["127.0.0.1:20915"]}]
    config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
    checked_config = tmp_path / "prometheus.yml"
    checked_config.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(checked_config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_the_rules_use_only_metrics_kstat_exposes() -> None:
    events = events_of(snapshot(0, 0.0, program(1, 0, 0)), snapshot(1, 1.0, program(1, 10, 1)))
    exposition = exposition_of(
        [event for event in events if isinstance(event, WindowStarted | IntervalEnded)], footprint=True
    )
    body = exposition.render(Format.TEXT).body.decode()
    exposed = set(re.findall(r"^# TYPE (\w+) (\w+)", body, flags=re.MULTILINE))
    names = {name for name, _ in exposed}  # counters carry their _total here already
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\b(kstat_\w+)\b", rule["expr"])
    }
    assert used
    assert used <= names, used - names


@pytest.mark.parametrize("document", ["daemonset.yaml", "prometheus-rules.yaml", "prometheus.yml"])
def test_every_manifest_is_yaml(document: str) -> None:
    assert list(yaml.safe_load_all((DEPLOY / document).read_text()))


def document(name: str) -> dict[str, Any]:
    (found,) = [entry for entry in yaml.safe_load_all((DEPLOY / name).read_text()) if entry]
    assert isinstance(found, dict)
    return found


def test_the_namespace_is_privileged_because_the_daemonset_needs_what_baseline_forbids() -> None:
    namespace = document("namespace.yaml")
    assert namespace["metadata"]["name"] == daemonset()["metadata"]["namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    pod = daemonset()["spec"]["template"]["spec"]
    # Pod Security's baseline forbids each of these, and kstat needs each.
    assert pod["hostPID"] is True
    assert any("hostPath" in volume for volume in pod["volumes"])
    baseline_capabilities = {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
        "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }  # fmt: skip
    assert set(container()["securityContext"]["capabilities"]["add"]) - baseline_capabilities


def test_the_pod_monitor_and_the_network_policy_select_the_daemonsets_pods_and_port() -> None:
    pod_labels = daemonset()["spec"]["template"]["metadata"]["labels"]
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    monitor = document("podmonitor.yaml")
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [daemonset()["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # the info series' pod and namespace are the owners'
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in endpoint[
        "relabelings"
    ]
    policy = document("networkpolicy.yaml")
    assert policy["metadata"]["namespace"] == daemonset()["metadata"]["namespace"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": ports["metrics"]}]


def test_the_requests_are_set_and_below_the_limit() -> None:
    resources = container()["resources"]
    assert resources["requests"]["cpu"].endswith("m")
    mebibytes = {key: int(value.removesuffix("Mi")) for key, value in (
        ("request", resources["requests"]["memory"]), ("limit", resources["limits"]["memory"]),
    )}  # fmt: skip
    assert mebibytes["request"] < mebibytes["limit"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel of deploy/grafana-dashboard.json, with Grafana's
    variables as a Prometheus evaluates them (every node, a 1 minute rate window)."""
    board = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m").replace("$node", ".*"))
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def test_the_dashboard_has_the_panels_a_fleet_needs() -> None:
    titles = " / ".join(title for title, _ in dashboard_queries()).lower()
    for wanted in ("costliest", "per node", "per pod", "per run", "misses", "kstat's own cost"):
        assert wanted in titles


@pytest.mark.kernel
def test_every_dashboard_query_returns_series_from_a_real_prometheus(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    """Debian's Prometheus scrapes a real `kstat serve` (labelled with its node, as the cluster's
    discovery labels it) while packets pass a socket filter; every panel's query gives series."""
    port = free_port(socket.SOCK_STREAM)
    with running_prometheus(tmp_path, port, labels={"node": "node-1"}) as prometheus:
        kstat = KstatProcess(["serve", "--interval", "500ms", "--sink", f"prometheus://127.0.0.1:{port}"])
        kstat.wait_for_window()
        target = load_filter(f"{KT}board")
        # By its id: another suite on the host may hold a program of the same name.
        series = f'kstat_program_runs_total{{id="{target.program.id}"}}'
        assert prometheus.wait_for(series, 0) == 0
        sent = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            target.send(20)
            sent += 20
            time.sleep(0.05)
        assert prometheus.wait_for(series, sent) == sent
        at = time.time()
        empty = [title for title, query in dashboard_queries() if not prometheus.query(query, at=at)]
        kstat.signal(signal.SIGTERM)
        returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert empty == []
