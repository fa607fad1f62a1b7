"""A module's public names imported on first use (PEP 562), declared once: as the imports of
its `if TYPE_CHECKING:` block, which type checkers read and this module parses, on the first
name asked for.

    from kstat.formats.ndjson import json_line as json_line     # json_line from there
    from kstat.formats import statsd as _statsd                 # (a module, for the next line)
    StatsdNaming = _statsd.Naming                               # StatsdNaming: its Naming
"""

from __future__ import annotations

import sys

# Not `typing.TYPE_CHECKING`: `import kstat` imports no typing (nor ast or pathlib: the block
# is parsed when a name is first asked for), nor importlib (with warnings): `__import__` and
# sys.modules do its import_module's work.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class LazyNames:
    """The public names of module `name` (its file's first `if TYPE_CHECKING:` block), each
    imported when first asked for and kept in the module's namespace after."""

    def __init__(self, name: str) -> None:
        self._module = name
        self._names: dict[str, tuple[str, str]] | None = None

    def names(self) -> dict[str, tuple[str, str]]:
        """Public name -> (module, name there)."""
        if self._names is None:
            self._names = _declared(sys.modules[self._module].__file__ or "")
        return self._names

    def get(self, name: str) -> Any:
        """The value of public `name` (AttributeError for any other), imported now."""
        if name.startswith("_") and not name.endswith("__"):
            # A private submodule (`from kstat import _baseline` asks here first): nothing public.
            raise AttributeError(f"module {self._module!r} has no attribute {name!r}")
        try:
            module, original = self.names()[name]
        except KeyError:
            raise AttributeError(f"module {self._module!r} has no attribute {name!r}") from None
        __import__(module)
        value = getattr(sys.modules[module], original)
        setattr(sys.modules[self._module], name, value)
        return value

    def listed(self) -> list[str]:
        """For `__dir__`: the public names."""
        return sorted(self.names())


def _declared(source: str) -> dict[str, tuple[str, str]]:
    import ast  # noqa: PLC0415

    with open(source, encoding="utf-8") as text:
        tree = ast.parse(text.read())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    names: dict[str, tuple[str, str]] = {}
    modules: dict[str, str] = {}
    for node in block.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bound = alias.asname or alias.name
                if bound.startswith("_") and not bound.endswith("__"):  # a module, for below
                    modules[bound] = f"{node.module}.{alias.name}"
                else:
                    names[bound] = (node.module or "", alias.name)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = (modules[node.value.value.id], node.value.attr)
    return names
