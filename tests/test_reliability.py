"""Faults injected one by one: signals, full and read-only disks, closed streams, load and
churn, stats left on, and fuzzed input. RELIABILITY.md maps each fault to its test here."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kstat
from kstat.cli import parse_command_line
from kstat.engine.sink_specs import make_sink
from kstat.errors import KstatError, UsageError
from kstat.testing.loader import SocketFilter
from tests.disks import fill_up
from tests.kstat_process import KSTAT, KstatProcess, run_kstat
from tests.names import KT
from tests.stats_holders import stats_released
from tests.windows import LoadFilter

GOLDEN_REPORT = Path(__file__).parent / "golden" / "kstat-0.2-report.json"

# --- signals ----------------------------------------------------------------------------------


def assert_whole_report_or_clear_error(
    returncode: int, stderr: str, output: Path, stop_signal: signal.Signals
) -> None:
    if stderr.startswith("Fatal Python error: init_import_site"):
        # The interpreter's own start-up (its site module, before a line of kstat): Python's
        # answer to a KeyboardInterrupt there, as for any program. Nothing was switched on.
        assert returncode != 0 and not output.exists()
        return
    lines = stderr.strip().splitlines()
    if (
        lines
        and lines[0].startswith("Traceback")
        and lines[-1] == "KeyboardInterrupt"
        and not re.search(r'kstat/_entry\.py", line \d+, in main', stderr)
    ):
        # Still the interpreter's: runpy finding the module to run, or importing the package
        # it is in (`python -m kstat` runs kstat/__init__.py first), before kstat's entry point
        # (which takes Ctrl-C over at its first line) could run. Nothing was switched on.
        assert returncode != 0 and not output.exists()
        return
    assert "Traceback" not in stderr, stderr
    if returncode == 0:
        report = json.loads(output.read_text())  # whole, or this raises
        assert report["stopped_by"] in (stop_signal.name, None)
    elif returncode == -stop_signal:
        # Before the interpreter ran a line of kstat: the signal's default action, as for any
        # program; nothing was switched on or written.
        assert stderr == ""
        assert not output.exists()
    else:
        assert returncode == 128 + stop_signal
        assert f"kstat: {stop_signal.name} before the window started" in stderr
        assert not output.exists()


@pytest.mark.kernel
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.15, 0.3, 0.6, 1.0, 1.45, 1.5, 1.55])
def test_a_signal_at_any_moment_gives_a_whole_report_or_a_clear_error(
    load_filter: LoadFilter, tmp_path: Path, stop_signal: signal.Signals, delay_s: float
) -> None:
    """From interpreter start-up to the final write of a 1.5 s window."""
    load_filter(f"{KT}anytime")
    output = tmp_path / "r.json"
    process = subprocess.Popen(
        [
            *KSTAT,
            "-duration",
            "1500ms",
            "--interval",
            "50ms",
            "-output",
            str(output),
            "--sink",
            f"ndjson:{tmp_path / 's.ndjson'}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay_s)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=30)
    assert_whole_report_or_clear_error(process.returncode, stderr, output, stop_signal)


@pytest.mark.kernel
def test_sigkill_never_leaves_a_half_written_report(load_filter: LoadFilter, tmp_path: Path) -> None:
    load_filter(f"{KT}kill")
    output = tmp_path / "r.json"
    previous = '{"an": "older report"}\n'
    rng = random.Random(20261125)
    for attempt in range(12):
        output.write_text(previous)
        process = subprocess.Popen(
            [*KSTAT, "-duration", "400ms", "--interval", "20ms", "-output", str(output)],
            stderr=subprocess.DEVNULL,
        )
        # Around the end of the window, where the report is written.
        time.sleep(rng.uniform(0.3, 0.9) if attempt else 0.0)
        process.kill()
        process.wait(10)
        text = output.read_text()
        assert text == previous or json.loads(text)["program_stats"] is not None


# --- storage ----------------------------------------------------------------------------------


@pytest.mark.kernel
def test_a_full_disk_under_the_ndjson_stream_fails_it_alone(
    load_filter: LoadFilter, tmp_path: Path, tiny_tmpfs: Path
) -> None:
    for index in range(8):
        load_filter(f"{KT}full{index}")
    report = tmp_path / "r.json"
    completed = run_kstat(
        [
            "-duration",
            "2s",
            "--interval",
            "20ms",
            "--sink",
            f"ndjson:{tiny_tmpfs / 's.ndjson'}",
            "-output",
            str(report),
        ]
    )
    assert completed.returncode == 1
    errors = [line for line in completed.stderr.splitlines() if not line.startswith("{")]
    sink = f"ndjson:{tiny_tmpfs / 's.ndjson'}"
    assert errors == [f"kstat: error: {sink}: cannot write: No space left on device"]
    # The report, on another disk, is whole and covers the whole window.
    assert json.loads(report.read_text())["collection_duration_ns"] >= 2_000_000_000


@pytest.mark.kernel
def test_a_full_disk_under_the_report_keeps_the_old_one_and_the_stream_goes_on(
    load_filter: LoadFilter, tmp_path: Path, tiny_tmpfs: Path
) -> None:
    for index in range(40):
        load_filter(f"{KT}fullr{index}")
    report = tiny_tmpfs / "r.json"
    report.write_text("old\n")
    fill_up(tiny_tmpfs / "filler")
    stream = tmp_path / "s.ndjson"
    completed = run_kstat(["-duration", "300ms", "-output", str(report), "--sink", f"ndjson:{stream}"])
    assert completed.returncode == 1
    assert f"kstat: error: json:{report}: cannot write {report}: No space left on device" in completed.stderr
    assert report.read_text() == "old\n"
    assert sorted(path.name for path in tiny_tmpfs.iterdir()) == ["filler", "r.json"]
    assert json.loads(stream.read_text().splitlines()[-1])["kind"] == "summary"


@pytest.mark.root
def test_a_read_only_directory_fails_before_the_window(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "kstat-test", str(read_only)], check=True)
    try:
        for arguments in (
            ["-output", str(read_only / "r.json")],
            ["--sink", f"ndjson:{read_only / 's.ndjson'}"],
        ):
            completed = run_kstat(["-duration", "1h", *arguments])
            assert completed.returncode == 1
            assert "Read-only file system" in completed.stderr
            assert "window started" not in completed.stderr
    finally:
        subprocess.run(["umount", str(read_only)], check=True)


@pytest.mark.root
def test_root_without_cap_sys_admin_skips_the_tests_that_mount() -> None:
    """As in a container that dropped CAP_SYS_ADMIN: the mounting tests are skipped, not failed."""
    completed = subprocess.run(
        [
            "setpriv",
            "--bounding-set",
            "-sys_admin",
            "--inh-caps",
            "-sys_admin",
            "--",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_reliability.py::test_a_read_only_directory_fails_before_the_window",
        ],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 skipped" in completed.stdout


# --- closed streams ---------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("redirect", "expected_status"),
    [(">&-", 1), ("2>&- > /dev/null", 0), ("--sink ndjson:- >&-", 1)],
)
def test_closed_standard_streams(redirect: str, expected_status: int) -> None:
    completed = subprocess.run(
        f"{' '.join(KSTAT)} -duration 200ms {redirect}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == expected_status
    assert "Traceback" not in completed.stderr
    if expected_status:
        assert "standard output is closed" in completed.stderr
        assert "window started" not in completed.stderr


_REDIRECT = "redirect it to a file (> FILE"


@pytest.mark.parametrize(
    ("arguments", "advice"),
    [
        pytest.param(["list"], f"kstat list writes only there: {_REDIRECT})", marks=pytest.mark.kernel),
        (
            ["compare", str(GOLDEN_REPORT), str(GOLDEN_REPORT)],
            f"kstat compare writes only there: {_REDIRECT})",
        ),
        (
            ["history", str(GOLDEN_REPORT)],
            f"kstat history writes its table only there: {_REDIRECT}; -o is the chart)",
        ),
    ],
)
def test_with_stdout_closed_commands_without_a_file_option_say_what_is_true(
    arguments: list[str], advice: str
) -> None:
    completed = subprocess.run(
        f"{' '.join(KSTAT)} {' '.join(arguments)} >&-",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr == f"kstat: error: standard output is closed; {advice}\n"


# --- load and churn ---------------------------------------------------------------------------


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.kernel
def test_ten_thousand_programs_with_hundreds_churning_per_second() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65_536)), hard))
    steady = [SocketFilter(f"{KT}many{index % 100}") for index in range(10_000)]
    churning: list[SocketFilter] = []
    stop = threading.Event()
    loaded = unloaded = 0

    def churn() -> None:
        nonlocal loaded, unloaded
        while not stop.is_set():
            for _ in range(20):
                churning.append(SocketFilter(f"{KT}churn"))
                loaded += 1
                if len(churning) > 50:
                    churning.pop(0).close()
                    unloaded += 1
            stop.wait(0.05)  # ~400 loads and as many unloads a second

    try:
        held_before = len(steady)
        kstat_fds_before = open_fd_count() - held_before
        churner = threading.Thread(target=churn)
        with kstat.collect_sync(interval="100ms") as session:
            churner.start()
            time.sleep(3)
            stop.set()
            churner.join()
        kstat_fds_after = open_fd_count() - len(steady) - len(churning)
        report = session.report
    finally:
        stop.set()
        for program in [*steady, *churning]:
            program.close()
    assert kstat_fds_after == kstat_fds_before  # no fd leaked, whatever came and went
    assert loaded > 300 and unloaded > 300
    lines = report.programs
    churned = [line for line in lines if line.kernel_name == f"{KT}churn"]
    assert len(churned) > 100
    assert all(line.loaded_during_window for line in churned)
    assert any(line.unloaded_during_window for line in churned)
    assert sum(1 for line in lines if (line.kernel_name or "").startswith(f"{KT}many")) == 10_000
    assert report.num_programs == len(report.program_stats) == len(lines)
    assert report.total_run_count == sum(line.run_count for line in lines)
    assert report.total_runtime_ns == sum(line.runtime_ns for line in lines)
    assert len(set(report.program_stats)) == len(lines)  # nothing merged under one key


# --- stats state ------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("ending", ["sink failure", "SIGINT", "SIGTERM"])
def test_stats_are_off_after_every_ending(
    load_filter: LoadFilter, request: pytest.FixtureRequest, ending: str
) -> None:
    target = load_filter(f"{KT}ending")
    arguments = ["-duration", "1s" if ending == "sink failure" else "1h"]
    if ending == "sink failure":
        full_disk: Path = request.getfixturevalue("tiny_tmpfs")
        fill_up(full_disk / "filler")
        arguments += ["-output", str(full_disk / "r.json")]
    run = KstatProcess(arguments)
    run.wait_for_window()
    target.send(7)
    if ending != "sink failure":
        run.signal(signal.Signals[ending])
    returncode, _ = run.finish()
    assert returncode == (1 if ending == "sink failure" else 0)
    with stats_released() as released:
        counted = target.program.stats().run_count
        target.send(100)
        after = target.program.stats().run_count
    assert counted == 7
    if released.quiet:  # else others count the 100: kstat's own fd is what was checked
        assert after == counted


@pytest.mark.kernel
def test_two_kstats_at_once_each_get_their_own_window(load_filter: LoadFilter) -> None:
    target = load_filter(f"{KT}pair")
    # Each ends when told (a duration would race a slow start on a busy host).
    long_run = KstatProcess(["-duration", "1h", "--interval", "100ms"])
    long_run.wait_for_window()
    short_run = KstatProcess(["-duration", "1h", "--interval", "100ms"])
    short_run.wait_for_window()
    target.send(40)
    short_run.signal(signal.SIGINT)
    short_status, short_stdout = short_run.finish()
    # The short one has closed its stats fd; the long one's must still count.
    target.send(60)
    long_run.signal(signal.SIGINT)
    long_status, long_stdout = long_run.finish()
    assert (short_status, long_status) == (0, 0)
    assert json.loads(short_stdout)["program_stats"][f"{KT}pair"]["run_count"] == 40
    assert json.loads(long_stdout)["program_stats"][f"{KT}pair"]["run_count"] == 100


# --- bad input --------------------------------------------------------------------------------

_FLAGS = [
    "-duration", "--duration", "-interval", "--interval", "-output", "-o", "--sink", "-verbose",
    "--id", "--name", "--type", "--pid", "--comm", "--json", "--rate", "--work-scale", "--linger",
    "--format", "--fail-on", "--baseline", "--title", "--workload-only", "-x", "--", "=",
]  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from(["0", "-1s", "1h", "9999999999h", "1.5s", "abc", "", "5", "10ms", "1ns", "+3s", "1e9s"]),
    st.sampled_from(
        ["json:", "ndjson:-", "stdout", "statsd://", "statsd://h:0", "nope:x", "XDP", "(", "[a-"]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00/"), max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
_COMMANDS = st.sampled_from(
    [[], ["collect"], ["demo"], ["list"], ["run"], ["compare"], ["plot"], ["top"], ["help"], ["completion"]]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=_COMMANDS, words=st.lists(st.one_of(st.sampled_from(_FLAGS), _VALUES), max_size=8))
def test_fuzzed_command_lines_parse_or_are_usage_errors(
    command: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        parse_command_line([*command, *words])
    except SystemExit as exit_:
        assert exit_.code in (0, 2), capsys.readouterr().err  # 0: --help or --version
        if exit_.code == 2:
            assert "error:" in capsys.readouterr().err


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["stdout", "json", "ndjson", "statsd", "csv", "", "STDOUT", "json2", "j son"]),
    separator=st.sampled_from([":", "", "://", "::"]),
    argument=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00/"), max_size=20),
)
def test_fuzzed_sink_specs_make_a_sink_or_a_clear_error(
    name: str, separator: str, argument: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # paths the fuzzer invents stay in here
    try:
        sink = make_sink(f"{name}{separator}{argument}")
    except (UsageError, KstatError) as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert isinstance(sink, kstat.Sink)


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["-duration", "0"], "longer than zero"),
        (["-duration=-1s"], "negative"),
        (["-duration", "99999999999h"], "too long"),
        (["--interval", "0"], "longer than zero"),
        (["-duration", "1e3s"], "invalid duration"),
    ],
)
def test_absurd_durations(arguments: list[str], complaint: str) -> None:
    completed = run_kstat(arguments)
    assert completed.returncode == 2
    assert complaint in completed.stderr
