"""The report is a contract: every shape the Go tool or any kstat version wrote stays readable.

One golden file per shape lives in tests/golden/ (the Go tool's report and its first variant,
each kstat 0.1 shape, written by those versions, and this version's report and stream). Each
is read, compared and charted through the command line's own entry point; what was read must
be what the file says. Files that are not reports get one line naming the file and the fault.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve

from kstat.api import load_report
from kstat.cli import main
from kstat.core.catalogue import SEED_METRICS
from kstat.formats.report_json import (
    SCHEMA_VERSION,
    report_from_dict,
    report_to_dict,
    report_to_json,
    report_to_json_bytes,
)

GOLDEN = Path(__file__).parent / "golden"
REPORTS = sorted(GOLDEN.glob("*.json"))
STREAMS = sorted(GOLDEN.glob("*.ndjson"))
GO_REPORT = GOLDEN / "go-collect-kernel-stats.json"
GO_REPORT_V1 = GOLDEN / "go-collect-kernel-stats-v1.json"
CURRENT_REPORT = GOLDEN / f"kstat-0.{SCHEMA_VERSION}-report.json"
CURRENT_STREAM = GOLDEN / f"kstat-0.{SCHEMA_VERSION}-stream.ndjson"
SEED_TOTALS = ("total_runtime_ns", "total_run_count", "total_events_per_sec", "total_estimated_cpu_percent")


def raw(path: Path) -> dict[str, Any]:
    """The report a file holds, as plain JSON (a stream's is its last line)."""
    if path.suffix == ".ndjson":
        data: dict[str, Any] = json.loads(path.read_text().splitlines()[-1])
        return data
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_there_is_a_golden_file_for_every_shape() -> None:
    names = {path.name for path in [*REPORTS, *STREAMS]}
    assert {GO_REPORT.name, GO_REPORT_V1.name, CURRENT_REPORT.name, CURRENT_STREAM.name} <= names
    assert len([name for name in names if name.startswith("kstat-0.1-")]) >= 5


@pytest.mark.parametrize("path", [*REPORTS, *STREAMS], ids=lambda path: path.name)
def test_every_shape_reads_as_written(path: Path) -> None:
    data = raw(path)
    report = load_report(path)
    assert set(report.program_stats) == set(data["program_stats"])
    for key, line in report.program_stats.items():
        written = data["program_stats"][key]
        assert (line.name, line.type, line.id) == (written["name"], written["type"], written["id"])
        for metric in SEED_METRICS:
            assert line.metrics[metric.name] == written[metric.name], (key, metric.name)
    for total in SEED_TOTALS:
        assert report.totals[total.removeprefix("total_")] == data[total]
    assert report.num_programs == data["num_programs"]
    assert report.schema_version == data.get("schema_version")


@pytest.mark.parametrize("path", [*REPORTS, *STREAMS], ids=lambda path: path.name)
def test_every_shape_compares_against_this_version(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for baseline, current in ((path, CURRENT_REPORT), (CURRENT_REPORT, path)):
        assert main(["compare", str(baseline), str(current), "--format", "json"]) == 0
        compared = json.loads(capsys.readouterr().out)
        assert compared["total"]["baseline"]["run_count"] == raw(baseline)["total_run_count"]
        assert compared["total"]["current"]["run_count"] == raw(current)["total_run_count"]
        assert compared["violations"] == []


@pytest.mark.parametrize("path", REPORTS, ids=lambda path: path.name)
def test_every_shape_is_charted_as_baseline_and_as_current(path: Path, tmp_path: Path) -> None:
    beside, alone = tmp_path / "beside.png", tmp_path / "alone.png"
    assert main(["plot", str(CURRENT_REPORT), "--baseline", str(path), "-o", str(beside)]) == 0
    assert main(["plot", str(path), "-o", str(alone)]) == 0
    assert png_size(beside)[0] > 1000
    assert png_size(alone)[0] > 1000


@pytest.mark.parametrize("path", STREAMS, ids=lambda path: path.name)
def test_every_stream_is_charted(path: Path, tmp_path: Path) -> None:
    chart = tmp_path / "stream.png"
    assert main(["plot", str(path), "-o", str(chart)]) == 0
    assert png_size(chart)[0] > 1000


def test_the_go_tools_report_against_kstats_matches_programs_by_kernel_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The Go tool names programs by the kernel's 15 characters; kstat by their full BTF name."""
    assert main(["compare", str(GO_REPORT), str(CURRENT_REPORT), "--format", "json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    matched = {row["name"] for row in compared["programs"] if row["baseline"] and row["current"]}
    assert matched == {
        "kstat_demo_light_socket_filter",
        "kstat_demo_medium_socket_filter",
        "kstat_demo_heavy_socket_filter",
    }
    assert sorted(compared["only_in_baseline"]) == [
        "cil_from_netdev (SchedCLS)",
        "tracepoint__sys (TracePoint)",
    ]


def test_the_go_tools_first_variant_gives_its_window_in_seconds() -> None:
    report = load_report(GO_REPORT_V1)
    assert report.collection_duration_ns == 30_004_512_337
    assert report.program("kstat_heavy").tag == "053e69568c7378af"
    assert report.online_cpus is None
    assert report.program("kstat_heavy").estimated_cpu_percent_of_all_cpus is None


def test_the_go_tools_first_variant_says_what_programs_cost_besides_cpu() -> None:
    heavy = load_report(GO_REPORT_V1).program("kstat_heavy")
    assert (heavy.value("memlock_bytes"), heavy.value("jited_size_bytes")) == (12288, 3328)
    assert (heavy.value("verified_instructions"), heavy.value("num_maps")) == (1029, 0)


def test_this_versions_report_is_written_back_with_every_field_as_it_was() -> None:
    for path in (CURRENT_REPORT, CURRENT_STREAM):
        data = raw(path)
        data.pop("kind", None)
        rewritten = report_to_dict(report_from_dict(data))
        # Fields added since are computed where they can be; nothing written is changed.
        assert {key: rewritten[key] for key in data} == data


def test_the_report_file_is_the_indented_text_in_utf8() -> None:
    report = load_report(CURRENT_REPORT)
    renamed = evolve(report, node="nœud-1")  # not ASCII: written as it is, in UTF-8
    for shown in (report, renamed):
        assert report_to_json_bytes(shown) == report_to_json(shown).encode()
    assert "nœud-1".encode() in report_to_json_bytes(renamed)


def test_a_report_written_back_from_the_go_tool_keeps_its_fields() -> None:
    data = raw(GO_REPORT)
    rewritten = report_to_dict(load_report(GO_REPORT))
    for key, line in data["program_stats"].items():
        assert {name: rewritten["program_stats"][key][name] for name in line} == line
    assert rewritten["schema_version"] is None  # it says nothing it did not know
    assert report_from_dict(rewritten) == load_report(GO_REPORT)


def go_line(**changes: Any) -> dict[str, Any]:
    line = {
        "name": "x",
        "type": "XDP",
        "id": 1,
        "runtime_ns": 5,
        "run_count": 1,
        "events_per_sec": 1,
        "avg_runtime_ns": 5,
        "estimated_cpu_percent": 0.5,
        "recursion_misses": 0,
    }
    return {**line, **changes}


def go_report(**changes: Any) -> dict[str, Any]:
    return {"timestamp": "t", "collection_duration_ns": 1_000, "program_stats": {"x": go_line()}, **changes}


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("", "not JSON: Expecting value at line 1, column 1"),
        (
            '{"program_stats": {}, "collection_duration_ns": 1,}',
            "not JSON: Expecting property name enclosed in double quotes at line 1, column 51",
        ),
        ("[1, 2]", "the top level is a list, expected an object"),
        ('{"hello": "world"}', "no program_stats"),
        (json.dumps(go_report(program_stats=[])), "program_stats is a list, expected an object"),
        (
            json.dumps(go_report(program_stats={"x": go_line(run_count="12")})),
            'program_stats.x.run_count is a string ("12"), expected a whole number',
        ),
        (
            json.dumps(go_report(program_stats={"x": go_line(run_count=1.5)})),
            "program_stats.x.run_count is 1.5, expected a whole number",
        ),
        (
            json.dumps(go_report(program_stats={"x": go_line(events_per_sec=None)})),
            "no program_stats.x.events_per_sec",
        ),
        (
            json.dumps(go_report(program_stats={"a b": go_line(id=True)})),
            'program_stats["a b"].id is a boolean, expected a whole number',
        ),
        (
            json.dumps(go_report(total_run_count="lots")),
            'total_run_count is a string ("lots"), expected a whole number',
        ),
        (
            json.dumps(go_report(program_stats={"x": go_line(owners=[{"command": "a"}])})),
            "no program_stats.x.owners[0].pid",
        ),
    ],
)
def test_what_is_not_a_report_is_named_in_one_line(
    content: str, complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "base.json"
    path.write_text(content)
    assert main(["compare", str(path), str(CURRENT_REPORT)]) == 1
    assert capsys.readouterr().err == f"kstat: error: {path} is not a report: {complaint}\n"


def test_a_stream_cut_short_has_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.ndjson"
    cut.write_text("".join(CURRENT_STREAM.read_text().splitlines(keepends=True)[:-1]))
    assert main(["compare", str(cut), str(CURRENT_REPORT)]) == 1
    assert "the stream has no summary line" in capsys.readouterr().err


def test_extra_fields_from_elsewhere_are_ignored() -> None:
    data = go_report(program_stats={"x": go_line(verified_instructions=12, colour="blue")}, host="node-1")
    assert report_from_dict(data).program("x").run_count == 1


def test_a_newer_schema_is_read_for_the_fields_it_shares() -> None:
    data = {**raw(CURRENT_REPORT), "schema_version": SCHEMA_VERSION + 5, "a_field_from_the_future": [1]}
    report = report_from_dict(data)
    assert report.schema_version == SCHEMA_VERSION + 5
    assert report.total_run_count == data["total_run_count"]
