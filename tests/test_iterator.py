"""Snapshots by kstat's BPF iterator: field for field what the syscalls give, exact counts,
programs coming and going mid-read, and the syscalls as the fallback."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import trio

import kstat
from kstat.abi.bpf import enable_run_time_stats
from kstat.abi.btf import KernelLayout
from kstat.engine import sampler
from kstat.errors import FeatureMissing, KstatError
from kstat.sources import program_iterator
from kstat.sources.iterator import RECORD, IteratorReader, KernelOffsets, possible_cpus
from kstat.sources.syscalls import ProgramReader
from kstat.testing.loader import SocketFilter
from tests.kstat_process import run_kstat
from tests.names import KT
from tests.windows import LoadFilter

pytestmark = pytest.mark.kernel


@pytest.fixture
def iterator_here() -> None:
    """Skips where this kernel lacks what the iterator needs: there kstat snapshots by syscalls,
    which test_the_syscalls_are_the_fallback checks."""
    try:
        IteratorReader().close()
    except FeatureMissing as missing:
        pytest.skip(f"kstat snapshots by syscalls here: {missing}")


def test_offsets_come_from_this_kernels_btf() -> None:
    offsets = KernelOffsets.of_running_kernel()
    layout = KernelLayout(Path("/sys/kernel/btf/vmlinux").read_bytes())
    assert offsets.prog_aux == layout.offset("bpf_prog", "aux")
    assert (offsets.stats_count, offsets.stats_time) == (0, 8)  # u64_stats_t cnt, nsecs
    assert RECORD.size == 64
    with pytest.raises(FeatureMissing, match=r"lacks struct bpf_prog\.no_such_field") as missing:
        layout.offset("bpf_prog", "no_such_field")
    assert missing.value.feature == "struct bpf_prog.no_such_field"
    assert possible_cpus() == sorted(set(possible_cpus()))


@pytest.mark.usefixtures("iterator_here")
def test_idle_programs_read_the_same_by_iterator_and_by_syscalls(load_filter: LoadFilter) -> None:
    """Field by field: id, type, names, tag, load time, counters, footprint."""
    targets = [load_filter(f"{KT}it{index}", index * 10) for index in range(5)]
    stats = enable_run_time_stats()
    try:
        for count, target in enumerate(targets):
            target.send(count * 7)
    finally:
        os.close(stats)  # idle from here: both readers see the same counters
    ours = {target.program.id for target in targets}
    iterator = IteratorReader()
    try:
        by_iterator = {program.id: program for program in iterator.read_pass()[0] if program.id in ours}
    finally:
        iterator.close()
    # The iterator reads counters; names and footprint are the details stage's, by syscalls.
    assert all(not program.facts.described for program in by_iterator.values())
    ProgramReader().describe_all(list(by_iterator.values()))
    by_syscalls = {program.id: program for program in ProgramReader().read_all() if program.id in ours}
    assert by_iterator == by_syscalls and len(by_iterator) == 5
    assert [by_iterator[target.program.id].run_count for target in targets] == [0, 7, 14, 21, 28]


@pytest.mark.usefixtures("iterator_here")
@pytest.mark.parametrize("per_cpu", [False, True])
def test_plain_loads_and_probe_reads_write_the_same_records(load_filter: LoadFilter, per_cpu: bool) -> None:
    """The iterator as this kernel takes it (plain loads where it allows them) and as a kernel
    that refuses them gets it (every field by bpf_probe_read_kernel): byte for byte the same
    records of programs that ran, the name's 15 characters and the tag included."""
    targets = [load_filter(f"{KT}ld{index}_fifteen"[:15], index * 10) for index in range(3)]
    stats = enable_run_time_stats()
    try:
        for count, target in enumerate(targets):
            target.send(count * 5 + 1)
    finally:
        os.close(stats)  # idle from here: both walks see the same counters
    offsets, cpu_offsets, _ = program_iterator.running_kernel_offsets()
    direct = program_iterator.ProgramIterator(per_cpu=per_cpu)
    probing = program_iterator.LinkedIterator(
        program_iterator.iterator_program(offsets, cpu_offsets, per_cpu=per_cpu),
        f"{KT}probing",
        offsets.attach_btf_id,
    )
    try:
        walks = [direct.read(), probing.read()]
    finally:
        direct.close()
        probing.close()
    size, header = direct.record_size, direct.record_size - RECORD.size
    ours = {target.program.id for target in targets}
    records = [
        {
            RECORD.unpack_from(walk, start + header)[0]: walk[start : start + size]
            for start in range(0, len(walk) - size + 1, size)
            if RECORD.unpack_from(walk, start + header)[0] in ours
        }
        for walk in walks
    ]
    assert records[0] == records[1] and len(records[0]) == 3
    names = [RECORD.unpack_from(records[0][target.program.id], header)[4] for target in targets]
    assert names[1].rstrip(b"\0") == f"{KT}ld1_fifteen"[:15].encode()
    if offsets.rdonly_cast is not None:  # 6.2+: every field by a plain load
        assert direct.reads_by == program_iterator.BY_LOADS_AND_CAST


@pytest.mark.usefixtures("iterator_here")
def test_the_iterator_leaves_itself_out(load_filter: LoadFilter) -> None:
    load_filter(f"{KT}itself")
    iterator = IteratorReader()
    try:
        programs, _ = iterator.read_pass()
        assert iterator.own_id not in {program.id for program in programs}
        assert iterator.own_id in {program.id for program in ProgramReader().read_all()}
    finally:
        iterator.close()


