"""Readers of reports and streams kstat did not write (compare, plot, history, load_report, the
NDJSON readers): files that are not regular, too large, nested too deep, numbers no report
holds, negative counts. Each is refused in one line naming the file and the reason, exit 1,
at once; and a fuzzer finds no other way out."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstat._bounded import MAX_INPUT_BYTES
from kstat.analysis.plot import read_stream
from kstat.errors import KstatError
from kstat.formats.report_json import ReportFormatError
from kstat.report_files import load_report
from tests.kstat_process import run_kstat

GOLDEN = Path(__file__).parent / "golden"
REPORT = GOLDEN / "kstat-0.2-report.json"
STREAM = GOLDEN / "kstat-0.2-stream.ndjson"
FIRST = "kstat_demo_heavy_socket_filter"


def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REPORT.read_text())
    return data


def with_program(**fields: Any) -> str:
    data = golden()
    data["program_stats"][FIRST].update(fields)
    return json.dumps(data)


def sparse(path: Path, size: int) -> None:
    """A file of `size` zeros that takes no room on the disk."""
    path.write_bytes(b"")
    os.truncate(path, size)


# (name, how to make the file, the reason the error must give)
CASES: list[tuple[str, Callable[[Path], object], str]] = [
    ("fifo", os.mkfifo, "it is a FIFO, not a regular file"),
    ("dev-zero", lambda path: path.symlink_to("/dev/zero"), "it is a character device, not a regular file"),
    ("directory", lambda path: path.mkdir(), "it is a directory, not a regular file"),
    (
        "huge",
        lambda path: sparse(path, MAX_INPUT_BYTES + 1),
        "than the 256 MiB kstat reads",
    ),
    (
        "nested",
        lambda path: path.write_text("[" * 100_000 + "]" * 100_000),
        "nested deeper than the 32 levels",
    ),
    (
        "nested-object",
        lambda path: path.write_text('{"a":' * 40 + "1" + "}" * 40),
        "nested deeper than the 32",
    ),
    (
        "infinite-sum",
        lambda path: path.write_text(with_program(runtime_ns=1e308, avg_runtime_ns=1e308)),
        "runtime_ns is 1e+308, expected a whole number from 0 to 2^64",
    ),
    (
        "too-many-digits",
        lambda path: path.write_text(with_program(run_count=10**4000)),
        "a number of 4,001 digits is not one a report holds",
    ),
    (
        "hundred-million-digits",
        lambda path: path.write_text('{"program_stats": {}, "n": 1' + "0" * 100_000_000 + "}"),
        "a number of 100,000,001 digits is not one a report holds",
    ),
    ("nan", lambda path: path.write_text(with_program(avg_runtime_ns=float("nan"))), "NaN is not a number"),
    ("infinity", lambda path: path.write_text('{"a": 1e999}'), "1e999 is beyond any number a report holds"),
    (
        "negative-count",
        lambda path: path.write_text(with_program(run_count=-5)),
        "run_count is -5, expected a whole number from 0 to 2^64",
    ),
]


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def bad_input(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    name, make, reason = request.param
    path = tmp_path / f"{name}.json"
    make(path)
    yield path, reason


def assert_refused(arguments: list[str], path: Path, reason: str) -> None:
    started = time.monotonic()
    completed = run_kstat(arguments, timeout_s=60)
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    (line,) = completed.stderr.splitlines()
    assert line.startswith(f"kstat: error: {path} is not a") and reason in line, line
    assert time.monotonic() - started < 20


def test_compare_refuses_it(bad_input: tuple[Path, str]) -> None:
    path, reason = bad_input
    assert_refused(["compare", str(REPORT), str(path)], path, reason)


def test_history_refuses_it(bad_input: tuple[Path, str]) -> None:
    path, reason = bad_input
    assert_refused(["history", str(REPORT), str(path)], path, reason)


def test_plot_refuses_it(bad_input: tuple[Path, str], tmp_path: Path) -> None:
    path, reason = bad_input
    assert_refused(["plot", str(path), "-o", str(tmp_path / "p.png")], path, reason)
    assert not (tmp_path / "p.png").exists()


def test_load_report_and_the_stream_readers_refuse_it(bad_input: tuple[Path, str], tmp_path: Path) -> None:
    path, reason = bad_input
    with pytest.raises(ReportFormatError, match=re.escape(reason)):
        load_report(path)
    if "2^64" in reason:
        return  # a value of a report's program: the stream's own lines are below
    stream = tmp_path / "s.ndjson"
    os.rename(path, stream)
    for read in (load_report, read_stream):
        with pytest.raises(ReportFormatError, match=re.escape(reason)) as refused:
            read(stream)
        assert str(stream) in str(refused.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(-5, "run_count is -5, expected a whole number from 0"), (1e308, "run_count is 1e+308, expected")],
)
def test_a_streams_interval_with_absurd_counts_is_refused(tmp_path: Path, value: float, reason: str) -> None:
    lines = STREAM.read_text().splitlines()
    interval = json.loads(lines[3])
    interval["program_stats"][FIRST]["run_count"] = value
    lines[3] = json.dumps(interval)
    stream = tmp_path / "s.ndjson"
    stream.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportFormatError, match=re.escape(reason)):
        read_stream(stream)
    completed = run_kstat(["plot", str(stream), "-o", str(tmp_path / "p.png")])
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.startswith(f"kstat: error: {stream}: line 4 is not an interval line: ")


def test_a_long_streams_report_is_read_from_its_end(tmp_path: Path) -> None:
    # A serve run of days: only the last line is read, whatever comes before it.
    stream = tmp_path / "long.ndjson"
    lines = STREAM.read_text().splitlines(keepends=True)
    with stream.open("w") as writing:
        writing.write("".join(lines[:-1]))
        writing.truncate(MAX_INPUT_BYTES + 4096)  # past the limit, all zeros
        writing.seek(0, os.SEEK_END)
        writing.write("\n" + lines[-1])
    assert load_report(stream).num_programs == load_report(STREAM).num_programs


# --- fuzzed ------------------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _mutated(data: Any, path: list[int], value: Any) -> Any:
    """`data` with the node that `path` picks (indexes into each level) replaced by `value`."""
    mutated = copy.deepcopy(data)
    parent: Any = None
    key: Any = None
    node = mutated
    for step in path:
        children = (
            list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        )
        if not children:
            break
        parent, key = node, children[step % len(children)]
        node = node[key]
    if parent is None:
        return value
    parent[key] = value
    return mutated


def _loads_or_refuses(read: Callable[[Path], object], path: Path) -> None:
    with contextlib.suppress(KstatError):  # ReportFormatError or OutputError: one clear line
        read(path)


FUZZED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZED
@given(path=st.lists(st.integers(min_value=0, max_value=50), max_size=5), value=_JSON_VALUES)
def test_fuzzed_reports_load_or_are_refused(tmp_path: Path, path: list[int], value: Any) -> None:
    report = tmp_path / "fuzzed.json"
    report.write_text(json.dumps(_mutated(golden(), path, value)))
    _loads_or_refuses(load_report, report)


@FUZZED
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_fuzzed_bytes_load_or_are_refused(tmp_path: Path, raw: bytes) -> None:
    for name in ("fuzzed.json", "fuzzed.ndjson"):
        (tmp_path / name).write_bytes(raw)
        _loads_or_refuses(load_report, tmp_path / name)
    _loads_or_refuses(read_stream, tmp_path / "fuzzed.ndjson")


@FUZZED
@given(
    line=st.integers(min_value=0, max_value=200),
    path=st.lists(st.integers(min_value=0, max_value=50), max_size=4),
    value=_JSON_VALUES,
)
def test_fuzzed_streams_are_read_or_refused(tmp_path: Path, line: int, path: list[int], value: Any) -> None:
    lines = STREAM.read_text().splitlines()
    index = line % len(lines)
    lines[index] = json.dumps(_mutated(json.loads(lines[index]), path, value))
    stream = tmp_path / "fuzzed.ndjson"
    stream.write_text("\n".join(lines) + "\n")
    _loads_or_refuses(read_stream, stream)
    _loads_or_refuses(load_report, stream)
