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

import pytest
from attrs import evolve

import kstat
from kstat.analysis.charts import comparison_charts
from kstat.analysis.compare import compare, render_markdown
from kstat.core.model import PassClocks, ProgramChanges, ProgramStats, Reading, Snapshot
from kstat.core.report import KstatPrograms, Report
from kstat.engine.sampler import SnapshotBuilder, SnapshotTaker
from kstat.formats.report_json import report_from_dict, report_to_dict
from kstat.sources.iterator import ITERATOR_NAME, IteratorReader
from kstat.sources.own_programs import OwnPrograms, program_tags
from kstat.sources.process_tree import ProcessTree, descendants, parent_of
from kstat.testing.budget import BudgetExceeded, expect_program
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.builders import program, report_of, snapshot
from tests.holders import HolderProcess
from tests.kstat_process import KSTAT, KstatProcess, run_kstat, wait_until_ready
from tests.names import KT

REPO = Path(__file__).parents[1]
PACKETS = 300
ITERATOR_TAKES_OVER = "snapshots by BPF iterator; its own program is left out of the report"
NONE_APART = KstatPrograms(0, {})


@pytest.fixture
def tenants() -> Iterator[tuple[HolderProcess, HolderProcess]]:
    """Other tenants' programs: 300 idle ones named like the command's own, and a busy agent."""
    idle = HolderProcess("tests.idle_holder", "300", f"{KT}sc_held")
    busy = HolderProcess("tests.program_holder", f"{KT}sc_out")
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
    tmp_path: Path, tenants: tuple[HolderProcess, HolderProcess], receiver: Path
) -> None:
    _, busy = tenants
    pin = Path(f"/sys/fs/bpf/{KT}sc_{os.getpid()}")
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
def test_run_with_the_host_scope_and_a_pid_reports_other_processes(
    tenants: tuple[HolderProcess, HolderProcess],
) -> None:
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
    outsider = HolderProcess("tests.program_holder", f"{KT}sc_out", detached=True)
    tree = ProcessTree(os.getpid())
    try:
        assert tree.followed  # root has perf here; the fallback is tested below without it
        # A loader that exits the moment it has loaded its program: only the kernel's load
        # record says whose it was (the program goes with it; the record is kept a while).
        loader = f"from kstat.testing.loader import SocketFilter; print(SocketFilter('{KT}sc_gone').id)"
        printed = subprocess.run(
            [sys.executable, "-c", loader], capture_output=True, text=True, check=True, cwd=REPO
        )
        gone_id = int(printed.stdout)
        tree.refresh()
        assert gone_id in {program_id for program_id, _ in tree._loads}
        with SocketFilter(f"{KT}sc_mine") as mine:
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
def test_the_demo_reports_its_own_programs(
    tenants: tuple[HolderProcess, HolderProcess], tmp_path: Path
) -> None:
    output = tmp_path / "demo.json"
    done = run_kstat(["demo", "-duration", "300ms", "--rate", "1000", "-o", str(output)])
    assert done.returncode == 0, done.stderr
    names = {line.name for line in kstat.load_report(output).programs}
    assert names == {
        "kstat_demo_light_socket_filter",
        "kstat_demo_medium_socket_filter",
        "kstat_demo_heavy_socket_filter",
    }


@pytest.mark.kernel
def test_two_runs_at_once_each_report_their_own_commands_programs(tmp_path: Path) -> None:
    """Two `kstat run -- kstat demo` a moment apart (two test suites' gates on one host): the
    kernel wrote the demos' load records with pid 0 (6.18, every reader's rings alike), so one of
    the two judged its command's programs another tenant's and reported none, four pairs of
    four. A load record that names no task leaves the verdict to the program's holders."""
    workload = [
        sys.executable,
        "-m",
        "kstat",
        "demo",
        "--workload-only",
        "-duration",
        "400ms",
        "--rate",
        "1000",
    ]
    outputs = [tmp_path / "a.json", tmp_path / "b.json"]
    runs = [KstatProcess(["run", "-o", str(output), "--", *workload], cwd=REPO) for output in outputs]
    results = [run.finish() for run in runs]
    assert [returncode for returncode, _ in results] == [0, 0], [run.stderr_lines for run in runs]
    owners = []
    for output in outputs:
        report = kstat.load_report(output)
        assert {line.name for line in report.programs} == set(DEMO_NAMES), output
        owners.append({owner.pid for line in report.programs for owner in line.owners})
    # Each its own command's three programs (one demo process holds them), none of the other's.
    assert [len(found) for found in owners] == [1, 1] and owners[0] != owners[1]


