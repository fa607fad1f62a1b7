"""The names this suite gives to what it creates on the host, one token per suite.

Two suites run at once on one machine (two clones, two CI jobs on one runner) share the host:
its programs, cgroups, network devices, bpffs pins and /tmp. A test that loads a program named
`kstat_t_cli` and then looks for `kstat_t_cli` finds the other suite's program too. So every
name a test creates carries this suite's token: programs are named `f"{KT}cli"`
(`kt<token>_cli`, as long as the old `kstat_t_` prefix, so every name still fits the kernel's
15 characters); devices, namespaces, cgroups and pins are named by `host_name()`.

The token is drawn once per suite and handed to the suite's own helper processes through the
environment, so that `python -m tests.program_holder` started by a test names its programs as
the test that started it expects (and so that tests/stats_holders.py can tell the suite's own
processes); where a process does not inherit it (a tmux session's, which has the tmux server's
environment), the test sets it.
"""

from __future__ import annotations

import os
import secrets
import string
from typing import Final

__all__ = ["KT", "TOKEN", "TOKEN_VARIABLE", "host_name"]

TOKEN_VARIABLE: Final = "KSTAT_TEST_TOKEN"
_ALPHABET: Final = string.ascii_lowercase + string.digits


def _new_token() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(5))


# Five characters of [a-z0-9]: one chance in 60 million that two suites draw the same.
TOKEN: Final = os.environ.setdefault(TOKEN_VARIABLE, _new_token())

# The prefix of every program (and map) name a test loads: 8 characters, as `kstat_t_` was.
KT: Final = f"kt{TOKEN}_"


def host_name(role: str) -> str:
    """A name of this suite's for a network device, namespace, cgroup or pin: `kt<token>-<role>`
    (a device's name fits the kernel's 15 characters while `role` has at most 7)."""
    return f"kt{TOKEN}-{role}"
