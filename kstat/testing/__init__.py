"""Testing with kstat (like `trio.testing`): real programs to measure, budgets, a pytest plugin.

- `kstat.testing.loader`: socket filters loaded through kstat's own bpf(2) layer, attached to
  loopback UDP sockets, so that the kernel's run count equals the packets sent;
- `kstat.testing.budget`: readable assertions on a program's kernel-side cost;
- `kstat.testing.pytest_plugin`: the `kernel_stats` fixture (registered as a pytest11 plugin);
- `kstat.testing.workload`: the demo's programs and traffic.
"""

from __future__ import annotations

from kstat.testing.budget import BudgetExceeded as BudgetExceeded
from kstat.testing.budget import ProgramBudget as ProgramBudget
from kstat.testing.budget import expect_program as expect_program
from kstat.testing.loader import LoopbackTarget as LoopbackTarget
from kstat.testing.loader import SocketFilter as SocketFilter