DEMO_NAMES: tuple[str, ...] = (
    "kstat_demo_light_socket_filter",
    "kstat_demo_medium_socket_filter",
    "kstat_demo_heavy_socket_filter",
)


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
    tmp_path: Path, tenants: tuple[HolderProcess, HolderProcess]
) -> None:
    """The e2e workflow on a shared host: the baseline's runs beside idle and busy tenants, the
    current's beside more of them and another kstat; runs interleaved, as two CI jobs share a
    host. The gate and the chart take every run's medians."""
    _, busy = tenants
    workload = [*KSTAT, "demo", "--workload-only", "-duration", "1s", "--linger", "300ms"]
    runs: dict[str, list[Path]] = {"base": [], "cur": []}
    crowd = HolderProcess("tests.idle_holder", "500", f"{KT}sc_crwd")
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
            # Run counts are the workload's own (a rate of packets): any tenant's runs in a
            # total would move them. Average runtimes of a fresh JIT image each run differ by
            # up to a third between identical runs here, so their limit is wider than make
            # e2e's, which takes more runs.
            "--fail-on",
            "run_count:+5%",
            "--fail-on",
            "avg_runtime_ns:+50%",
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


# --- no kernel: the arithmetic, the report's field, the messages, the medians drawn ---------


def _apart(base: Snapshot, *others: ProgramStats) -> Snapshot:
    """`base` with `others` as other kstats' programs, set apart."""
    return evolve(base, kstat_programs=others)


def test_other_kstats_programs_are_counted_apart_from_their_load_to_their_last_sighting() -> None:
    # In the window from the start: 10 runs in it. Loaded inside it (load time after the first
    # read began): all its 7 runs, then gone; its last reading counts.
    early = program(90, 1_000, 100, name="kstat_prog_iter", load_time_ns=5)
    late_load = 10_000_000_000 + 1_500_000_000
    snapshots = [
        _apart(snapshot(0, 0.0, program(1, 0, 0)), early),
        _apart(
            snapshot(1, 1.0, program(1, 500, 5)),
            program(90, 1_400, 105, name="kstat_prog_iter", load_time_ns=5),
            program(91, 700, 7, name="kstat_prog_iter", load_time_ns=late_load),
        ),
        _apart(
            snapshot(2, 2.0, program(1, 900, 9)),
            program(90, 2_000, 110, name="kstat_prog_iter", load_time_ns=5),
        ),
    ]
    report = report_of(*snapshots)
    assert [line.id for line in report.programs] == [1]
    assert report.total_run_count == 9  # theirs are in no total
    apart = report.kstat_programs
    assert apart is not None
    assert (apart.programs, apart.metrics["run_count"], apart.metrics["runtime_ns"]) == (
        2,
        10 + 7,
        1_000 + 700,
    )
    assert (
        report_of(snapshot(0, 0.0, program(1, 0, 0)), snapshot(1, 1.0, program(1, 5, 5))).kstat_programs
        is None
    )


def test_kstat_programs_is_an_optional_field_of_the_report() -> None:
    with_them = report_of(
        _apart(snapshot(0, 0.0, program(1, 0, 0)), program(90, 0, 0, name="kstat_prog_iter")),
        _apart(snapshot(1, 1.0, program(1, 5, 5)), program(90, 300, 3, name="kstat_prog_iter")),
    )
    written = report_to_dict(with_them)
    assert written["kstat_programs"]["programs"] == 1 and written["kstat_programs"]["run_count"] == 3
    assert report_from_dict(written).kstat_programs == with_them.kstat_programs
    del written["kstat_programs"]
    assert report_from_dict(written).kstat_programs is None  # as every older report reads


def reading(
    *programs: ProgramStats,
    new: tuple[int, ...] = (),
    moved: tuple[tuple[ProgramStats, ProgramStats], ...] = (),
    vanished: tuple[ProgramStats, ...] = (),
) -> Reading:
    """A counter read of `programs`, and its changes: the new by id, the moved as (before, after)."""
    by_id = {found.id: found for found in programs}
    clocks = PassClocks(1_000, 2_000, 3_000, 4_000, 5_000)
    return Reading(programs, ProgramChanges([by_id[found] for found in new], moved, vanished), clocks)


