"""Scoped by default: `kstat run -- CMD` reports the programs of CMD's process tree (however
they are held), the demo and the pytest fixture their own, and every kstat sets other kstat
instances' own programs apart, knowing them by name and tag; beside other tenants' programs an
unchanged workload passes its gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kstat
from kstat.core.report import KstatPrograms
from kstat.engine.sampler import SnapshotTaker
from kstat.sources.iterator import ITERATOR_NAME, IteratorReader
from kstat.sources.own_programs import OwnPrograms, program_tags
from kstat.sources.process_tree import ProcessTree, descendants, parent_of
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.kstat_process import KSTAT, KstatProcess, run_kstat, wait_until_ready

REPO = Path(__file__).parents[1]
PACKETS = 300
ITERATOR_TAKES_OVER = "snapshots by BPF iterator; its own program is left out of the report"
NONE_APART = KstatPrograms(0, {})


class Holder:
    """Another tenant: a process of its own holding programs, outside any command's tree
    (`detached`: outside the test's own tree too, a child of init by `setsid --fork`)."""

    def __init__(self, *arguments: str, detached: bool = False) -> None:
        self.process = subprocess.Popen(
            [*(["setsid", "--fork"] if detached else []), sys.executable, "-m", *arguments],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.said: dict[str, Any] = json.loads(self.process.stdout.readline())

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(60)


@pytest.fixture
def tenants() -> Iterator[tuple[Holder, Holder]]:
    """Other tenants' programs: 300 idle ones named like the command's own, and a busy agent."""
    idle = Holder("tests.idle_holder", "300", "kstat_t_sc_held")
    busy = Holder("tests.program_holder", "kstat_t_sc_out")
    try:
        yield idle, busy
    finally:
        busy.close()
        idle.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Path]:
    """A process outside the command's tree that takes a program handed to it."""
    path = tmp_path / "receiver.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.scoped_command", "receive", str(path), str(PACKETS)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield path
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()  # never handed a program: still waiting for one
            process.wait()


@pytest.mark.kernel
def test_run_reports_every_program_of_the_commands_tree_and_no_other(
    tmp_path: Path, tenants: tuple[Holder, Holder], receiver: Path
) -> None:
    _, busy = tenants
    pin = Path(f"/sys/fs/bpf/kstat_t_sc_{os.getpid()}")
    ids_file, output, ready = tmp_path / "ids.json", tmp_path / "r.json", tmp_path / "ready"
    command = [
        sys.executable,
        "-m",
        "tests.scoped_command",
        str(ids_file),
        str(receiver),
        str(pin),
        str(PACKETS),
    ]
    run = KstatProcess(["run", "-o", str(output), "--ready-file", str(ready), "--", *command], cwd=REPO)
    try:
        wait_until_ready(ready, run.process)
        busy.tell("send 0 500")  # another tenant's traffic, inside the window
        returncode, _ = run.finish()
    finally:
        pin.unlink(missing_ok=True)
    assert returncode == 0, run.stderr_lines
    ids = json.loads(ids_file.read_text())
    report = kstat.load_report(output)
    counted = {line.id: line.run_count for line in report.programs}
    expected = {ids[way]: PACKETS for way in ("held", "daemon", "socket", "handed")} | {ids["pinned"]: 0}
    assert counted == expected
    assert report.total_run_count == 4 * PACKETS
    assert report.filter == {"process_tree": run.process.pid}
    assert busy.said["ids"][0] not in counted


@pytest.mark.kernel
def test_run_with_the_host_scope_and_a_pid_reports_other_processes(tenants: tuple[Holder, Holder]) -> None:
    _, busy = tenants
    for scope in (["--scope", "host"], ["--pid", str(busy.said["pid"])]):
        done = run_kstat(["run", *scope, "--", sys.executable, "-c", "pass"])
        assert done.returncode == 0, done.stderr
        assert busy.said["ids"][0] in {
            line["id"] for line in json.loads(done.stdout)["program_stats"].values()
        }
    alone = run_kstat(["run", "--", sys.executable, "-c", "pass"])
    assert json.loads(alone.stdout)["program_stats"] == {}
    assert "--scope host reports every program" in alone.stderr


@pytest.mark.kernel
def test_the_tree_follows_forks_and_loads_that_exit_at_once() -> None:
    outsider = Holder("tests.program_holder", "kstat_t_sc_out", detached=True)
    tree = ProcessTree(os.getpid())
    try:
        assert tree.followed  # root has perf here; the fallback is tested below without it
        # A loader that exits the moment it has loaded its program: only the kernel's load
        # record says whose it was (the program goes with it; the record is kept a while).
        loader = "from kstat.testing.loader import SocketFilter; print(SocketFilter('kstat_t_sc_gone').id)"
        printed = subprocess.run(
            [sys.executable, "-c", loader], capture_output=True, text=True, check=True, cwd=REPO
        )
        gone_id = int(printed.stdout)
        tree.refresh()
        assert gone_id in {program_id for program_id, _ in tree._loads}
        with SocketFilter("kstat_t_sc_mine") as mine:
            # One pass, its programs' owners looked up: the tree's are the test's own.
            taker = SnapshotTaker(kstat.ProgramFilter(process_tree=os.getpid()), process_tree=tree)
            try:
                selected = {program.id for program in taker.take_blocking().snapshot.programs}
            finally:
                taker.close()
            assert mine.id in selected
        assert outsider.said["ids"][0] not in selected
    finally:
        tree.close()
        outsider.close()


def test_without_perf_the_tree_is_each_owners_ancestry(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    # 10 -> 11 -> 12 (the root's grandchild), 13 under init; a command name with ") (" in it.
    for pid, parent in ((10, 1), (11, 10), (12, 11), (13, 1)):
        (proc / str(pid) / "task" / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_bytes(f"{pid} (a) (b c) S {parent} 1 1\n".encode())
        children = [child for child, up in ((11, 10), (12, 11)) if up == pid]
        (proc / str(pid) / "task" / str(pid) / "children").write_text(" ".join(map(str, children)))
    assert parent_of(12, str(proc)) == 11
    assert parent_of(99, str(proc)) is None
    assert descendants(10, str(proc)) == {11, 12}
    tree = ProcessTree(10, proc=str(proc), follow_with_perf=False)
    assert not tree.followed
    assert tree._descends(12) and not tree._descends(13)


@pytest.mark.kernel
def test_the_demo_reports_its_own_programs(tenants: tuple[Holder, Holder], tmp_path: Path) -> None:
    output = tmp_path / "demo.json"
    done = run_kstat(["demo", "-duration", "300ms", "--rate", "1000", "-o", str(output)])
    assert done.returncode == 0, done.stderr
    names = {line.name for line in kstat.load_report(output).programs}
    assert names == {
        "kstat_demo_light_socket_filter",
        "kstat_demo_medium_socket_filter",
        "kstat_demo_heavy_socket_filter",
    }


def test_the_tags_are_the_kernels_hash_of_the_instructions() -> None:
    from kstat.abi import assembler as asm  # noqa: PLC0415

    # `printf '\xb7\0\0\0\0\0\0\0\x95\0\0\0\0\0\0\0' | sha256sum` (and sha1sum), first 8
    # bytes: the kernel tags `r0 = 0; exit` 59f4a931744dcdc6 (bpftool's feature probe, here).
    code = [asm.mov_imm(asm.R0, 0), asm.exit_()]
    raw = b"\xb7\x00\x00\x00\x00\x00\x00\x00\x95\x00\x00\x00\x00\x00\x00\x00"
    assert b"".join(bytes(instruction) for instruction in code) == raw
    assert program_tags(code) == {"59f4a931744dcdc6", "a04f5eef06a7f555"}
    # A map's fd is no part of the hash: two fds, one tag.
    assert program_tags([*asm.load_map(asm.R1, 5), *code]) == program_tags([*asm.load_map(asm.R1, 9), *code])


@pytest.mark.kernel
def test_kstats_own_programs_are_known_by_name_and_tag_not_by_name() -> None:
    reader = IteratorReader()
    try:
        own = reader._syscalls.read_fd(reader._iterator.program_fd)
        with SocketFilter(ITERATOR_NAME) as impostor:
            recogniser = OwnPrograms()
            assert recogniser.recognises(own)
            assert not recogniser.recognises(impostor.stats())
    finally:
        reader.close()


@pytest.mark.kernel
def test_other_kstats_programs_are_set_apart_in_every_report(tmp_path: Path) -> None:
    ready = tmp_path / "other.ready"
    other = KstatProcess(
        ["-duration", "30s", "--interval", "50ms", "-o", str(tmp_path / "o.json"), "--ready-file", str(ready)]
    )
    try:
        wait_until_ready(ready, other.process)
        other.wait_for_event(ITERATOR_TAKES_OVER)
        (iterator_id,) = [entry["program_id"] for entry in other.log if entry["event"] == ITERATOR_TAKES_OVER]
        with SocketFilter(ITERATOR_NAME) as impostor, LoopbackTarget(impostor) as target:
            with kstat.collect_sync(interval="100ms") as session:  # the whole host
                target.send(10)
                # Polling until the other kstat has read at least once inside the window.
                while (session.report_so_far().kstat_programs or NONE_APART).metrics.get("run_count", 0) == 0:
                    pass
            report = session.report
            impostor_id = impostor.id
    finally:
        other.signal(signal.SIGINT)
        other.finish()
    # The impostor is an ordinary program (its name proves nothing); the other kstat's iterator
    # is in no line and no total, but counted apart.
    assert report.program(impostor_id).run_count == 10
    assert iterator_id not in {line.id for line in report.programs}
    apart = report.kstat_programs
    assert apart is not None and apart.programs >= 1 and apart.metrics["run_count"] > 0
    assert report.total_run_count == sum(line.run_count for line in report.programs)
    assert kstat.report_from_dict(kstat.report_to_dict(report)).kstat_programs == apart


@pytest.mark.kernel
def test_an_unchanged_workload_passes_its_gate_beside_other_tenants(
    tmp_path: Path, tenants: tuple[Holder, Holder]
) -> None:
    """The e2e workflow on a shared host: the baseline's runs beside idle and busy tenants, the
    current's beside more of them and another kstat; runs interleaved, as two CI jobs share a
    host. The gate and the chart take every run's medians."""
    _, busy = tenants
    workload = [*KSTAT, "demo", "--workload-only", "-duration", "1s", "--linger", "300ms"]
    runs: dict[str, list[Path]] = {"base": [], "cur": []}
    crowd = Holder("tests.idle_holder", "500", "kstat_t_sc_crwd")
    other_ready = tmp_path / "other.ready"
    other = KstatProcess(
        [
            "-duration",
            "60s",
            "--interval",
            "50ms",
            "-o",
            str(tmp_path / "o.json"),
            "--ready-file",
            str(other_ready),
        ]
    )
    try:
        wait_until_ready(other_ready, other.process)
        for index in range(4):
            for side in ("base", "cur"):
                report = tmp_path / f"{side}-{index}.json"
                if side == "cur":
                    busy.tell("send 0 2000")  # the current side's neighbours are busier
                done = run_kstat(["run", "-o", str(report), "--", *workload])
                assert done.returncode == 0, done.stderr
                runs[side].append(report)
    finally:
        crowd.close()
        other.signal(signal.SIGINT)
        other.finish()
    for report in (*runs["base"], *runs["cur"]):
        # Kernel names: a host busy enough can unload a program before its full name is read.
        names = {line.kernel_name for line in kstat.load_report(report).programs}
        assert names == {"kstat_lite", "kstat_mid", "kstat_heavy"}
    gate = run_kstat(
        [
            "compare",
            "--format",
            "markdown",
            "--fail-on",
            "avg_runtime_ns:+10%",
            *map(str, runs["base"]),
            "--",
            *map(str, runs["cur"]),
        ]
    )
    assert gate.returncode == 0, gate.stdout
    assert "No threshold exceeded." in gate.stdout
    chart = tmp_path / "cmp.png"
    drawn = run_kstat(
        ["plot", *map(str, runs["cur"]), *(f"--baseline={path}" for path in runs["base"]), "-o", str(chart)]
    )
    assert drawn.returncode == 0, drawn.stderr
    assert chart.exists()
