"""`python -m kstat`: the same as the `kstat` command."""

from kstat.cli import entry_point

if __name__ == "__main__":
    entry_point()
