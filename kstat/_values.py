"""A value class without attrs, for the modules on paths that import none (the launch's baseline
read, the counter clock's process, `kstat list`'s lean path): a subclass declares its fields as
`__slots__` and sets them in its `__init__`; it is compared, hashed and shown by them, in that
order. Imports nothing."""

from __future__ import annotations


class PlainValue:
    __slots__ = ()

    def _values(self) -> tuple[object, ...]:
        names: tuple[str, ...] = type(self).__slots__
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        names: tuple[str, ...] = type(self).__slots__
        values = ", ".join(f"{name}={value!r}" for name, value in zip(names, self._values(), strict=True))
        return f"{type(self).__name__}({values})"
