"""Modules a dependency imports at its top but uses only in what kstat never or rarely calls:
while that dependency is imported, each gets a stand-in that imports the real module at its
first use. The stand-ins stay in the importer's namespace only; every later import gets the
real module."""

from __future__ import annotations

import contextlib
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
