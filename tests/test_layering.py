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

import kstat

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
    "kstat.core",
    "kstat.sources.iterator",
    "kstat.sources.syscalls",
    "kstat._logging",
    "kstat._atomic",
)


def test_the_launch_imports_nothing_slow_before_its_baseline() -> None:
    """`kstat._baseline`, as the console script imports it (after `signal`): nothing above.
    Without site (-S), so that this checkout's own editable-install finder imports nothing."""
    program = (
        f"import sys; sys.path.insert(0, {str(PACKAGE.parent)!r}); import signal; "
        "from kstat import _baseline; _baseline.collects(['-duration', '1s']); "
        "print(' '.join(sorted(sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-S", "-c", program], capture_output=True, text=True, check=True
    )
    imported = completed.stdout.split()
    assert "kstat.sources.program_iterator" in imported
    slow = [
        name
        for name in imported
        if any(name == banned or name.startswith(f"{banned}.") for banned in _NOT_AT_LAUNCH)
    ]
    assert slow == []
