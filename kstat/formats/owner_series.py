"""The owners' series of the Prometheus exposition: each process holding programs, its own CPU
and memory beside its programs' kernel CPU (`kstat_owner_*`), from the owner-metric catalogue.

Labels: `pid` and `command`, and the `pod`, `namespace`, `container` and `unit` of the
programs' info series (`kstat_program_info`), so that the two join. Counters are cumulative:
the process's own CPU time since it started (as /proc says it: `rate()` reads it), its programs'
run time since kstat met them (a program that unloads keeps what it ran in its owners'
counters, which never go back). A program several processes hold counts for each of them
(`sum()` over owners counts a shared program more than once; `kstat_program_*` once).
"""

from __future__ import annotations

from collections import Counter as Counts
from collections.abc import Iterator
from typing import Final

from attrs import define, field

from kstat.core.counters import Counters, scalar
from kstat.core.events import IntervalEnded, WindowStarted
from kstat.core.model import ProgramIdentity, ProgramOwner, ProgramStats
from kstat.core.owner_cost import OWNER_METRICS, OwnerKind, OwnerSpan, ProcessUsage

OWNER_LABELS: Final = ("pid", "command", "pod", "namespace", "container", "unit")


def _labels(owner: ProgramOwner) -> tuple[tuple[str, str], ...]:
    workload = owner.workload
    values = (
        str(owner.pid),
        owner.command,
        workload.pod or "",
        workload.namespace or "",
        workload.container_name or "",
        workload.unit or "",
    )
    return tuple(zip(OWNER_LABELS, values, strict=True))


@define
class _Held:
    owners: tuple[ProgramOwner, ...]
    # Its run time at the last reading (summed over CPUs).
    run_time_ns: int


def _run_time_ns(counters: Counters) -> int:
    return scalar(counters.run_time_ns) or 0


@define
class OwnerSeries:
    """Kept up to date from a window's events by what changed; `samples()` gives each family's
    samples, in time proportional to the owners (not the programs)."""

    _held: dict[ProgramIdentity, _Held] = field(factory=dict)
    # By owner pid: its programs' run time since kstat met them (unloaded ones' kept), how many
    # programs it holds, and who it is.
    _kernel_ns: dict[int, int] = field(factory=dict)
    _programs: Counts[int] = field(factory=Counts)
    _owner: dict[int, ProgramOwner] = field(factory=dict)
    _processes: dict[int, ProcessUsage] = field(factory=dict)

    def start(self, event: WindowStarted) -> None:
        snapshot = event.snapshot
        self._held, self._kernel_ns, self._programs, self._owner = {}, {}, Counts(), {}
        for program in snapshot.programs:
            self._hold(program, program.counters)
        self._processes = {usage.pid: usage for usage in snapshot.processes}

    def _hold(self, program: ProgramStats, baseline: Counters) -> None:
        owners = program.details.owners
        if not owners:
            return
        self._held[program.identity] = _Held(owners, _run_time_ns(baseline))
        for owner in owners:
            self._owner[owner.pid] = owner
            self._programs[owner.pid] += 1
            self._kernel_ns.setdefault(owner.pid, 0)
        self._ran(program.identity, program.counters)

    def _ran(self, identity: ProgramIdentity, counters: Counters) -> None:
        seen = self._held[identity]
        now = _run_time_ns(counters)
        if now > seen.run_time_ns:
            for owner in seen.owners:
                self._kernel_ns[owner.pid] += now - seen.run_time_ns
        seen.run_time_ns = now

    def interval(self, event: IntervalEnded) -> None:
        held = self._held
        for change in event.delta.changes:
            last = change.last
            identity = last.identity
            if identity not in held:
                if change.unloaded:
                    continue
                self._hold(last, change.baseline)
                continue
            self._ran(identity, last.counters)
            if change.unloaded:
                for owner in held.pop(identity).owners:
                    # Its run time stays in the owner's counter, which never goes back.
                    self._programs[owner.pid] -= 1
        self._processes = {usage.pid: usage for usage in event.current.processes}

    def samples(self) -> Iterator[tuple[str, str, str, list[tuple[tuple[tuple[str, str], ...], float]]]]:
        """(family name, type, help, samples) for each owner metric Prometheus has, per owner
        process read at the last pass (one that is gone is left out)."""
        spans = []
        for pid in sorted(self._processes):
            owner = self._owner.get(pid)
            if owner is None:
                continue
            usage = self._processes[pid]
            span = OwnerSpan(usage.counters, Counters(self._kernel_ns.get(pid, 0), 0), 0, self._programs[pid])
            spans.append((_labels(owner), span))
        for metric in OWNER_METRICS:
            exposition = metric.prometheus
            if exposition is None:
                continue
            kind = "counter" if metric.kind is OwnerKind.COUNTER else "gauge"
            found = []
            for labels, span in spans:
                value = metric.compute(span)
                if value is not None:
                    found.append((labels, value / exposition.divisor))
            if found:  # no owner read (yet, or a source without /proc): no family either
                yield exposition.name, kind, exposition.help, found
