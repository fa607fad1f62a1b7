"""`kstat top`: a live view of every program's cost that also records."""
