"""Faults found from outside (issue 17): each test here failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.disks import fill_up
from tests.kstat_process import KSTAT, KstatProcess, run_kstat
from tests.names import KT
from tests.windows import LoadFilter

GOLDEN_STREAM = Path(__file__).parent / "golden" / "kstat-0.1-af28853-stream.ndjson"


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        # No abbreviations, in either spelling: `-d` is not `-duration`.
        (["-d", "1s"], "unrecognized arguments: -d 1s"),
        (["--dur", "1s"], "unrecognized arguments: --dur 1s"),
        (["-inter", "1s"], "unrecognized arguments: -inter 1s"),
        # A negative duration is said to be one, whichever way it is written.
        (["-duration", "-1s"], "duration '-1s' is negative"),
        (["--interval", "-.5s"], "duration '-.5s' is negative"),
        (["-duration", " 5s"], "invalid duration ' 5s': spaces around it"),
        (["--id", str(2**32)], f"'{2**32}' is no program id"),
        (
            ["-output", "/tmp/kstat-t-same.json", "--sink", "ndjson:/tmp/../tmp/kstat-t-same.json"],
            "would both write",
        ),
    ],
)
def test_flags_that_were_taken_wrongly_are_usage_errors(arguments: list[str], complaint: str) -> None:
    completed = run_kstat(arguments)
    assert completed.returncode == 2, completed.stderr
    assert complaint in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("command", [[], ["plot"], ["compare"], ["demo"], ["serve"], ["run"], ["list"]])
def test_every_help_reads_without_stray_percent_signs(command: list[str]) -> None:
    completed = run_kstat([*command, "--help"])
    assert completed.returncode == 0, completed.stderr
    assert "%%" not in completed.stdout
    assert "usage:" in completed.stdout


def test_a_file_that_exists_but_cannot_be_replaced_says_so() -> None:
    completed = run_kstat(["-output", "/proc/self/status"])
    assert completed.returncode == 1
    assert completed.stderr == (
        "kstat: error: cannot write /proc/self/status: no new file can be made in /proc/self to replace it "
        "(No such file or directory)\n"
    )


def test_a_stream_plotted_into_a_directory_goes_inside_it(tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    completed = run_kstat(["plot", str(GOLDEN_STREAM), "-o", f"{charts}/"])
    assert completed.returncode == 0, completed.stderr
    assert (charts / "stream.png").is_file()


@pytest.mark.kernel
def test_a_failing_sink_is_named_once_in_its_error(tmp_path: Path) -> None:
    completed = run_kstat(
        ["-duration", "300ms", "--sink", "ndjson:/dev/full", "-o", str(tmp_path / "r.json")]
    )
    assert completed.returncode == 1
    assert (
        completed.stderr.splitlines()[-1]
        == "kstat: error: ndjson:/dev/full: cannot write: No space left on device"
    )


@pytest.mark.kernel
@pytest.mark.parametrize("arguments", [["--json"], [], ["--id", "1"]], ids=["json", "table", "filtered"])
def test_a_listing_sent_to_a_full_disk_is_one_line_and_exit_1(arguments: list[str]) -> None:
    """The lean path (no filter) and the command's (a filter) alike: no traceback, and no exit
    status 0 for a listing that was not written."""
    with open("/dev/full", "w") as full:
        completed = subprocess.run(
            [*KSTAT, "list", *arguments],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert completed.returncode == 1
    assert completed.stderr == "kstat: error: cannot write standard output: No space left on device\n"


def report_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.kernel
def test_a_fifo_nobody_reads_cannot_hold_kstat(tmp_path: Path) -> None:
    """The window ends, nobody opens the FIFO; SIGINT then ends kstat within a second or two,
    and the report is kept in a fallback file that the error names."""
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    kstat = KstatProcess(["-duration", "1s", "-output", str(fifo)], env={"TMPDIR": str(tmp_path)})
    kstat.wait_for_event("waiting for a reader of the FIFO", timeout_s=30)
    asked = time.monotonic()
    kstat.signal(signal.SIGINT)
    returncode, _ = kstat.finish(timeout_s=10)
    assert time.monotonic() - asked < 2.5
    assert returncode == 1
    (error,) = kstat.errors()
    fallback = Path(error.rsplit("the report was written to ", 1)[1].removesuffix(" instead"))
    # In a directory of kstat's own, made for it: nothing could be planted at its path.
    assert fallback.parent.parent == tmp_path
    assert (fallback.parent.stat().st_mode & 0o777, fallback.stat().st_mode & 0o777) == (0o700, 0o600)
    assert report_of(fallback)["collection_duration_ns"] >= 1_000_000_000


@pytest.mark.kernel
def test_a_fifo_with_a_reader_gets_the_report(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    kstat = KstatProcess(["-duration", "300ms", "-output", str(fifo)])
    received = json.loads(fifo.read_text())  # opens the FIFO, as `cat f` would
    assert kstat.finish()[0] == 0
    assert received["collection_duration_ns"] >= 300_000_000


@pytest.mark.kernel
@pytest.mark.parametrize("gap_s", [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3])
def test_a_second_signal_soon_after_the_first_still_gives_exit_0_and_the_report(
    tmp_path: Path, gap_s: float
) -> None:
    report = tmp_path / "r.json"
    kstat = KstatProcess(["-duration", "60s", "-interval", "100ms", "-output", str(report)])
    kstat.wait_for_window()
    time.sleep(0.3)
    kstat.signal(signal.SIGINT)
    time.sleep(gap_s)
    kstat.signal(signal.SIGINT)
    returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    assert report_of(report)["stopped_by"] == "SIGINT"


@pytest.mark.kernel
def test_a_full_disk_leaves_no_half_line_and_the_next_run_starts_a_new_one(
    load_filter: LoadFilter, tmp_path: Path, tiny_tmpfs: Path
) -> None:
    for index in range(30):
        load_filter(f"{KT}half{index}")
    stream = tiny_tmpfs / "s.ndjson"
    # A fragment an older kstat (or a crash mid-write) left behind.
    stream.write_text('{"kind":"interval","sequence":1,"program_st')
    # The test's own programs only: a line over every program on a shared host would not fit
    # in the 16 KiB at all.
    run_kstat(
        [
            "-duration",
            "1s",
            "--interval",
            "20ms",
            "--name",
            f"^{KT}half",
            "--sink",
            f"ndjson:{stream}",
            "-o",
            str(tmp_path / "r.json"),
        ]
    )
    lines = stream.read_text().split("\n")
    assert lines[0] == '{"kind":"interval","sequence":1,"program_st'  # ended, not glued to the next
    assert lines[-1] == ""  # the file ends with a whole line
    for line in lines[1:-1]:
        json.loads(line)
    assert len(lines) > 3


@pytest.mark.kernel
def test_a_report_on_a_full_disk_goes_to_a_fallback_file(tmp_path: Path, tiny_tmpfs: Path) -> None:
    fill_up(tiny_tmpfs / "filler")
    report = tiny_tmpfs / "r.json"
    completed = run_kstat(["-duration", "300ms", "-output", str(report)], env={"TMPDIR": str(tmp_path)})
    assert completed.returncode == 1
    (error,) = [line for line in completed.stderr.splitlines() if line.startswith("kstat: error:")]
    assert error.startswith(f"kstat: error: json:{report}: cannot write {report}: No space left on device; ")
    fallback = Path(error.rsplit("the report was written to ", 1)[1].removesuffix(" instead"))
    assert report_of(fallback)["collection_duration_ns"] >= 300_000_000


LOGROTATE_CONFIG = """
{stream} {{
    create 0644 root root
    rotate 3
    missingok
    postrotate
        kill -HUP {pid}
    endscript
}}
"""


@pytest.mark.kernel
def test_logrotate_rotates_the_stream_and_no_line_is_split_or_lost(
    load_filter: LoadFilter, tmp_path: Path
) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).exists():
        pytest.skip("logrotate is not installed (Debian's logrotate package); run `make deps`")
    target = load_filter(f"{KT}rotate")
    stream = tmp_path / "kstat.ndjson"
    kstat = KstatProcess(
        ["-duration", "60s", "--interval", "50ms", "--name", f"^{KT}rotate$", "--sink", f"ndjson:{stream}"]
    )
    kstat.wait_for_window()
    config = tmp_path / "logrotate.conf"
    config.write_text(LOGROTATE_CONFIG.format(stream=stream, pid=kstat.process.pid))
    for _ in range(2):
        target.send(100)
        time.sleep(0.4)
        rotated = subprocess.run(
            [logrotate, "--force", "--state", str(tmp_path / "state"), str(config)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert rotated.returncode == 0, rotated.stderr
    target.send(100)
    time.sleep(0.4)
    kstat.signal(signal.SIGTERM)
    returncode, _ = kstat.finish()
    assert returncode == 0, kstat.stderr_lines
    files = [tmp_path / "kstat.ndjson.2", tmp_path / "kstat.ndjson.1", stream]
    assert all(path.stat().st_size > 0 for path in files)
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    sequences = [line["sequence"] for line in lines if line["kind"] == "interval"]
    assert sequences == list(range(1, len(sequences) + 1))  # none lost, none split, in order
    runs = sum(
        line["program_stats"].get(f"{KT}rotate", {}).get("run_count", 0)
        for line in lines
        if line["kind"] == "interval"
    )
    assert runs == 300 == lines[-1]["program_stats"][f"{KT}rotate"]["run_count"]
