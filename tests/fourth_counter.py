"""A fourth kernel counter, added the way a developer adds one: an entry in
kstat/core/counters.py and the reader that fills it, nothing else of kstat changed.

Run as `python -m tests.fourth_counter` (tests/test_counter_catalogue.py does): the counter
catalogue's text with one more entry is executed as `kstat.core.counters` before anything
imports it; its reader is a stub that fills the new counter (twice the run count) by its
catalogue name. Prints, as JSON, what each output made of it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

_FIELD = "    run_count_doubled: Annotated[int | None, _DOUBLED] = None\n"
_ENTRY = """_DOUBLED: Final = CounterSpec(
    name="run_count_doubled",
    kernel_name="run_cnt_doubled",
    unit="runs",
    since="test",
    description="twice the runs",
    metric="run_count_doubled",
    title="Runs twice",
    heading="runs x2",
    top=TopColumn("runs_doubled", "RUNS x2", width=9),
)


"""


def install_fourth_counter() -> None:
    """kstat.core.counters, with the entry and its field added to its text."""
    import kstat.core  # noqa: PLC0415 - before the counters, on purpose

    path = Path(kstat.core.__file__).parent / "counters.py"
    source = path.read_text()
    counters_class = next(
        node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "Counters"
    )
    assert counters_class.end_lineno is not None
    lines = source.splitlines(keepends=True)
    lines.insert(counters_class.end_lineno, _FIELD)
    lines.insert(counters_class.lineno - 1, _ENTRY)
    spec = importlib.util.spec_from_loader("kstat.core.counters", None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules["kstat.core.counters"] = module
    exec(compile("".join(lines), str(path), "exec"), module.__dict__)


class _Naming:
    prefix = "kstat"
    dogstatsd_tags = False


def outputs() -> dict[str, Any]:
    """What the report, NDJSON, StatsD, Prometheus, OTLP, top, compare and the syscall reader make of
    a window in which program 1 ran 10 -> 13 -> 20 times (the new counter 20 -> 26 -> 40)."""
    # Imported only now: after the counter catalogue was replaced.
    from attrs import evolve  # noqa: PLC0415

    from kstat.abi.structs import PROG_INFO_SIZE, ProgInfo  # noqa: PLC0415
    from kstat.analysis.compare import compare, render_markdown  # noqa: PLC0415
    from kstat.core.counters import COUNTERS  # noqa: PLC0415
    from kstat.core.events import IntervalEnded, WindowStarted  # noqa: PLC0415
    from kstat.formats import ndjson, records  # noqa: PLC0415
    from kstat.formats.otlp import mappings  # noqa: PLC0415
    from kstat.formats.prometheus import Format, exposition_of  # noqa: PLC0415
    from kstat.formats.report_json import report_from_dict, report_to_dict  # noqa: PLC0415
    from kstat.formats.statsd import IntervalLines, metric_lines  # noqa: PLC0415
    from kstat.live.state import COLUMNS, TopState  # noqa: PLC0415
    from kstat.sources.syscalls import counters_read_by  # noqa: PLC0415
    from tests import builders  # noqa: PLC0415

    assert COUNTERS[-1].name == "run_count_doubled"

    def read(sequence: int, at_s: float, run_time_ns: int, run_count: int) -> Any:
        stats = builders.program(1, run_time_ns, run_count)
        # The stub reader: fills the new counter by its catalogue name.
        counters = stats.counters._replace(run_count_doubled=2 * run_count)  # type: ignore[call-arg]
        return builders.snapshot(sequence, at_s, evolve(stats, counters=counters))

    snapshots = [read(0, 0.0, 100, 10), read(1, 1.0, 400, 13), read(2, 2.0, 1000, 20)]
    events = builders.events_of(*snapshots)
    started, first = events[0], events[1]
    assert isinstance(started, WindowStarted)
    assert isinstance(first, IntervalEnded)
    report = builders.report_of(*snapshots)
    found: dict[str, Any] = {}

    data = report_to_dict(report)
    found["report"] = [data["program_stats"]["prog1"]["run_count_doubled"], data["total_run_count_doubled"]]
    back = report_from_dict(json.loads(json.dumps(data)))
    line = back.program_stats["prog1"]
    found["read back"] = [line.metrics["run_count_doubled"], line.counters.run_count_doubled]  # type: ignore[attr-defined]

    interval = ndjson.interval_to_dict(first)
    program = interval["program_stats"]["prog1"]
    found["ndjson"] = [
        program["run_count_doubled"],
        program["counters"]["run_cnt_doubled"],
        interval["total_run_count_doubled"],
    ]
    found["records"] = "counter_run_count_doubled" in records.RECORD_KEYS

    lines = IntervalLines(_Naming())
    lines.start(started)
    found["statsd"] = [
        text for text in metric_lines(report, _Naming()) + lines.lines_for(first.delta) if "doubled" in text
    ]

    window = [event for event in events if isinstance(event, WindowStarted | IntervalEnded)]
    body = exposition_of(window).render(Format.TEXT).body.decode()
    found["prometheus"] = [text for text in body.splitlines() if "doubled" in text]

    found["otlp"] = [
        [mapping.name, mapping.unit, mapping.shape.value]
        for mapping in mappings()
        if mapping.metric.name == "run_count_doubled"
    ]

    top = TopState()
    top.apply_start(started)
    for event in events[1:]:
        assert isinstance(event, IntervalEnded)
        top.apply_interval(event)
    (view,) = top.programs.values()
    column = next(column for column in COLUMNS if column.counter == "run_count_doubled")
    found["top"] = [column.key, column.heading, view.value(column.key)]

    table = render_markdown(compare(back, back), [])
    found["compare"] = [text for text in table.splitlines() if text.startswith(("| program", "| prog1"))]

    # bpf_prog_info has no such field: the syscall reader gives None for it, never 0.
    found["syscalls"] = counters_read_by(PROG_INFO_SIZE)(ProgInfo())[-1]
    return found


if __name__ == "__main__":
    install_fourth_counter()
    print(json.dumps(outputs()))
