"""The layering of docs/architecture.md, checked: every `import` of every kstat module (lazy ones
inside functions included) goes to a layer it may use. A new import against it fails here."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

import kstat
from kstat.sources import offsets_cache
from kstat.sources.program_iterator import VMLINUX_BTF, KernelOffsets

PACKAGE: Final = Path(kstat.__file__).parent

# Modules every layer may import: they import nothing of kstat's above them.
_BASE: Final = (
    "kstat.errors",
    "kstat.durations",
    "kstat._version",
    "kstat._moments",
    "kstat._values",
    "kstat._writev",
)
_LOGGING: Final = ("kstat._logging",)
_TEXT: Final = ("kstat.text",)
# Files written as root without following what another user planted.
_SAFE_WRITES: Final = ("kstat._atomic",)

# Each layer, and the kstat modules (by prefix) it may import besides its own.
LAYERS: Final[dict[str, tuple[str, ...]]] = {
    # bpf(2) and nothing else.
    "kstat.abi": _BASE,
    # Pure values and arithmetic; the ABI's names of program types are pure data.
    "kstat.core": (*_BASE, *_TEXT, "kstat.abi.enums"),
    # Host reads that return core values.
    "kstat.sources": (*_BASE, *_LOGGING, *_TEXT, *_SAFE_WRITES, "kstat.abi", "kstat.core"),
    # Pure encoders and decoders.
    "kstat.formats": (*_BASE, *_TEXT, "kstat.core"),
    # trio: the sampler, the scheduler, the summary.
    "kstat.engine": (*_BASE, *_LOGGING, *_TEXT, "kstat.core", "kstat.sources", "kstat.formats"),
    # Built-in sinks use exactly what a third party's use: the public sink API.
    "kstat.sinks": ("kstat.sink",),
}
# Outside the layers and on top of them: the CLI's commands, kstat top, the analyses, the
# testing helpers, the library API and the public sink API.
TOP: Final = (
    "kstat.commands",
    "kstat.live",
    "kstat.analysis",
    "kstat.testing",
    "kstat.api",
    "kstat.cli",
    "kstat.sink",
    "kstat.report_files",
)
# Standard-library modules that mean I/O, threads or the event loop: the core has none.
_NOT_IN_CORE: Final = ("trio", "ctypes", "os", "socket", "subprocess", "threading", "select", "signal")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> Iterator[tuple[str, Path]]:
    # Through links too: kstat/sinks is the repository's top-level sinks/ folder.
    for directory, _, files in sorted(os.walk(PACKAGE, followlinks=True)):
        for file in sorted(files):
            if file.endswith(".py"):
                yield _module_name(Path(directory) / file), Path(directory) / file


def _imports(path: Path, module: str) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, only for type checking) of every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    checking_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            checking_only |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in checking_only
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            # `from kstat.abi import bpf` imports kstat.abi.bpf.
            for alias in node.names:
                yield (
                    f"{name}.{alias.name}" if name in ("kstat", *LAYERS, *TOP) else name,
                    node.lineno,
                    (id(node) in checking_only),
                )


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer_of(module: str) -> str | None:
    return next((layer for layer in LAYERS if _within(module, layer)), None)


def test_every_module_is_in_a_layer_or_on_top() -> None:
    unplaced = [
        module
        for module, _ in _modules()
        if _layer_of(module) is None
        and not any(_within(module, top) for top in TOP)
        and module not in ("kstat", *_BASE, *_LOGGING, *_TEXT)
        and not module.startswith("kstat._")
        and module != "kstat.__main__"
    ]
    assert unplaced == []


def test_every_import_goes_to_a_layer_it_may_use() -> None:
    wrong = []
    for module, path in _modules():
        layer = _layer_of(module)
        if layer is None:
            continue
        allowed = (layer, *LAYERS[layer])
        for imported, line, checking_only in _imports(path, module):
            permitted = any(_within(imported, prefix) for prefix in allowed)
            if _within(imported, "kstat") and not permitted:
                wrong.append(f"{module}:{line} imports {imported}")
            if layer == "kstat.core" and not checking_only and imported.split(".")[0] in _NOT_IN_CORE:
                wrong.append(f"{module}:{line} imports {imported} (the core does no I/O)")
    assert wrong == []


def test_the_base_modules_import_nothing_above_them() -> None:
    wrong = []
    for module, path in _modules():
        if module not in _BASE:
            continue
        for imported, line, _ in _imports(path, module):
            if _within(imported, "kstat") and imported not in _BASE:
                wrong.append(f"{module}:{line} imports {imported}")
    assert wrong == []


# What the command line's path from launch to its baseline read may not import: each costs the
# launch milliseconds (BENCHMARKS.md, launch to the baseline read), and none is needed there.
# re, enum, functools and collections come with json, signal, contextlib and threading.
_NOT_AT_LAUNCH: Final = (
    "attr",
    "attrs",
    "cattrs",
    "structlog",
    "trio",
    "rich",
    "typing",
    "pathlib",
    "hashlib",
    "tempfile",
    "inspect",
    "ast",
    "dataclasses",
    "re",
    "enum",
    "functools",
    "collections",
    "json",
    "signal",
    "contextlib",
    "threading",
    "importlib",
    "warnings",
    "array",
    "kstat.core",
    "kstat.sources.iterator",
    "kstat.sources.syscalls",
    "kstat._logging",
    "kstat._atomic",
)
# In the repository (an install puts it in its own bin directory, as that interpreter's).
CONSOLE_SCRIPT: Final = Path(__file__).resolve().parents[1] / "bin" / "kstat"


def _slow(imported: list[str]) -> list[str]:
    return [name for name in imported if any(_within(name, banned) for banned in _NOT_AT_LAUNCH)]


def test_the_launch_imports_nothing_slow_before_its_baseline() -> None:
    """`kstat._baseline`, as the console script imports it (through `kstat._entry`): nothing
    above. Without site (-S), so that this checkout's own editable-install finder imports nothing."""
    program = (
        f"import sys; sys.path.insert(0, {str(PACKAGE.parent)!r}); from kstat import _entry; "
        "from kstat import _baseline; _baseline.collects(['-duration', '1s']); "
        "print(' '.join(sorted(sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-S", "-c", program], capture_output=True, text=True, check=True
    )
    imported = completed.stdout.split()
    assert "kstat.sources.program_iterator" in imported
    assert _slow(imported) == []


