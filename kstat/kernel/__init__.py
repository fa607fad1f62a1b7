"""The kernel side: the bpf(2) ABI, BTF, the stats switch, owners and attachments, host facts."""
