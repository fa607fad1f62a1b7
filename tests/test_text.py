"""The one rule for host bytes and the escaping of each output medium (kstat/text.py)."""

from __future__ import annotations

import os
import unicodedata

from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from kstat.text import for_markdown, for_terminal, for_terminal_each, from_host, from_host_each

# What a hostile name holds: a comm cut in the middle of `é`, a title change, a screen clear,
# a newline, a right-to-left override, DEL and a C1 CSI.
HOSTILE = "kpr-\x1b]0;pwned\x07\x1b[2J\nnext\u202eevil\x7f\x9b"


def test_host_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    assert from_host(b"kpr-flowagent-\xc3") == "kpr-flowagent-\ufffd"
    assert from_host(b"caf\xc3\xa9") == "café"


def test_an_os_string_with_escaped_bytes_becomes_text_that_encodes() -> None:
    # os.listdir and os.walk return undecodable bytes as lone surrogates.
    name = os.fsdecode(b"pod-\xff\xfe_ns")
    assert from_host(name) == "pod-\ufffd\ufffd_ns"
    from_host(name).encode("utf-8")


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_text_that_encodes(raw: bytes) -> None:
    from_host(raw).encode("utf-8")
    from_host(os.fsdecode(raw)).encode("utf-8")


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_many_host_names_decode_as_each_alone(raws: list[bytes]) -> None:
    assert from_host_each(raws) == [from_host(raw) for raw in raws]


@given(st.lists(st.text(max_size=40), max_size=20))
def test_many_names_reach_the_terminal_as_each_alone(texts: list[str]) -> None:
    assert for_terminal_each(texts) == [for_terminal(text) for text in texts]
    assert for_terminal_each([*texts, HOSTILE]) == [*map(for_terminal, texts), for_terminal(HOSTILE)]


def test_the_terminal_sees_control_characters_spelt_out() -> None:
    shown = for_terminal(HOSTILE)
    assert shown == "kpr-\\x1b]0;pwned\\x07\\x1b[2J\\x0anext\\u202eevil\\x7f\\x9b"


def test_printable_names_reach_the_terminal_unchanged() -> None:
    for name in ("kpr_col", "café ☕", "system-getty.slice/getty@tty1.service", "dev-disk-by\\x2duuid"):
        assert for_terminal(name) == name


@given(st.text())
def test_nothing_a_terminal_acts_on_survives(text: str) -> None:
    shown = for_terminal(text)
    assert not [char for char in shown if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"}]
    assert len(shown.splitlines()) <= 1


_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _table(names: list[str]) -> str:
    rows = "".join(f"| {for_markdown(name)} | 1 |\n" for name in names)
    return "| program | runs |\n| --- | --- |\n" + rows + "\nNo threshold exceeded.\n"


def test_a_name_cannot_add_a_row_a_line_or_a_comment() -> None:
    forged = "kpr\n| **(total)** | 0 |\n\nNo threshold exceeded.\n<!-- the rest is hidden"
    tokens = _MARKDOWN.parse(_table([forged, "kpr_col"]))
    rows = [token for token in tokens if token.type == "tr_open"]
    assert len(rows) == 3  # the heading and the two programs
    assert not [token for token in tokens if token.type.startswith("html")]
    cells = [token for token in tokens if token.type == "inline"]
    assert _shown(cells[2]) == for_terminal(forged)  # shown as it is, not read as markup
    assert _shown(cells[4]) == "kpr_col"


@given(st.text(max_size=80))
def test_any_name_is_one_literal_cell(name: str) -> None:
    tokens = _MARKDOWN.parse(_table([name]))
    assert len([token for token in tokens if token.type == "tr_open"]) == 2
    assert len([token for token in tokens if token.type == "td_open"]) == 2
    cell = [token for token in tokens if token.type == "inline"][2]
    assert _shown(cell) == for_terminal(name).strip()


def _shown(cell: Token) -> str:
    """A cell's text once Markdown has read it, checking that it made no emphasis, code, link,
    HTML or entity of it: nothing but text."""
    children = cell.children or []
    assert [child.type for child in children if child.type != "text"] == []
    return "".join(child.content for child in children)


@given(st.text(max_size=80))
def test_any_name_is_literal_text_in_a_list_item(name: str) -> None:
    # compare's violations: `- NAME: avg_runtime_ns 100 -> 150 (...)`.
    tokens = _MARKDOWN.parse(f"- {for_markdown(name)}: grew\n")
    assert [token.type for token in tokens] == [
        "bullet_list_open",
        "list_item_open",
        "paragraph_open",
        "inline",
        "paragraph_close",
        "list_item_close",
        "bullet_list_close",
    ]
    assert _shown(tokens[3]) == f"{for_terminal(name)}: grew".strip()
