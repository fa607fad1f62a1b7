"""Finding sinks by spec: built-ins and a third-party package, through the same entry points."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kstat.engine.sink_specs import BUILT_IN_SINKS, ENTRY_POINT_GROUP, available_sinks, make_sink, split_spec
from kstat.errors import OutputError, UsageError
from kstat.sinks.json_file import JsonFileSink
from kstat.sinks.ndjson import NdjsonSink
from kstat.sinks.statsd import StatsdSink
from kstat.sinks.stdout import StdoutSink
from tests.kstat_process import KstatProcess, run_kstat
from tests.names import KT
from tests.windows import LoadFilter

EXAMPLE_SINK = Path(__file__).parents[1] / "examples" / "kstat_csv_sink"

ALL_SINKS = "available sinks: json, ndjson, otlp, otlp+http, otlp+https, prometheus, statsd, stdout"


def test_built_in_sinks_are_registered_entry_points() -> None:
    assert set(available_sinks()) >= {"stdout", "json", "ndjson", "statsd"}
    # kstat's own table is pyproject.toml's, entry for entry (the installed package's too).
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert declared["project"]["entry-points"][ENTRY_POINT_GROUP] == BUILT_IN_SINKS
    installed = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    assert {name: installed[name] for name in BUILT_IN_SINKS} == BUILT_IN_SINKS


def test_kstats_own_sinks_are_made_without_reading_package_metadata(tmp_path: Path) -> None:
    """importlib.metadata (email, zipfile, csv: 3 MB of a window) is imported only for a sink
    kstat does not have."""
    code = (
        "import sys; from kstat.engine.sink_specs import make_sink; "
        f"make_sink('json:{tmp_path / 'r.json'}'); make_sink('statsd://127.0.0.1:8125'); "
        "print('importlib.metadata' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout == "False\n", completed.stderr


def test_specs_make_the_right_sinks(tmp_path: Path) -> None:
    assert isinstance(make_sink("stdout"), StdoutSink)
    assert isinstance(make_sink(f"json:{tmp_path / 'r.json'}"), JsonFileSink)
    assert isinstance(make_sink(f"ndjson:{tmp_path / 's.ndjson'}"), NdjsonSink)
    assert isinstance(make_sink("ndjson:-"), NdjsonSink)
    assert isinstance(make_sink("statsd://127.0.0.1:8125?prefix=p"), StatsdSink)


def test_split_spec() -> None:
    assert split_spec("json:/a:b.json") == ("json", "/a:b.json")
    assert split_spec("stdout") == ("stdout", None)
    assert split_spec("statsd://h:1") == ("statsd", "//h:1")


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("nope", "unknown sink 'nope'"),
        ("", "malformed sink"),
        ("JSON:x", "malformed sink"),
        ("json", "json needs a path"),
        ("ndjson:", "ndjson needs a path"),
        ("stdout:x", "stdout takes no argument"),
        ("statsd:127.0.0.1", "expected statsd://"),
    ],
)
def test_bad_specs_are_usage_errors_listing_the_sinks(spec: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint) as caught:
        make_sink(spec)
    assert ALL_SINKS in str(caught.value)


def test_a_well_formed_spec_that_cannot_work_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        make_sink(f"ndjson:{tmp_path / 'missing' / 's.ndjson'}")


def test_cli_lists_the_sinks_on_a_bad_spec() -> None:
    completed = run_kstat(["--sink", "carrier-pigeon:coo"])
    assert completed.returncode == 2
    assert "unknown sink 'carrier-pigeon'" in completed.stderr
    assert ALL_SINKS in completed.stderr
    assert "Traceback" not in completed.stderr


def test_two_writers_of_stdout_are_refused() -> None:
    completed = run_kstat(["--sink", "stdout", "--sink", "ndjson:-"])
    assert completed.returncode == 2
    assert "both write standard output" in completed.stderr


def install_as_a_distribution(source: Path, site: Path) -> None:
    """Lay the example package out as pip would: its module plus a dist-info with entry points."""
    shutil.copy(source / "kstat_csv_sink.py", site)
    dist_info = site / "kstat_csv_sink-1.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: kstat-csv-sink\nVersion: 1.0.0\n")
    pyproject = (source / "pyproject.toml").read_text()
    entry_point = next(line for line in pyproject.splitlines() if line.startswith("csv = "))
    unquoted = entry_point.replace('"', "")
    (dist_info / "entry_points.txt").write_text(f"[kstat.sinks]\n{unquoted}\n")


@pytest.mark.kernel
def test_a_third_party_sink_is_found_and_fed(
    load_filter: LoadFilter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_as_a_distribution(EXAMPLE_SINK, site)
    target = load_filter(f"{KT}csv")
    rows_path = tmp_path / "rows.csv"
    monkeypatch.setenv("PYTHONPATH", str(site))
    listing = run_kstat(["--sink", "nope"])
    kstat = KstatProcess(["-duration", "1s", "--interval", "250ms", "--sink", f"csv:{rows_path}"])
    kstat.wait_for_window()
    target.send(64)
    returncode, _ = kstat.finish()
    assert "available sinks: csv, " + ALL_SINKS.removeprefix("available sinks: ") in listing.stderr
    assert returncode == 0, kstat.stderr_lines
    with rows_path.open() as stream:
        rows = [row for row in csv.DictReader(stream) if row["name"] == f"{KT}csv"]
    # A row per interval in which the program ran (the deltas' lines); they add up exactly.
    assert 1 <= len(rows) <= 4
    assert sum(int(row["run_count"]) for row in rows) == 64
