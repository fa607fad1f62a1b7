"""Modules a dependency imports at its top but uses only in what kstat never or rarely calls:
while that dependency is imported, each gets a stand-in that imports the real module at its
first use. The stand-ins stay in the importer's namespace only; every later import gets the
real module."""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType

# Not `typing.TYPE_CHECKING`: the logging module imports this one, and `kstat list` imports
# nothing of typing at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class ImportedWhenUsed(ModuleType):
    """Stands in for a module in one importer's namespace: the real one is imported at its
    first use."""

    def __getattr__(self, name: str) -> Any:
        import importlib  # noqa: PLC0415

        if sys.modules.get(self.__name__) is self:
            # Used while it still stands in (at an importer's top): the real one takes its place.
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


@contextlib.contextmanager
def deferred(*names: str) -> Iterator[None]:
    """Inside: `import NAME` of a module not imported yet gets a stand-in."""
    stand_ins = {name: ImportedWhenUsed(name) for name in names if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


class _LibraryFinder(ImportedWhenUsed):
    """`ctypes.util` while a dependency imports: its `find_library` finds a library installed
    beside the C library this process runs on without running anything, and asks the real
    module (imported then) only when none is there.

    The real one runs `ldconfig -p` (and, failing that, the C compiler) in a child process at
    every call: trio asks it for libpthread at its import, to name its threads, which cost every
    kstat a process spawned at launch and 0.8 MB of imports (shutil with bz2 and lzma,
    tempfile) for the rest of its life."""

    def find_library(self, name: str) -> str | None:
        found = _beside_libc(name)
        return found if found is not None else self.__getattr__("find_library")(name)


def _beside_libc(name: str) -> str | None:
    """`libNAME.so.N`, as the dynamic loader's cache names it, when the directory of the C
    library mapped into this process has that file; None when not (or when it cannot tell)."""
    prefix = f"lib{name}.so."
    try:
        with open("/proc/self/maps", "rb") as maps:
            directories = {
                os.path.dirname(os.fsdecode(fields[-1]))
                for fields in (line.split() for line in maps)
                if len(fields) == 6 and os.path.basename(fields[-1]).startswith(b"libc.so.")
            }
        for directory in sorted(directories):
            for entry in sorted(os.listdir(directory)):
                if entry.startswith(prefix) and entry[len(prefix) :].isdigit():
                    return entry
    except (OSError, ValueError):
        return None
    return None


@contextlib.contextmanager
def libraries_found_without_ldconfig() -> Iterator[None]:
    """Inside: an import of `ctypes.util` not imported yet gets `_LibraryFinder`; a module that
    keeps it keeps a stand-in that becomes the real module at any other use."""
    if "ctypes.util" in sys.modules:
        yield
        return
    import ctypes  # noqa: PLC0415 - ctypes is the package the stand-in's module belongs to

    finder = _LibraryFinder("ctypes.util")
    sys.modules["ctypes.util"] = finder
    ctypes.util = finder  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if sys.modules.get("ctypes.util") is finder:
            del sys.modules["ctypes.util"]
        if getattr(ctypes, "util", None) is finder:
            del ctypes.util  # type: ignore[attr-defined]
