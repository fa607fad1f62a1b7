"""kstat's built-in sinks, one module each, registered in the `kstat.sinks` entry-point group."""
