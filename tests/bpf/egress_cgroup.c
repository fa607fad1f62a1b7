// A cgroup_skb program loaded and attached to a cgroup by bpftool, without a bpf_link.
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

SEC("cgroup_skb/egress")
int kstat_t_cg_egress(struct __sk_buff *skb)
{
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