class _ById:
    """Recognises the programs whose ids it is given (stands in for name and tag)."""

    def __init__(self, *ids: int) -> None:
        self.ids = ids

    def recognises(self, program: ProgramStats) -> bool:
        return program.id in self.ids


def test_the_snapshot_sets_other_kstats_programs_apart_from_programs_and_changes() -> None:
    mine, iterator = program(1, 0, 0), program(7, 100, 1, name="kstat_prog_iter")
    builder = SnapshotBuilder(own_programs=_ById(7), online_cpus=2)  # type: ignore[arg-type]
    first = builder.build(reading(mine, iterator, new=(1, 7)))
    assert [found.id for found in first.snapshot.programs] == [1]
    assert [found.id for found in first.snapshot.kstat_programs] == [7]
    mine_later, iterator_later = program(1, 5, 5), program(7, 300, 3, name="kstat_prog_iter")
    moved = builder.build(
        reading(mine_later, iterator_later, moved=((mine, mine_later), (iterator, iterator_later)))
    )
    assert moved.delta is not None and [change.last.id for change in moved.delta.changes] == [1]
    assert moved.snapshot.kstat_programs == (iterator_later,)
    gone = builder.build(reading(mine_later, vanished=(iterator_later,)))
    assert gone.snapshot.kstat_programs == ()
    assert gone.delta is not None and gone.delta.changes == ()


def test_a_missing_program_is_told_with_a_few_close_names_not_all() -> None:
    lines = [program(index + 1, 0, 0, name=f"tenant_{index:05}") for index in range(2_000)]
    report = report_of(snapshot(0, 0.0, *lines), snapshot(1, 1.0, *lines))
    with pytest.raises(BudgetExceeded) as failed:
        expect_program(report, "tenant_00100x")
    message = str(failed.value)
    assert message.startswith("no program 'tenant_00100x' in the report; 2,000 programs in the report")
    assert "the closest names: tenant_00100, " in message and len(message) < 300
    twins = report_of(
        snapshot(0, 0.0, program(5001, 0, 0, name="a"), program(5002, 0, 0, name="a"), *lines[:9])
    )
    with pytest.raises(BudgetExceeded, match=r"2 programs are named 'a'.*ids of those named 'a': 5001, 5002"):
        expect_program(twins, "a")


def test_compare_lists_a_few_one_sided_programs_and_says_what_other_kstats_cost() -> None:
    base = report_of(
        snapshot(0, 0.0, *(program(index, 0, 0, name=f"gone_{index}") for index in range(30))),
        snapshot(1, 1.0, *(program(index, index, index, name=f"gone_{index}") for index in range(30))),
    )
    current = report_of(
        _apart(snapshot(0, 0.0), program(90, 0, 0, name="kstat_prog_iter")),
        _apart(snapshot(1, 1.0), program(90, 10_000_000, 20, name="kstat_prog_iter")),
    )
    markdown = render_markdown(compare(base, current), [])
    (only,) = [line for line in markdown.splitlines() if line.startswith("Only in baseline: ")]
    assert only.endswith("and 20 more (--format json lists them all)")
    assert only.count("gone_") == 10 and "gone_0 " not in only  # those that ran first
    assert (
        "Other kstat instances' own programs, in no row or total: baseline none, current 1 (1% of one CPU)."
        in markdown
    )


def test_the_charts_of_several_runs_are_their_medians() -> None:
    def run(runtime_ns: int) -> Report:
        return report_of(
            snapshot(0, 0.0, program(1, 0, 0, name="p")),
            snapshot(1, 1.0, program(1, runtime_ns, 100, name="p")),
        )

    baselines = [run(10_000), run(30_000), run(20_000)]
    currents = [run(40_000), run(60_000), run(200_000)]
    charts = comparison_charts(currents, baselines)
    try:
        # The medians: 200 -> 600 ns a run, as `kstat compare` of the same runs has them.
        assert "average runtime per run 200 -> 600 ns (+200.0%)" in charts.summary
        assert "medians of 3 and 3 runs" in charts.figures["overview"].get_suptitle()
    finally:
        charts.figures.clear()
