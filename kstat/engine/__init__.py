"""The trio side: the sampler, the ticker, the scheduler that fans events out to sinks, the summary."""
