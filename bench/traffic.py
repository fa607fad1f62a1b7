"""Time-stamped traffic: where a tool read the counters, told by the packets it counted.

A pair of probe programs gets packets at a known steady rate, each packet's send time logged
(CLOCK_MONOTONIC, taken just before the send: loopback runs the filter inside the send, so the
counter has moved when it returns):

- the early probe from just before the tool is launched until half its window: what it counted
  is what was sent after its baseline read, so the send times place that read;
- the late probe from half the window until the tool has exited: what it counted is what was
  sent before its final read.

The span between the two reads is the true span of the counters, which the tool's rates should
divide by. A tool that walks programs one by one reads some early in a pass and others late, so
the bench places a pair at each end of the id order. Busy programs get steady, untimed traffic:
the work a window sees.

The reads are placed to within one gap between sends (about 0.1 ms at 8,500 packets a second).
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections.abc import Sequence
from typing import Final

from attrs import frozen

from kstat.testing.loader import LoopbackTarget

NS_PER_S: Final = 1_000_000_000
# The sender's pace: every millisecond it sends what is due.
_TICK_NS: Final = 1_000_000


@frozen
class Located:
    """A counter read placed between two sends: after the one at `after_ns`, before the one at
    `before_ns` (CLOCK_MONOTONIC)."""

    after_ns: int
    before_ns: int

    @property
    def at_ns(self) -> int:
        return (self.after_ns + self.before_ns) // 2

    @property
    def uncertainty_ns(self) -> int:
        return (self.before_ns - self.after_ns) // 2


class TrafficError(Exception):
    """The traffic cannot place a read (it began after it, or ended before it)."""


def baseline_read(send_times_ns: Sequence[int], counted: int) -> Located:
    """The read after which the last `counted` of these sends were counted."""
    first_counted = len(send_times_ns) - counted
    if counted <= 0:
        raise TrafficError("no packet of the early probe was counted: its baseline came after them all")
    if first_counted <= 0:
        raise TrafficError(
            f"{counted:,} packets counted of {len(send_times_ns):,} sent: the read came before the traffic"
        )
    return Located(send_times_ns[first_counted - 1], send_times_ns[first_counted])


def final_read(send_times_ns: Sequence[int], counted: int) -> Located:
    """The read that counted the first `counted` of these sends."""
    if counted <= 0:
        raise TrafficError("no packet of the late probe was counted: the final read came before them")
    if counted >= len(send_times_ns):
        raise TrafficError(f"all {counted:,} packets of the late probe were counted: it stopped too early")
    return Located(send_times_ns[counted - 1], send_times_ns[counted])


def sent_between(send_times_ns: Sequence[int], start_ns: int, end_ns: int) -> int:
    """How many sends came at or after `start_ns` and before `end_ns`."""
    return bisect.bisect_left(send_times_ns, end_ns) - bisect.bisect_left(send_times_ns, start_ns)


class ProbePair:
    """Two probe programs' targets, the early and the late one, and their packets' send times."""

    def __init__(self, early: LoopbackTarget, late: LoopbackTarget, rate_per_s: int) -> None:
        self.early, self.late, self.rate_per_s = early, late, rate_per_s
        self.early_times_ns: array[int] = array("q")
        self.late_times_ns: array[int] = array("q")

    def send_due(self, now_ns: int, started_ns: int, late_started_ns: int | None) -> None:
        """Send what is due by now: the early probe's packets until the late one takes over."""
        clock = time.monotonic_ns
        if late_started_ns is None:
            target, times, since_ns = self.early, self.early_times_ns, started_ns
        else:
            target, times, since_ns = self.late, self.late_times_ns, late_started_ns
        for _ in range((now_ns - since_ns) * self.rate_per_s // NS_PER_S + 1 - len(times)):
            times.append(clock())
            target.send(1)

    def baseline(self, counted: int) -> Located:
        return baseline_read(self.early_times_ns, counted)

    def final(self, counted: int) -> Located:
        return final_read(self.late_times_ns, counted)


class TimedTraffic:
    """Probe pairs' timed packets and the busy programs' steady ones, sent by one thread from
    `start()` until `stop()`; `switch_at(ns)` says when the late probes take over."""

    def __init__(
        self, pairs: Sequence[ProbePair], busy: Sequence[LoopbackTarget], busy_rate_per_s: int
    ) -> None:
        self.pairs, self.busy = tuple(pairs), tuple(busy)
        self.busy_rate_per_s = busy_rate_per_s
        self.busy_sent = 0
        # Far in the future until the launch says when half the window is.
        self._switch_ns = 2**62
        self._stop = threading.Event()
        self._first_sent = threading.Event()
        self._thread = threading.Thread(target=self._send, name="timed traffic", daemon=True)

    def start(self) -> None:
        """Start sending; returns once the first early packets are out."""
        self._thread.start()
        if not self._first_sent.wait(10):
            raise TrafficError("the sender did not start")

    def switch_at(self, monotonic_ns: int) -> None:
        self._switch_ns = monotonic_ns

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _send(self) -> None:
        clock = time.monotonic_ns
        busy = self.busy
        started = clock()
        late_started: int | None = None
        while not self._stop.is_set():
            now = clock()
            if late_started is None and now >= self._switch_ns:
                late_started = now
            for pair in self.pairs:
                pair.send_due(now, started, late_started)
            self._first_sent.set()
            if busy:
                due = (now - started) * self.busy_rate_per_s // NS_PER_S - self.busy_sent
                for index in range(self.busy_sent, self.busy_sent + due):
                    busy[index % len(busy)].send(1)
                self.busy_sent += max(due, 0)
            time.sleep(max(0, _TICK_NS - (clock() - now)) / NS_PER_S)
