"""The counter clock in a process of its own (kstat.engine.clock_process), with a real iterator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kstat.abi.bpf import enable_run_time_stats
from kstat.engine import clock_process
from kstat.engine.clock import Flag, Slip, start_thread
from kstat.engine.clock_process import ProcessClock
from kstat.engine.sampler import CounterRead
from kstat.sources.iterator import IteratorReader
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.names import KT


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.01)


@pytest.mark.kernel
def test_the_clocks_process_reads_on_its_ticks_and_stops_with_a_last_read() -> None:
    """Its walks arrive in order, each with its own stamps, decode here to exact counts (the
    runs between two reads are those sent between them), and a stop ends it with one last
    read: its process gone."""
    stats = enable_run_time_stats()
    target = LoopbackTarget(SocketFilter(f"{KT}clkproc"))
    program_id = target.program.id
    reader = IteratorReader()
    got: list[tuple[CounterRead, bool, Slip | None]] = []
    errors: list[BaseException] = []
    finished = threading.Event()
    clock = ProcessClock(
        reader,
        frozenset(),
        lambda read, last, slip: got.append((read, last, slip)),
        interval_ns=50_000_000,
        duration_ns=None,
        on_error=errors.append,
        on_finished=finished.set,
    )
    try:
        clock.start()
        _until(lambda: len(got) >= 2, "read twice")
        sent_after = len(got)
        target.send(7)
        _until(lambda: len(got) >= sent_after + 2, "read after the packets")
        clock.stop()
        clock.join()
    finally:
        clock.stop()
        clock.join()
        reader.close()
        target.close()
        target.program.close()
        os.close(stats)
    assert not errors
    assert finished.is_set()
    assert [last for _, last, _ in got] == [False] * (len(got) - 1) + [True]
    starts = [read.clocks.monotonic_start_ns for read, _, _ in got]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    runs = [
        program.run_count
        for read, _, _ in got
        for program in read.reading().programs
        if program.id == program_id
    ]
    assert len(runs) == len(got)
    assert runs[-1] - runs[0] == 7
    assert clock._process is not None and clock._process.returncode == 0


class _NotAnIterator:
    """A reader whose link fd is no iterator's link: every walk of it fails."""

    own_program_ids: frozenset[int] = frozenset()

    def __init__(self, fd: int) -> None:
        self.link_fd = fd


@pytest.mark.root
def test_a_walk_that_fails_in_the_clocks_process_fails_the_window_in_its_words() -> None:
    errors: list[BaseException] = []
    finished = threading.Event()
    not_a_link = os.open("/dev/null", os.O_RDONLY)
    clock = ProcessClock(
        _NotAnIterator(not_a_link),  # type: ignore[arg-type]
        frozenset(),
        lambda read, last, slip: None,
        interval_ns=50_000_000,
        duration_ns=None,
        on_error=errors.append,
        on_finished=finished.set,
    )
    try:
        clock.start()
        clock.join()
    finally:
        os.close(not_a_link)
    assert finished.is_set()
    assert len(errors) == 1
    assert "the counter clock's process failed: BpfError: bpf(BPF_ITER_CREATE) failed" in str(errors[0])


@pytest.mark.kernel
def test_the_clocks_process_runs_this_kstat_not_one_planted_where_it_was_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kstat runs as root, often from a directory others can write: a `kstat` package planted
    in the working directory is never what its clock's process imports."""
    planted = tmp_path / "ran"
    for package in ("kstat", "kstat/engine"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"open({str(planted)!r}, 'w').close()\n")
    (tmp_path / "kstat/engine/_clock_child.py").write_text(f"open({str(planted)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")  # as `python -c` would have it
    stats = enable_run_time_stats()
    reader = IteratorReader()
    got: list[bool] = []
    errors: list[BaseException] = []
    clock = ProcessClock(
        reader,
        frozenset(),
        lambda read, last, slip: got.append(last),
        interval_ns=50_000_000,
        duration_ns=150_000_000,
        on_error=errors.append,
        on_finished=lambda: None,
    )
    try:
        clock.start()
        clock.join()
    finally:
        reader.close()
        os.close(stats)
    assert not errors
    assert got and got[-1]
    assert not planted.exists()


def test_the_clocks_process_imports_only_what_the_walk_and_the_clock_need() -> None:
    """Its memory is kstat's cost too (issue 28's peak RSS counts it): no attrs, no model or
    decoder, no json, none of the ABI but the syscall, not even the socket module or typing, as
    its interpreter starts it (-I -S, kstat's path given)."""
    program = (
        "import sys; sys.path[:] = sys.argv[1:]; import kstat.engine._clock_child; "
        "print(' '.join(sorted(sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program, *clock_process._import_path()],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = completed.stdout.split()
    assert "kstat.sources.walks" in imported
    assert "kstat.abi.syscall" in imported
    heavy = (
        "attr",
        "attrs",
        "enum",
        "json",
        "kstat.abi.bpf",
        "kstat.abi.btf",
        "kstat.abi.structs",
        "kstat.core",
        "kstat.sources.iterator",
        "kstat.sources.program_iterator",
        "kstat.formats",
        "socket",
        "structlog",
        "trio",
        "typing",
        # Its thread and stop are _thread's: threading and contextlib bring collections and
        # functools (0.6 MB of this process).
        "threading",
        "contextlib",
        "collections",
    )
    assert [name for name in imported if name.split(".")[0] in heavy or name.startswith(heavy)] == []


def test_the_clocks_flag_waits_until_set_and_stays_set_and_its_thread_is_joined() -> None:
    """The clock's stop and join (`_thread`'s locks: no threading in the clock's process)."""
    stop = Flag()
    assert not stop.is_set()
    assert not stop.wait(0)
    ran: list[str] = []

    def run() -> None:
        ran.append("ran")
        stop.set()

    finished = start_thread(run)
    assert stop.wait(None)
    assert finished.wait(None)
    assert ran == ["ran"]
    stop.set()  # set twice: still set, no error
    assert stop.is_set() and stop.wait(0) and stop.wait(None)
