"""Wire formats as pure encoders and decoders: report JSON (every version), NDJSON nested and
records, StatsD lines, the Prometheus exposition. Transports are the sinks' business."""
