"""Names from crafted reports in every output medium of the commands that read reports:
compare's Markdown (where a newline in a name forged a `(total)` row, a "No threshold exceeded."
line and an HTML comment hiding the rest), compare's and history's tables, plot's charts, and
the log on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.kstat_process import KSTAT, run_kstat

GOLDEN = Path(__file__).parent / "golden" / "kstat-0.2-report.json"
HEAVY = "kstat_demo_heavy_socket_filter"
# What the probe found: a newline opens a forged row, a verdict and a comment.
FORGER = "kpr\n| **(total)** | 0 → 0 (+0.0%) |\n\nNo threshold exceeded.\n<!-- the rest is hidden"
# And what terminals and rich obey: a title change, a screen clear, rich's own markup.
ESCAPER = "kpr\x1b]0;pwned\x07\x1b[2J[/x][bold]"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def report_with(path: Path, names: dict[str, str], *, slower: float = 1.0, **fields: Any) -> Path:
    """The golden report with programs renamed (`names`: key -> new name), the first of them
    `slower` times as costly a run (the report's own totals too: compare reads those)."""
    data = json.loads(GOLDEN.read_text())
    renamed = {}
    for key, line in data["program_stats"].items():
        if key in names:
            line["name"] = names[key]
            if key == next(iter(names)):
                added = round(line["runtime_ns"] * slower) - line["runtime_ns"]
                for metric in ("avg_runtime_ns", "runtime_ns"):
                    line[metric] = round(line[metric] * slower)
                data["total_runtime_ns"] += added
                data["total_avg_runtime_ns"] = data["total_runtime_ns"] // data["total_run_count"]
        renamed[names.get(key, key)] = line
    data["program_stats"] = renamed
    data.update(fields)
    path.write_text(json.dumps(data))
    return path


def _text(token: Token, markup: tuple[str, ...] = ()) -> str:
    """An inline token's text, checking that Markdown made nothing of it but `markup`."""
    children = token.children or []
    assert [child.type for child in children if child.type not in ("text", *markup)] == []
    return "".join("\n" if child.type == "softbreak" else child.content for child in children)


def test_a_name_forges_no_row_no_verdict_and_no_comment_in_markdown(tmp_path: Path) -> None:
    names = {HEAVY: FORGER, "kstat_demo_light_socket_filter": ESCAPER}
    baseline = report_with(tmp_path / "base.json", names)
    current = report_with(tmp_path / "current.json", names, slower=2.0)
    completed = run_kstat(
        ["compare", "--format", "markdown", "--fail-on", "avg_runtime_ns:+10%", str(baseline), str(current)]
    )
    assert completed.returncode == 1  # the regression is found...
    tokens = MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(completed.stdout)
    assert not [token for token in tokens if token.type.startswith("html")]  # ...and nothing hidden
    rows = [index for index, token in enumerate(tokens) if token.type == "tr_open"]
    assert len(rows) == 1 + 3 + 1  # the heading, three programs, one total
    first_cells = [_text(tokens[index + 2]) for index in rows[:-1]]
    assert first_cells[0] == "program"
    assert _text(tokens[rows[-1] + 2], markup=("strong_open", "strong_close")) == "(total)"  # kstat's bold
    shown = {FORGER.replace("\n", "\\x0a"), ESCAPER.replace("\x1b", "\\x1b").replace("\x07", "\\x07")}
    assert shown <= {cell.removesuffix(" (SocketFilter)") for cell in first_cells}
    lines = [
        line
        for index, token in enumerate(tokens)
        if token.type == "paragraph_open"
        for line in _text(tokens[index + 1], markup=("softbreak",)).splitlines()
    ]
    assert "No threshold exceeded." not in lines
    assert "REGRESSION (2):" in lines  # the program and the total
    item, _ = [index for index, token in enumerate(tokens) if token.type == "list_item_open"]
    assert _text(tokens[item + 2]).startswith(
        FORGER.replace("\n", "\\x0a") + " (SocketFilter): avg_runtime_ns"
    )


def test_tables_show_names_and_obey_none(tmp_path: Path) -> None:
    names = {HEAVY: FORGER, "kstat_demo_light_socket_filter": ESCAPER}
    report = report_with(tmp_path / "r.json", names)
    compared = run_kstat(["compare", str(report), str(report)])
    assert compared.returncode == 0, compared.stderr
    assert not _CONTROL.findall(compared.stdout)
    assert "kpr\\x1b]0;pwned\\x07\\x1b[2J[/x][bold]" in compared.stdout  # rich read no markup
    hostile_run = tmp_path / "run\x1b]0;pwned\x07\n.json"
    report_with(hostile_run, {}, timestamp=None)
    history = run_kstat(
        ["history", str(report_with(tmp_path / "a.json", {}, timestamp=None)), str(hostile_run)]
    )
    assert history.returncode == 0, history.stderr
    assert not _CONTROL.findall(history.stdout)
    assert "run\\x1b]0;pwned\\x07\\x0a (last)" in history.stdout
    assert len(history.stdout.splitlines()) == 3


def test_a_name_that_is_half_a_formula_is_charted_as_written(tmp_path: Path) -> None:
    report = report_with(
        tmp_path / "r.json", {HEAVY: "flow$\\frac{$_x", "kstat_demo_light_socket_filter": ESCAPER}
    )
    charts = tmp_path / "charts"
    completed = run_kstat(["plot", str(report), "-o", str(charts)])
    assert completed.returncode == 0, completed.stderr
    assert (charts / "overview.png").stat().st_size > 10_000
    assert "flow$\\frac{$_x" in (charts / "summary.txt").read_text()


def test_log_lines_on_a_terminal_show_control_characters_spelt_out(tmp_path: Path) -> None:
    output = tmp_path / "chart\x1b]0;pwned\x07\x1b[2J.png"
    primary, secondary = pty.openpty()
    completed = subprocess.run(
        [*KSTAT, "history", str(GOLDEN), "-o", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        timeout=60,
        check=False,
    )
    os.close(secondary)
    received = b""
    while select.select([primary], [], [], 0.5)[0]:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    os.close(primary)
    assert completed.returncode == 0
    assert b"chart written" in received
    assert b"\x1b]" not in received and b"\x07" not in received and b"\x1b[2J" not in received
    assert b"chart\\x1b]0;pwned\\x07\\x1b[2J.png" in received
