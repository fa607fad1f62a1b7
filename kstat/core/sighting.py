"""What a span saw of one program: its last reading and the counters it started the span from.

The one value for "a program, its baseline and its last reading": an interval's delta holds one
per program that did something, the window's summary one per program it saw, the Prometheus
exposition one per program it shows, `kstat top` one per row. Each computes its figures as
`sighting.span(...)` through the metric catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import evolve, field, frozen

from kstat.core.catalogue import Span
from kstat.core.counters import ZERO, Counters, added, grown, is_zero
from kstat.core.model import ProgramDetails, ProgramOwner, ProgramStats


@frozen
class Sighting:
    last: ProgramStats
    # Its counters when the span began counting it: its reading in the span's first snapshot,
    # or zeros for a program loaded inside the span (all of its runs are in it).
    baseline: Counters
    # Loaded after the span began: its counters started inside it.
    loaded: bool = False
    # First met in this span: its line carries its footprint (an interval's line does once).
    first_seen: bool = True
    # Gone by the span's end: CLOCK_BOOTTIME at the start of the last pass that saw it.
    gone_after_boottime_ns: int | None = None
    # How much each counter grew over the span: worked out as the sighting is made (an
    # interval's line, its totals and its activity all ask; and the window's report asks for
    # every program's at once, after the window, where each microsecond is the report's).
    grown: Counters = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        last = self.last.counters
        # Never read again since its baseline (an idle program's usual case): the same
        # "nothing grew" for every such program, made once.
        object.__setattr__(
            self, "grown", unchanged(last) if last is self.baseline else grown(last, self.baseline)
        )

    @staticmethod
    def from_zero(program: ProgramStats) -> Sighting:
        """A program loaded inside the span: every run of it is in the span."""
        return Sighting(program, ZERO, loaded=True)

    @staticmethod
    def from_now(program: ProgramStats) -> Sighting:
        """A program already loaded when the span began: it counts from this reading."""
        return Sighting(program, program.counters)

    @property
    def details(self) -> ProgramDetails:
        """Its owners and attachments, as learnt when it was first met."""
        return self.last.details

    @property
    def id(self) -> int:
        return self.last.id

    @property
    def owners(self) -> tuple[ProgramOwner, ...]:
        """The processes holding it, as learnt when it was first met (`owner_cost.Held`)."""
        return self.last.facts.details.owners

    @property
    def unloaded(self) -> bool:
        return self.gone_after_boottime_ns is not None

    @property
    def active(self) -> bool:
        """Did anything happen to it: runs, runtime, misses, a load, an unload, or its first
        sighting (when its footprint is told)."""
        return self.first_seen or self.loaded or self.unloaded or not is_zero(self.grown)

    def span(self, elapsed_ns: int, online_cpus: int | None) -> Span:
        return Span(self.grown, elapsed_ns, online_cpus, self.last.footprint if self.first_seen else None)

    def seen_until(self, span_end_boottime_ns: int) -> int:
        """CLOCK_BOOTTIME of the last pass that saw it, as far as the span can tell."""
        gone = self.gone_after_boottime_ns
        return span_end_boottime_ns if gone is None else gone

    def coverage_percent(self, start_boottime_ns: int, end_boottime_ns: int) -> float:
        """The share of the span between its load (or the span's start) and its last sighting."""
        if self.gone_after_boottime_ns is None and self.last.load_time_ns <= start_boottime_ns:
            return 100.0  # there all along (a report's usual line): what the share comes to
        return coverage_percent(
            max(start_boottime_ns, self.last.load_time_ns),
            self.seen_until(end_boottime_ns),
            start_boottime_ns,
            end_boottime_ns,
        )

    def read_again(self, program: ProgramStats, *, gone_after_boottime_ns: int | None = None) -> Sighting:
        """The same span, carried on to a later reading (or to its last, when it went away)."""
        # Built directly, not by `evolve`: the summary carries each busy program on every interval.
        return Sighting(
            program,
            self.baseline,
            loaded=self.loaded,
            first_seen=self.first_seen,
            gone_after_boottime_ns=gone_after_boottime_ns,
        )

    def merged_after(self, earlier: Sighting) -> Sighting:
        """This span's end with an earlier span's start (consecutive spans of one program)."""
        return evolve(
            self,
            baseline=earlier.baseline,
            first_seen=earlier.first_seen,
            loaded=earlier.loaded or self.loaded,
        )


def coverage_percent(existed_from: int, existed_until: int, window_start: int, window_end: int) -> float:
    """The share of a span a program was loaded for, as far as the snapshots can tell."""
    if window_end <= window_start:
        return 100.0
    share = (existed_until - existed_from) / (window_end - window_start) * 100
    return min(100.0, max(0.0, share))


# grown(c, c) by the kinds of a reading's counters (an int, or None where the kernel lacks one).
_UNCHANGED: dict[tuple[type, ...], Counters] = {}
# Their ids (they live as long as the process, so no id is reused): asked once per line.
_UNCHANGED_IDS: set[int] = set()


def unchanged(counters: Counters) -> Counters:
    """`grown(counters, counters)`: zero where counted, None where not; one shared value per
    kind of reading (per-CPU vectors, whose length varies, are worked out each time)."""
    kinds = tuple(map(type, counters))
    if tuple in kinds:
        return grown(counters, counters)
    found = _UNCHANGED.get(kinds)
    if found is None:
        found = _UNCHANGED[kinds] = grown(counters, counters)
        _UNCHANGED_IDS.add(id(found))
    return found


def is_unchanged(counters: Counters) -> bool:
    """Whether `counters` is one of `unchanged`'s shared values (so nothing in it grew)."""
    return id(counters) in _UNCHANGED_IDS


def total_growth(many: Iterable[Counters], start: Counters = ZERO) -> Counters:
    """`summed(many, start)`, each shared "nothing grew" of `unchanged` added once: adding one
    again changes nothing (zeros, and None where it has None already)."""
    total = start
    # By identity: the shared values live in `_UNCHANGED` for the process's life.
    shared = _UNCHANGED_IDS
    done: set[int] = set()
    for counters in many:
        key = id(counters)
        if key in shared:
            if key in done:
                continue
            done.add(key)
        total = added(total, counters)
    return total
