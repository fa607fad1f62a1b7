"""The suite names what it creates on the host with its token (tests/names.py), never with a
fixed name another suite on the same host would create too."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

TESTS = Path(__file__).parent
# The old fixed prefixes of programs, devices, cgroups and pins.
FIXED = ("kstat_t_", "kstat_t.", "kstat-t-", "kt-")
# Literals that keep one, and why.
KEPT = {
    # The BTF name compiled into tests/bpf/flow_tc.c's object, loaded by tc (told apart by id).
    ("test_real_loaders.py", '"kstat_t_flow_tc"'),
    # Two sinks at one path: refused before anything is written.
    ("test_faults.py", '"/tmp/kstat-t-same.json"'),
    ("test_faults.py", '"ndjson:/tmp/../tmp/kstat-t-same.json"'),
    # mkdtemp's prefix: the rest of the name is random.
    ("test_safe_writes.py", '"kstat-t-shared-"'),
}


def fixed_names(source: str) -> list[tuple[int, str]]:
    """String literals (not docstrings, not comments) that hold one of the fixed prefixes."""
    found = []
    previous = tokenize.NEWLINE
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and any(prefix in token.string for prefix in FIXED):
            docstring = previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL)
            if not docstring:
                found.append((token.start[0], token.string))
        if token.type != tokenize.COMMENT:
            previous = token.type
    return found


def test_no_test_creates_a_name_another_suite_would_create_too() -> None:
    offending = [
        f"{path.relative_to(TESTS)}:{line}: {literal}"
        for path in sorted(TESTS.rglob("*.py"))
        if "node_modules" not in path.parts and path.name != "test_names.py"
        for line, literal in fixed_names(path.read_text())
        if (path.name, literal) not in KEPT
    ]
    assert not offending, "name it with tests.names (KT, host_name):\n" + "\n".join(offending)


def test_fixed_names_are_found_in_code_and_not_in_docstrings() -> None:
    source = '"""A docstring on kstat_t_x."""\nload("kstat_t_y")\n# kstat_t_z\nx = f"kt-{x}"\n'
    assert fixed_names(source) == [(2, '"kstat_t_y"'), (4, 'f"kt-{x}"')]
