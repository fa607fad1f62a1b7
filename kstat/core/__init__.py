"""Pure values and arithmetic: programs, counters, spans, changes, deltas, the metric catalogue, the
report. No I/O, no clocks, no trio, no ctypes: everything here is testable with plain values."""
