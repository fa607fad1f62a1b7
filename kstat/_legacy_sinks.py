"""`import sinks.ndjson` for code written against kstat 0.2, whose built-in sinks were a
top-level `sinks` package: an alias of `kstat.sinks`, with a DeprecationWarning, for one release.

The finder goes last on `sys.meta_path`, so another project's own `sinks` package, where one is
installed, is found first and never shadowed. Nothing is imported until an old name is asked
for: `import kstat` must stay cheap (the CLI takes over Ctrl-C only after it).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: `import kstat` imports no typing (nor re with it)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

_OLD = "sinks"
_NEW = "kstat.sinks"


class _AliasLoader:
    """Gives the `kstat.sinks` module for its old name (a `importlib.abc.Loader`)."""

    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        import importlib  # noqa: PLC0415 - only when an old name is imported
        import warnings  # noqa: PLC0415

        warnings.warn(
            f"`{spec.name}` is now `{self._target}`; the old name stops working in kstat 0.4",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self._target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is executed by its own import."""


class _LegacySinksFinder:
    """Finds `sinks` and `sinks.*` as aliases (a `importlib.abc.MetaPathFinder`)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != _OLD and not fullname.startswith(_OLD + "."):
            return None
        import importlib.util  # noqa: PLC0415 - only when an old name is imported
        from importlib.machinery import ModuleSpec  # noqa: PLC0415

        new_name = _NEW + fullname[len(_OLD) :]
        if importlib.util.find_spec(new_name) is None:
            return None
        return ModuleSpec(fullname, _AliasLoader(new_name), is_package=fullname == _OLD)  # type: ignore[arg-type]


def install() -> None:
    """Once per process (importing kstat does it)."""
    if not any(isinstance(finder, _LegacySinksFinder) for finder in sys.meta_path):
        sys.meta_path.append(_LegacySinksFinder())
