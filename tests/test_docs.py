"""The documentation says what the code does: the front page's two commands and what they
install, the command-line reference generated from the parsers, and the examples the pages
show taken from the files the tests run. (Links and anchors: `mkdocs build --strict`, in
`make lint`.)"""

from __future__ import annotations

import re
from pathlib import Path

from kstat.commands._reference import REFERENCE_END, REFERENCE_START, markdown_reference, updated_page

REPO = Path(__file__).parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
# A front page: what a newcomer reads before the manual.
FRONT_PAGE_MAX_LINES = 180


def section(text: str, heading: str) -> str:
    """A Markdown section's text, from its heading to the next heading of any level."""
    start = text.index(f"{heading}\n")
    following = re.search(r"^#+ ", text[start + len(heading) :], flags=re.MULTILINE)
    return text[start : start + len(heading) + (following.start() if following else len(text))]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def is_excerpt_of(snippet: str, source: str) -> bool:
    """Every line of the snippet is in the source, in the same order (lines may be left out)."""
    lines = iter(source.splitlines())
    return all(any(line == candidate for candidate in lines) for line in snippet.splitlines())


def test_the_cli_reference_is_the_parsers() -> None:
    page = (DOCS / "cli.md").read_text()
    assert REFERENCE_START in page and REFERENCE_END in page
    # After a change to a parser, `python -m kstat.commands._reference docs/cli.md` updates it.
    assert updated_page(page) == page
    for command in ("kstat", "kstat demo", "kstat list", "kstat run", "kstat serve", "kstat top"):
        assert f"### `{command}`" in markdown_reference()
    assert "| `--fail-on METRIC:+N%` |" in markdown_reference()


def test_the_front_page_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= FRONT_PAGE_MAX_LINES
    assert lines[0] == "# kstat"


def test_the_two_commands_are_make_targets_and_say_what_they_install() -> None:
    two_commands = section(README.read_text(), "## Two commands")
    assert "make demo    #" in two_commands and "make test    #" in two_commands
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: ", makefile, flags=re.MULTILINE)
    assert re.search(r"^test: ", makefile, flags=re.MULTILINE)
    listed = re.search(r"^APT_PACKAGES := ((?:.*\\\n)*.*)$", makefile, flags=re.MULTILINE)
    assert listed is not None
    packages = [pair.split(":", 1)[0] for pair in listed.group(1).replace("\\\n", " ").split()]
    assert packages
    assert [package for package in packages if f"`{package}`" not in two_commands] == []


def test_the_sink_page_shows_the_example_sink() -> None:
    writing = section((DOCS / "sinks.md").read_text(), "## Writing a sink")
    example = REPO / "examples" / "kstat_csv_sink"
    module = next(block for block in python_blocks(writing) if block.startswith("from kstat import sink"))
    assert is_excerpt_of(module, (example / "kstat_csv_sink.py").read_text())
    entry_point = re.search(r"```toml\n(.*?)```", writing, flags=re.DOTALL)
    assert entry_point is not None
    assert is_excerpt_of(entry_point.group(1), (example / "pyproject.toml").read_text())


def test_the_library_page_shows_the_example_budget_test() -> None:
    budgets = section((DOCS / "library.md").read_text(), "## Budgets in pytest")
    (test,) = python_blocks(budgets)
    assert is_excerpt_of(test, (REPO / "examples" / "test_kernel_budget.py").read_text())
