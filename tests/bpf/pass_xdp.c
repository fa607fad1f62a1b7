// An XDP program attached by iproute2 in generic mode (`ip link set dev X xdpgeneric obj ...`).
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

SEC("xdp")
int kstat_t_pass_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
