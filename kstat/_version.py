"""kstat's version: the one source (pyproject.toml reads it from here when the package is
built), a literal, so that learning it imports nothing."""

__version__ = "0.2.0"
