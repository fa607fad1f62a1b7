"""Attachments as bpftool sees them, with programs no one here wrote by hand: C built by clang,
a tc classifier attached by iproute2 inside a network namespace, XDP in generic mode by `ip
link`, a cgroup_skb program attached by bpftool. kstat must place each where bpftool does, and
count exactly the packets sent through each."""

from __future__ import annotations

import json
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import kstat
from kstat.sources.attribution import cgroup2_root
from tests.kstat_process import run_kstat
from tests.names import KT, TOKEN, host_name

pytestmark = pytest.mark.kernel

SOURCES = Path(__file__).parent / "bpf"
NETNS = host_name("net")
HOST_DEVICE, NS_DEVICE = host_name("host"), host_name("ns")
# A /30 of this suite's own, so that two suites' veth pairs do not share addresses or routes.
_SUBNET = int(TOKEN, 36) % (256 * 64)
HOST_ADDRESS = f"10.231.{_SUBNET // 64}.{_SUBNET % 64 * 4 + 1}"
NS_ADDRESS = f"10.231.{_SUBNET // 64}.{_SUBNET % 64 * 4 + 2}"
PORT = 40_777
PIN = Path(f"/sys/fs/bpf/{KT}cg_egress")


def run(*command: str) -> str:
    # Other devices on the host may have names that are no UTF-8 (the host is hostile).
    return subprocess.run(command, check=True, capture_output=True, text=True, errors="replace").stdout


