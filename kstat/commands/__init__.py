"""One module per subcommand, each owning its arguments and its run; `kstat.cli` dispatches."""
