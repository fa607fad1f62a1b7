"""What kstat reads from the host, turned into core values: the syscall and iterator readers,
owners, workloads, attachments, the stats switch, host facts."""