# Run as the console script: every module imported by the first import after the baseline
# was taken (or, where it was not, by the CLI's first), printed with what was taken; then out.
_UNTIL_THE_BASELINE = """
import os, sys
sys.path.insert(0, {checkout!r})
sys.argv = ["kstat", "-duration", "1s", "-output", {output!r}]

def until_the_baseline(event, arguments):
    if event != "import":
        return
    baseline = sys.modules.get("kstat._baseline")
    taken = getattr(baseline, "_taken", [])
    if taken or arguments[0] == "kstat.cli":
        print(" ".join(sorted(sys.modules)), "TAKEN=" + ",".join(type(t).__name__ for t in taken))
        sys.stdout.flush()
        os._exit(0)

sys.addaudithook(until_the_baseline)
exec(compile(open({script!r}).read(), {script!r}, "exec"))
"""


@pytest.mark.kernel
def test_the_console_script_takes_its_baseline_by_iterator_before_anything_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bin/kstat, run for a window on this kernel with its offsets cached: the baseline is read
    by kstat's iterator before the CLI is imported, and nothing slow was imported by then."""
    monkeypatch.setenv("KSTAT_CACHE_DIR", str(tmp_path / "cache"))
    # Parsed from this kernel's BTF and cached (not by an iterator: this process may have its
    # offsets already, from an earlier test, and write no cache).
    offsets_cache.offsets(KernelOffsets, KernelOffsets.of_running_kernel, VMLINUX_BTF)
    program = _UNTIL_THE_BASELINE.format(
        checkout=str(PACKAGE.parent), output=str(tmp_path / "report.json"), script=str(CONSOLE_SCRIPT)
    )
    completed = subprocess.run(
        [sys.executable, "-S", "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    *imported, taken = completed.stdout.split()
    assert taken == "TAKEN=_Walk"
    assert _slow(imported) == []
    assert not (tmp_path / "report.json").exists()


def test_the_console_scripts_are_kstats_own() -> None:
    """Not entry points, whose generated wrapper imports re: `#!python` (pip writes the venv's
    interpreter there), then kstat's entry and nothing else; the Go tool's name is the same file."""
    lines = CONSOLE_SCRIPT.read_text().splitlines()
    assert lines[0] == "#!python"
    code = [line for line in lines[1:] if line and not line.startswith("#")]
    assert code == ["from kstat._entry import main", "main()"]
    assert (CONSOLE_SCRIPT.parent / "collect-kernel-stats").resolve() == CONSOLE_SCRIPT.resolve()
