// A tc classifier as agents write them: BTF, a hash map of packets per protocol, built by clang
// and attached by iproute2 (`tc filter add ... bpf da obj flow_tc.o sec tc`).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#define SEC(name) __attribute__((section(name), used))

struct {
	int (*type)[BPF_MAP_TYPE_HASH];
	int (*max_entries)[64];
	__u32 *key;
	__u64 *value;
} kstat_t_flows SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;

SEC("tc")
int kstat_t_flow_tc(struct __sk_buff *skb)
{
	__u32 protocol = skb->protocol;
	__u64 one = 1, *packets = bpf_map_lookup_elem(&kstat_t_flows, &protocol);

	if (packets)
		__sync_fetch_and_add(packets, 1);
	else
		bpf_map_update_elem(&kstat_t_flows, &protocol, &one, BPF_ANY);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
