"""The pipeline: snapshots, interval deltas and events, the summary and the report, the metric catalogue."""