def in_netns(*command: str) -> str:
    return run("ip", "netns", "exec", NETNS, *command)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The C programs under tests/bpf built by clang, as an agent's build would."""
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (Debian's clang package); run `make deps`")
    built = tmp_path_factory.mktemp("bpf")
    arch_headers = f"/usr/include/{platform.machine()}-linux-gnu"
    found = {}
    for source in sorted(SOURCES.glob("*.c")):
        target = built / f"{source.stem}.o"
        run("clang", "-O2", "-g", "-target", "bpf", f"-I{arch_headers}", "-c", str(source), "-o", str(target))
        found[source.stem] = target
    return found


def mac_of(device: str, *, netns: bool = False) -> str:
    path = f"/sys/class/net/{device}/address"
    return (in_netns("cat", path) if netns else Path(path).read_text()).strip()


@pytest.fixture(scope="module")
def network(objects: dict[str, Path]) -> Iterator[dict[str, int]]:
    """A veth pair between the host and a network namespace, quiet (no IPv6, no ARP: static
    neighbours) so that the only packets are the test's; tc on the namespace's end (ingress),
    XDP on the host's. Removed whatever happens."""
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", HOST_DEVICE], capture_output=True, check=False)
    try:
        run("ip", "netns", "add", NETNS)
        run("ip", "link", "add", HOST_DEVICE, "type", "veth", "peer", "name", NS_DEVICE)
        run("ip", "link", "set", NS_DEVICE, "netns", NETNS)
        run("sysctl", "-qw", f"net.ipv6.conf.{HOST_DEVICE}.disable_ipv6=1")
        in_netns("sysctl", "-qw", f"net.ipv6.conf.{NS_DEVICE}.disable_ipv6=1")
        run("ip", "addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_DEVICE)
        in_netns("ip", "addr", "add", f"{NS_ADDRESS}/30", "dev", NS_DEVICE)
        run("ip", "link", "set", HOST_DEVICE, "up", "arp", "off")
        in_netns("ip", "link", "set", NS_DEVICE, "up", "arp", "off")
        in_netns("ip", "link", "set", "lo", "up")
        run(
            "ip",
            "neigh",
            "replace",
            NS_ADDRESS,
            "lladdr",
            mac_of(NS_DEVICE, netns=True),
            "dev",
            HOST_DEVICE,
            "nud",
            "permanent",
        )
        in_netns(
            "ip",
            "neigh",
            "replace",
            HOST_ADDRESS,
            "lladdr",
            mac_of(HOST_DEVICE),
            "dev",
            NS_DEVICE,
            "nud",
            "permanent",
        )
        in_netns("tc", "qdisc", "add", "dev", NS_DEVICE, "clsact")
        in_netns(
            "tc",
            "filter",
            "add",
            "dev",
            NS_DEVICE,
            "ingress",
            "prio",
            "5",
            "handle",
            "7",
            "bpf",
            "da",
            "obj",
            str(objects["flow_tc"]),
            "sec",
            "tc",
        )
        run(
            "ip",
            "link",
            "set",
            "dev",
            HOST_DEVICE,
            "xdpgeneric",
            "obj",
            str(objects["pass_xdp"]),
            "sec",
            "xdp",
        )
        tc = json.loads(in_netns("bpftool", "net", "show", "-j"))[0]["tc"]
        xdp = json.loads(run("bpftool", "net", "show", "-j"))[0]["xdp"]
        yield {
            "tc": next(entry["id"] for entry in tc if entry["devname"] == NS_DEVICE),
            "xdp": next(entry["id"] for entry in xdp if entry["devname"] == HOST_DEVICE),
        }
    finally:
        subprocess.run(["ip", "link", "del", HOST_DEVICE], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)


@pytest.fixture(scope="module")
def cgroup(objects: dict[str, Path]) -> Iterator[tuple[Path, int]]:
    """A cgroup of the v2 tree with a cgroup_skb egress program, loaded and attached by bpftool."""
    place = cgroup2_root() / host_name("loaders")
    PIN.unlink(missing_ok=True)
    try:
        place.mkdir(exist_ok=True)
        run("bpftool", "prog", "load", str(objects["egress_cgroup"]), str(PIN))
        run("bpftool", "cgroup", "attach", str(place), "egress", "pinned", str(PIN))
        program_id = json.loads(run("bpftool", "prog", "show", "pinned", str(PIN), "-j"))["id"]
        tree = json.loads(run("bpftool", "cgroup", "tree", "-j", str(cgroup2_root())) or "[]")
        shown = [
            program["id"] for entry in tree if entry["cgroup"] == str(place) for program in entry["programs"]
        ]
        # Debian 12's bpftool asks BPF_PROG_QUERY for attach flags, which kernels before 6.0 do
        # not know: there it lists no cgroup's programs at all (kstat's own query finds them).
        assert shown in ([program_id], [])
        yield place, program_id
    finally:
        subprocess.run(
            ["bpftool", "cgroup", "detach", str(place), "egress", "pinned", str(PIN)],
            capture_output=True,
            check=False,
        )
        PIN.unlink(missing_ok=True)
        if place.exists():
            place.rmdir()


def listed(*arguments: str) -> dict[int, dict[str, Any]]:
    completed = run_kstat(["list", "--json", *arguments])
    assert completed.returncode == 0, completed.stderr
    return {program["id"]: program for program in json.loads(completed.stdout)}


def test_kstat_places_each_program_where_bpftool_does(
    network: dict[str, int], cgroup: tuple[Path, int]
) -> None:
    place, cgroup_program = cgroup
    programs = listed()
    # bpftool, in the namespace: `kt-ns clsact/ingress flow_tc.o:[tc] id N`; tc says the rest.
    (tc_filter,) = [
        entry
        for entry in json.loads(in_netns("tc", "-j", "filter", "show", "dev", NS_DEVICE, "ingress"))
        if "options" in entry
    ]
    assert tc_filter["options"]["prog"]["id"] == network["tc"]
    handle = int(tc_filter["options"]["handle"], 16)
    assert programs[network["tc"]]["attachments"] == [
        f"tc/ingress:{NS_DEVICE}@{NETNS} prio={tc_filter['pref']} handle={handle:#x} da"
    ]
    assert (tc_filter["pref"], handle) == (5, 7)
    assert programs[network["xdp"]]["attachments"] == [f"xdp/generic:{HOST_DEVICE}"]
    assert programs[cgroup_program]["attachments"] == [f"cgroup/egress:{place}"]
    # The full name, from BTF (the objects in tests/bpf are named there, with no token: the
    # programs are told apart by id).
    assert programs[network["tc"]]["name"] == "kstat_t_flow_tc"
    # The filters select by the same places.
    assert set(listed("--attach-type", "tc")) >= {network["tc"]}
    assert network["tc"] not in listed("--attach-type", "xdp")
    assert set(listed("--attached", HOST_DEVICE)) == {network["xdp"]}
    assert set(listed("--attached", f"{NS_DEVICE}@{NETNS}", "--attach-type", "tc/ingress")) == {network["tc"]}
    assert set(listed("--attached", place.name)) == {cgroup_program}


def test_the_table_and_the_report_say_the_same(network: dict[str, int], cgroup: tuple[Path, int]) -> None:
    table = run_kstat(["list", "--attached", HOST_DEVICE, "--attached", cgroup[0].name]).stdout
    assert f"xdp/generic:{HOST_DEVICE}" in table and f"cgroup/egress:{cgroup[0]}" in table
    report = run_kstat(["-duration", "300ms", "--interval", "100ms", "--attach-type", "tc"])
    assert report.returncode == 0, report.stderr
    lines = json.loads(report.stdout)["program_stats"].values()
    assert [line["attachments"] for line in lines if line["id"] == network["tc"]] == [
        [f"tc/ingress:{NS_DEVICE}@{NETNS} prio=5 handle=0x7 da"]
    ]


def send_udp(count: int, address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(count):
            sender.sendto(b"kstat", (address, PORT))


SEND_SCRIPT = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "[s.sendto(b'kstat',(sys.argv[1],int(sys.argv[2]))) for _ in range(int(sys.argv[3]))]\n"
)


async def test_every_packet_through_each_is_counted(
    network: dict[str, int], cgroup: tuple[Path, int]
) -> None:
    """Listeners on both ends, so that no packet comes back as an ICMP error; the cgroup's
    sender is a process moved into that cgroup before it sends."""
    place, cgroup_program = cgroup
    host_listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host_listener.bind((HOST_ADDRESS, PORT))
    loopback_listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    loopback_listener.bind(("127.0.0.1", PORT))
    ns_listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            NETNS,
            sys.executable,
            "-c",
            "import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            f" s.bind(('{NS_ADDRESS}',{PORT})); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert ns_listener.stdout is not None and ns_listener.stdout.readline().strip() == "ready"
        selection = kstat.ProgramFilter(ids=(network["tc"], network["xdp"], cgroup_program))
        async with kstat.collect(interval="50ms", select=selection, sinks=[]) as session:
            await trio.to_thread.run_sync(send_udp, 1_234, NS_ADDRESS)  # host -> namespace: tc ingress
            await trio.to_thread.run_sync(
                in_netns, sys.executable, "-c", SEND_SCRIPT, HOST_ADDRESS, str(PORT), "321"
            )  # namespace -> host: XDP on the host's end
            await trio.to_thread.run_sync(
                run,
                "sh",
                "-c",
                f'echo $$ > {place}/cgroup.procs && exec "$0" -c "$1" 127.0.0.1 {PORT} 77',
                sys.executable,
                SEND_SCRIPT,
            )
            await trio.sleep(0.2)
        report = session.report
    finally:
        ns_listener.kill()
        ns_listener.wait()
        host_listener.close()
        loopback_listener.close()
    assert report.program(network["tc"]).run_count == 1_234
    assert report.program(network["xdp"]).run_count == 321
    assert report.program(cgroup_program).run_count == 77


def test_the_lookups_find_them_directly(network: dict[str, int], cgroup: tuple[Path, int]) -> None:
    from kstat.sources.attribution import cgroup_attachments  # noqa: PLC0415
    from kstat.sources.netlink import net_attachments  # noqa: PLC0415

    by_program = {attachment.program_id: attachment for attachment in net_attachments()}
    assert by_program[network["tc"]].namespace == NETNS
    assert by_program[network["tc"]].name == "flow_tc.o:[tc]"  # what iproute2 calls it
    assert by_program[network["xdp"]].hook == "xdp/generic"
    assert (cgroup[1], f"cgroup/egress:{cgroup[0]}") in cgroup_attachments()
