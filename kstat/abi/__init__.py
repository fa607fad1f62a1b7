"""The kernel ABI and nothing else: bpf(2), its structs and enums, BTF, the assembler. No policy:
what to read and when is for kstat.sources."""
