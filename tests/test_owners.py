"""Owners by kstat's task-file iterator and by /proc: the same answer for real processes holding
real programs and links, processes exiting mid-walk, the incremental walk, and the fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kstat._logging import configure_logging
from kstat.abi.btf import KernelLayout, single_function_btf
from kstat.core.model import ProgramOwner, Workload
from kstat.errors import FeatureMissing, KstatError
from kstat.sources import owners as owners_module
from kstat.sources.attribution import Attributor
from kstat.sources.iterator import VMLINUX_BTF
from kstat.sources.owners import IteratorOwners, ProcWalk, open_owner_source, program_owners
from kstat.sources.syscalls import ProgramReader
from kstat.sources.task_files import TaskFileIterator, TaskFileOffsets
from tests.holders import HolderProcess, program_holder
from tests.names import KT

pytestmark = pytest.mark.kernel

REPO = Path(__file__).parents[1]


Owners = dict[int, tuple[ProgramOwner, ...]]


def found_by_every_read(expected: Owners, *reads: Callable[[], Owners], attempts: int = 20) -> None:
    """Every read gives `expected`, in one attempt of several: another kstat on the host (other
    tests', other tenants') opens each program it meets for the first time by id, for an
    instant, and is one more owner while it does. A read that is wrong every time fails."""
    found: list[Owners] = []
    for _ in range(attempts):
        found = [read() for read in reads]
        if all(each == expected for each in found):
            return
    assert found == [expected] * len(reads)


@pytest.fixture
def holder() -> Iterator[Callable[..., HolderProcess]]:
    started: list[HolderProcess] = []

    def start(*names: str) -> HolderProcess:
        started.append(program_holder(*names))
        return started[-1]

    yield start
    for each in started:
        each.close()


@pytest.fixture
def iterator_owners() -> Iterator[IteratorOwners]:
    source = IteratorOwners()
    yield source
    source.close()


def test_offsets_and_the_kernels_file_operations_are_found_on_this_kernel() -> None:
    offsets = TaskFileOffsets.of_running_kernel()
    layout = KernelLayout(VMLINUX_BTF.read_bytes())
    assert offsets.link_program == layout.offset("bpf_link", "prog")
    assert offsets.task_comm == layout.offset("task_struct", "comm")
    iterator = TaskFileIterator()
    try:
        found = {"bpf_prog_fops": iterator.program_operations, "bpf_link_fops": iterator.link_operations}
    finally:
        iterator.close()
    assert found["bpf_prog_fops"] != found["bpf_link_fops"]
    # Where kallsyms shows data symbols (CONFIG_KALLSYMS_ALL, addresses not hidden), it agrees.
    listed = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        address, _, name = line.split()[:3]
        if name in found and int(address, 16):
            listed[name] = int(address, 16)
    assert all(found[name] == address for name, address in listed.items())


def test_the_iterator_finds_the_owners_the_proc_walk_finds(
    holder: Callable[..., HolderProcess], iterator_owners: IteratorOwners
) -> None:
    """Programs held by fds, one by three fds of one process, one by two processes, one only
    through a link: the iterator, the full walk and the incremental walk say the same, and
    what the holders say they hold."""
    first = holder(f"{KT}own0", f"{KT}own1")
    second = holder(f"{KT}own2")
    first.ask("dup 1")
    first.ask("dup 1")
    second.ask(f"open {first.ids[0]}")
    linked = int(first.ask(f"link {KT}ownl"))
    expected = {
        first.ids[0]: tuple(sorted((first.owner(), second.owner()), key=lambda owner: owner.pid)),
        first.ids[1]: (first.owner(),),
        second.ids[0]: (second.owner(),),
        linked: (first.owner(),),
    }
    wanted = set(expected)
    found_by_every_read(
        expected,
        lambda: iterator_owners.owners(wanted=wanted),
        lambda: program_owners(wanted=wanted),
        lambda: ProcWalk().owners(wanted=wanted),
    )

    iterator = TaskFileIterator()
    try:
        ours = {first.pid, second.pid}
        held = [file for file in iterator.held_files() if file.program_id in wanted and file.pid in ours]
    finally:
        iterator.close()
    by_program = {
        program_id: [file for file in held if file.program_id == program_id] for program_id in wanted
    }
    assert [(file.pid, file.via_link) for file in by_program[linked]] == [(first.pid, True)]
    assert len([file for file in by_program[first.ids[1]] if file.pid == first.pid]) == 3
    for file in held:  # what /proc says of each fd the iterator reports
        target = os.readlink(f"/proc/{file.pid}/fd/{file.fd}")
        assert target == ("anon_inode:bpf_link" if file.via_link else "anon_inode:bpf-prog")
        assert file.comm.decode() == Path(f"/proc/{file.pid}/comm").read_text().strip()


def test_every_program_held_on_the_host_has_the_same_owners_both_ways(
    holder: Callable[..., HolderProcess], iterator_owners: IteratorOwners
) -> None:
    """The whole host, workloads included: programs other tests and tenants load meanwhile may
    differ between two reads, so the two are compared on what both saw held throughout."""
    holder(f"{KT}host0", f"{KT}host1")

    def unit(pid: int) -> Workload:
        return Workload(unit=f"pid-{pid}.service")

    before = program_owners(workload_of=unit)
    by_iterator = iterator_owners.owners(workload_of=unit)
    after = program_owners(workload_of=unit)
    steady = {program_id for program_id, owners in before.items() if after.get(program_id) == owners}
    assert steady, "no program held throughout"
    assert {program_id: by_iterator.get(program_id) for program_id in steady} == {
        program_id: before[program_id] for program_id in steady
    }
    assert all(
        owner.workload.unit == f"pid-{owner.pid}.service"
        for owners in by_iterator.values()
        for owner in owners
    )


def test_a_process_that_exits_mid_walk_is_left_out_and_the_walk_goes_on(
    holder: Callable[..., HolderProcess], monkeypatch: pytest.MonkeyPatch, iterator_owners: IteratorOwners
) -> None:
    staying, leaving = holder(f"{KT}stay"), holder(f"{KT}leave")
    wanted = {*staying.ids, *leaving.ids}
    real_readlink = os.readlink  # the walk's: it calls os.readlink for each fd

    def readlink_after_the_exit(path: str) -> str:
        # The walk has listed the leaving process's fds; it exits before their first readlink.
        if path.startswith(f"/proc/{leaving.pid}/fd/") and leaving.process.poll() is None:
            leaving.process.kill()
            leaving.process.wait(10)
        return real_readlink(path)

    monkeypatch.setattr(os, "readlink", readlink_after_the_exit)
    found = program_owners(wanted=wanted)
    assert leaving.process.returncode == -signal.SIGKILL
    monkeypatch.undo()
    # Who else held the programs at that instant is another kstat's business (see above).
    assert {program_id: _of(owners, staying, leaving) for program_id, owners in found.items()} == {
        staying.ids[0]: (staying.owner(),)
    }
    found_by_every_read({staying.ids[0]: (staying.owner(),)}, lambda: iterator_owners.owners(wanted=wanted))


def _of(owners: tuple[ProgramOwner, ...], *holders: HolderProcess) -> tuple[ProgramOwner, ...]:
    pids = {holder.pid for holder in holders}
    return tuple(owner for owner in owners if owner.pid in pids)


def test_an_exited_process_not_yet_reaped_holds_nothing_either_way(
    holder: Callable[..., HolderProcess], iterator_owners: IteratorOwners
) -> None:
    staying, exiting = holder(f"{KT}stay2"), holder(f"{KT}zombie")
    os.kill(exiting.pid, signal.SIGKILL)
    # A zombie until its parent (this test) waits for it: still in /proc, its fds closed.
    while Path(f"/proc/{exiting.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        os.sched_yield()
    wanted = {*staying.ids, *exiting.ids}
    found_by_every_read(
        {staying.ids[0]: (staying.owner(),)},
        lambda: iterator_owners.owners(wanted=wanted),
        lambda: program_owners(wanted=wanted),
        lambda: ProcWalk().owners(wanted=wanted),
    )


_CHURN = f"""
import os, sys
from kstat.testing.loader import SocketFilter
print("ready", flush=True)
while True:
    child = os.fork()
    if child == 0:
        SocketFilter("{KT}churn")
        os._exit(0)
    os.waitpid(child, 0)