@pytest.mark.usefixtures("iterator_here")
def test_counts_are_exact_through_a_window_by_iterator(load_filter: LoadFilter, tmp_path: Path) -> None:
    target = load_filter(f"{KT}itwin")

    async def window() -> kstat.Report:
        # The iterator insisted on: 'auto' starts by syscalls and lets the iterator take over
        # once it is built, which under emulation (tests/kernels) may be after a short window.
        async with kstat.collect(
            interval="50ms", select=kstat.ProgramFilter(name=f"^{KT}itwin$"), snapshot_method="iterator"
        ) as session:
            for burst in (100, 250, 0, 400):
                await trio.to_thread.run_sync(target.send, burst)
                await trio.sleep(0.06)
        return session.report

    report = trio.run(window)
    assert report.snapshot_method == "iterator"
    assert report.program(f"{KT}itwin").run_count == 750


@pytest.mark.usefixtures("iterator_here")
def test_programs_loading_and_unloading_during_the_reads() -> None:
    """A churn of programs while passes run: each pass is consistent with the one before
    (whatever is new was not there, whatever vanished was), and nothing raises."""
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with SocketFilter(f"{KT}itchurn"):
                pass

    iterator = IteratorReader()
    worker = threading.Thread(target=churn)
    worker.start()
    try:
        previous: set[int] = set()
        for _ in range(200):
            programs, changes = iterator.read_pass()
            now = {program.id for program in programs}
            new = {program.id for program in changes.new}
            assert new <= now and not new & previous
            assert {program.id for program in changes.vanished} <= previous
            assert not {program.id for program in changes.vanished} & now
            previous = now
    finally:
        stop.set()
        worker.join()
        iterator.close()


def test_the_syscalls_are_the_fallback(monkeypatch: pytest.MonkeyPatch, load_filter: LoadFilter) -> None:
    def unavailable() -> IteratorReader:
        raise OSError(2, "No such file or directory: '/sys/kernel/btf/vmlinux'")

    monkeypatch.setattr(sampler, "IteratorReader", unavailable)
    reader, method = sampler.open_reader("auto")
    assert (type(reader), method) == (ProgramReader, "syscalls")
    with pytest.raises(KstatError, match=r"cannot snapshot by BPF iterator on this kernel: .*vmlinux"):
        sampler.open_reader("iterator")


@pytest.mark.usefixtures("iterator_here")
def test_the_method_is_chosen_on_the_command_line(load_filter: LoadFilter) -> None:
    load_filter(f"{KT}itcli")
    for method in ("syscalls", "iterator"):
        completed = run_kstat(
            [
                "-duration",
                "200ms",
                "--interval",
                "100ms",
                "--name",
                f"^{KT}itcli$",
                "--snapshot-method",
                method,
            ]
        )
        assert completed.returncode == 0, completed.stderr
        report = json.loads(completed.stdout)
        assert report["snapshot_method"] == method
        assert list(report["program_stats"]) == [f"{KT}itcli"]
    logged = run_kstat(["-duration", "100ms", "--interval", "50ms", "--name", f"^{KT}itcli$"]).stderr
    assert "snapshots by BPF iterator; its own program is left out of the report" in logged


def test_the_library_chooses_the_method_too(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}itlib")
    with kstat.collect_sync(interval="50ms", snapshot_method="syscalls") as session:
        target.send(33)
    assert session.report.snapshot_method == "syscalls"
    assert session.report.program(f"{KT}itlib").run_count == 33
    with pytest.raises(kstat.UsageError, match="snapshot_method must be one of auto, iterator, syscalls"):
        kstat.collect_sync(snapshot_method="fast").__enter__()


def test_a_walk_longer_than_the_buffers_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """One readv fills every buffer it is given (up to IOV_MAX of them): a walk longer than
    that takes more than one call, each into the buffers after the last one's, and comes back
    whole and in order all the same; the buffers grow to hold it, for the next walks."""
    from kstat.sources import walks  # noqa: PLC0415

    held = [SocketFilter(f"{KT}walk") for _ in range(200)]
    reader = IteratorReader()
    try:
        whole = reader._iterator.read()
        assert len(whole) >= 200 * RECORD.size > 2 * 4096
        monkeypatch.setattr(walks, "MOST_PER_CALL", 2)
        reader._iterator._buffers._buffers = [bytearray(4096)]
        in_pieces = reader._iterator.read()
        assert len(reader._iterator._buffers._buffers) * 4096 >= len(in_pieces)
        ids = memoryview(in_pieces).cast("I")[:: RECORD.size // 4].tolist()
        assert ids == sorted(ids)  # in the kernel's order, no piece lost or repeated
        assert {program.id for program in held} <= set(ids)
    finally:
        reader.close()
        for program in held:
            program.close()


def test_the_last_walk_is_let_go_once_the_reader_is_closed_and_every_walk_decoded(
    iterator_here: None, load_filter: LoadFilter
) -> None:
    """Each walk is compared with the one before it, so the reader keeps the last: until it is
    closed and the walks the clock took before are decoded (issue 28's peak: 1 MB at 10,000)."""
    kept = load_filter(f"{KT}kept")
    reader = IteratorReader()
    try:
        first, second = reader.read_walk(), reader.read_walk()
        reader.decode(first)
        assert reader._previous is not None
    finally:
        reader.close()
    # Closed with a walk still to decode: that one is still compared with the one before.
    assert reader._previous is not None
    reading = reader.decode(second)
    assert reader._previous is None
    assert kept.program.id in {program.id for program in reading.programs}
