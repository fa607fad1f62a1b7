"""The support table of docs/kernels.md, one row per kernel, written by `make test-kernels`
from what each kernel's run found (never by hand): the rows between the two markers are
replaced, those of kernels not run this time kept."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

BEGIN: Final = "<!-- support-table: written by `make test-kernels`, do not edit by hand -->"
END: Final = "<!-- support-table: end -->"
HEADER: Final = (
    "| Kernel | Release | Snapshots by | Recursion misses | Verified instructions "
    "| Attachments by link | Attachments by netlink | BTF names | BPF memory charged to memlock "
    "| optmem_max | Tests (passed, failed, skipped) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
)


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class Counted(Protocol):
    @property
    def passed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def skipped(self) -> int: ...


def row(name: str, facts: Mapping[str, Any], counts: Counted) -> str:
    if facts.get("snapshot_method") == "iterator":
        snapshots = f"iterator (per-CPU offsets by {facts.get('per_cpu_offsets', '?')}"
        # Rows written before kstat said how its iterator reads say nothing of it.
        reads = facts.get("iterator_reads")
        snapshots += f"; reads by {reads})" if reads else ")"
    else:
        snapshots = f"syscalls: {facts.get('iterator_refused', 'the iterator was refused')}"
    cells = [
        name,
        facts.get("release", "?"),
        snapshots,
        _yes_no(facts.get("recursion_misses")),
        _yes_no(facts.get("verified_instructions")),
        ", ".join(facts.get("attachment_links", [])) or "none",
        ", ".join(facts.get("attachment_netlink", [])),
        _yes_no(facts.get("btf_names")),
        _yes_no(facts.get("memlock_charged")),
        str(facts.get("optmem_max")),
        f"{counts.passed}, {counts.failed}, {counts.skipped}",
    ]
    return "| " + " | ".join(_cell(str(cell)) for cell in cells) + " |"


def _key(name: str) -> str:
    """Rows by kernel; the native kernel's one row whatever its version."""
    return name.split(maxsplit=1)[0]


def _version_key(line: str) -> tuple[int, ...]:
    """Rows by kernel version, the native kernel's last."""
    first = line.strip("|").split("|", 1)[0].strip()
    digits = re.match(r"\d+(\.\d+)*", first)
    return tuple(int(part) for part in digits.group(0).split(".")) if digits else (1 << 30,)


def update(document: Path, rows: Mapping[str, str], preamble: Sequence[str]) -> None:
    """Replace the rows of the kernels in `rows` in the table of `document` (created with
    `preamble` above the table if missing), keeping the others; ordered by version."""
    text = document.read_text() if document.exists() else "\n".join(preamble) + f"\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    before, rest = text.split(BEGIN, 1)
    table, after = rest.split(END, 1)
    kept: dict[str, str] = {}
    for line in table.strip().splitlines():
        if line.startswith("| ") and not line.startswith(HEADER[0][:10]):
            kept[_key(line.strip("|").split("|", 1)[0].strip())] = line
    kept.update({_key(name): line for name, line in rows.items()})
    ordered = sorted(kept.values(), key=_version_key)
    body = "\n".join([*HEADER, *ordered])
    temporary = document.with_name(document.name + ".tmp")
    temporary.write_text(f"{before}{BEGIN}\n{body}\n{END}{after}")
    temporary.replace(document)