"""


def test_owners_stay_exact_while_processes_holding_programs_come_and_go(
    holder: Callable[..., HolderProcess], iterator_owners: IteratorOwners
) -> None:
    """Processes that load a program and exit, hundreds a second, while the iterator walks:
    the steady holder is found every time, and (but for another kstat's instant, see above)
    alone."""
    steady = holder(f"{KT}steady0", f"{KT}steady1")
    churn = subprocess.Popen([sys.executable, "-c", _CHURN], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert churn.stdout is not None and churn.stdout.readline() == "ready\n"
        expected = {program_id: (steady.owner(),) for program_id in steady.ids}
        exact = 0
        for _ in range(100):
            found = iterator_owners.owners(wanted=set(steady.ids))
            assert {program_id: _of(owners, steady) for program_id, owners in found.items()} == expected
            exact += found == expected
        assert exact >= 90
    finally:
        churn.kill()
        churn.wait(10)


def test_the_incremental_walk_walks_only_new_and_changed_processes(
    holder: Callable[..., HolderProcess],
) -> None:
    unchanged, changing = holder(f"{KT}inc0"), holder(f"{KT}inc1")
    walk = ProcWalk()
    wanted = {*unchanged.ids, *changing.ids}

    def owners_among_holders() -> Owners:
        # Who else held the programs at that instant is another kstat's business (see above).
        held = walk.owners(wanted=wanted)
        return {program_id: _of(owners, unchanged, changing, newcomer) for program_id, owners in held.items()}

    newcomer = unchanged  # until it comes
    expected = {unchanged.ids[0]: (unchanged.owner(),), changing.ids[0]: (changing.owner(),)}
    assert owners_among_holders() == expected
    assert {str(unchanged.pid), str(changing.pid)} <= walk.walked_last

    changing.ask("dup 0")  # one more fd: walked again
    assert owners_among_holders() == expected
    assert str(changing.pid) in walk.walked_last
    assert str(unchanged.pid) not in walk.walked_last

    # A new program at the very fd number the first was held at (the dup holds that one still):
    # the fd count is as it was, so the process looks unchanged; the new program found
    # nowhere, every process is walked again.
    swapped = int(changing.ask("swap 0"))
    wanted.add(swapped)
    expected[swapped] = (changing.owner(),)
    assert owners_among_holders() == expected
    assert str(unchanged.pid) in walk.walked_last  # the walk of every process

    newcomer = holder(f"{KT}inc2")
    wanted.update(newcomer.ids)
    expected[newcomer.ids[0]] = (newcomer.owner(),)
    assert owners_among_holders() == expected
    assert str(newcomer.pid) in walk.walked_last
    assert str(unchanged.pid) not in walk.walked_last


def test_a_kernel_without_the_task_file_iterator_or_btf_says_so_by_feature(tmp_path: Path) -> None:
    without, _ = single_function_btf("not_an_iterator")
    (tmp_path / "vmlinux").write_bytes(without)
    with pytest.raises(FeatureMissing, match=r"lacks iter/task_file \(since Linux 5.8\)") as missing:
        TaskFileOffsets.of_running_kernel(tmp_path / "vmlinux")
    assert (missing.value.feature, missing.value.since) == ("iter/task_file", "5.8")
    with pytest.raises(FeatureMissing, match="BTF of the kernel"):
        TaskFileIterator(tmp_path / "no-such-btf")


def test_the_proc_walk_is_the_fallback(
    holder: Callable[..., HolderProcess], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    held = holder(f"{KT}fallbk")

    def lacking() -> IteratorOwners:
        raise FeatureMissing("iter/task_file", "5.8")

    monkeypatch.setattr(owners_module, "IteratorOwners", lacking)
    configure_logging(verbose=False)  # to the stream capsys captures
    source = open_owner_source()
    assert (type(source), source.method, source.own_program_ids) == (ProcWalk, "proc", frozenset())
    assert source.owners(wanted=set(held.ids)) == {held.ids[0]: (held.owner(),)}
    logged = [line for line in capsys.readouterr().err.splitlines() if "owners by" in line]
    assert len(logged) == 1
    assert "owners by /proc walk" in logged[0] and "lacks iter/task_file (since Linux 5.8)" in logged[0]
    with pytest.raises(
        KstatError, match=r"cannot find owners by BPF iterator on this kernel: .*iter/task_file"
    ):
        open_owner_source("iterator")
    assert type(open_owner_source("proc")) is ProcWalk


def test_the_iterator_is_the_default_and_leaves_its_own_program_out(
    holder: Callable[..., HolderProcess],
) -> None:
    held = holder(f"{KT}deflt")
    source = open_owner_source()
    try:
        assert source.method == "iterator"
        (own,) = source.own_program_ids
        assert ProgramReader().read_one(own) is not None
        assert source.owners(wanted={*held.ids, own})[own] == (ProgramOwner(os.getpid(), _own_command()),)
    finally:
        source.close()
    assert ProgramReader().read_one(own) is None  # unloaded with the source


def _own_command() -> str:
    return Path("/proc/self/comm").read_text().strip()


def test_the_attributor_takes_its_owners_from_either_source(
    holder: Callable[..., HolderProcess], iterator_owners: IteratorOwners
) -> None:
    held = holder(f"{KT}attr0", f"{KT}attr1")
    programs = [program for program in ProgramReader().read_all() if program.id in held.ids]

    def owners_by(attributor: Attributor) -> Callable[[], Owners]:
        def owners() -> Owners:
            details = attributor.details_of_new(programs)
            return {identity.id: found.owners for identity, found in details.items()}

        return owners

    found_by_every_read(
        {program_id: (held.owner(),) for program_id in held.ids},
        owners_by(Attributor()),
        owners_by(Attributor(owner_source=iterator_owners)),
    )
