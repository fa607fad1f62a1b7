/*
 * The floor for kstat's approach: one snapshot of every loaded eBPF program with exactly the
 * syscalls kstat makes per program (BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID,
 * BPF_OBJ_GET_INFO_BY_FD with the whole struct bpf_prog_info, close) and nothing else.
 *
 * Usage: snapshot_floor PASSES
 * Prints one JSON object: {"programs": N, "ns_per_pass": [...], "cpu_ns_per_pass": [...]}, one
 * entry per pass, each timed inside this process on CLOCK_MONOTONIC (and the CPU time the pass
 * took, on CLOCK_THREAD_CPUTIME_ID: on a loaded host, what it costs rather than how long it
 * waited for a CPU), so process start-up is not part of them.
 *
 * Built with -shared, it is also a library: floor_snapshot_records() makes the same pass and
 * hands back each program's counters, so the bench can measure what kstat would cost if only
 * its Python objects were left above a compiled pass (bench/breakdown.py).
 */
#include <errno.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_PASSES 10000
#define ATTR_SIZE_UP_TO(field) (offsetof(union bpf_attr, field) + sizeof(((union bpf_attr *)0)->field))
/* The attr sizes kstat passes: only the fields each command reads (the kernel zero-extends). */
#define ID_ATTR_SIZE ATTR_SIZE_UP_TO(open_flags)
#define INFO_ATTR_SIZE ATTR_SIZE_UP_TO(info.info)

static long sys_bpf(int command, union bpf_attr *attr, unsigned int size)
{
	return syscall(__NR_bpf, command, attr, size);
}

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec now;

	clock_gettime(clock, &now);
	return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static uint64_t monotonic_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

/* What kstat keeps of struct bpf_prog_info; bench/breakdown.py declares the same layout. */
struct floor_record {
	uint32_t id;
	uint32_t type;
	uint8_t tag[BPF_TAG_SIZE];
	char name[BPF_OBJ_NAME_LEN];
	uint64_t load_time;
	uint64_t run_time_ns;
	uint64_t run_cnt;
	uint64_t recursion_misses;
};

/*
 * One pass over all programs; returns how many were read, or -1 on an unexpected error.
 * With records, stops at capacity and copies each program's fields there.
 */
static long snapshot(uint64_t *run_cnt_sum, struct floor_record *records, long capacity)
{
	union bpf_attr attr;
	struct bpf_prog_info info;
	uint32_t id = 0;
	long programs = 0;

	for (;;) {
		memset(&attr, 0, ID_ATTR_SIZE);
		attr.start_id = id;
		if (sys_bpf(BPF_PROG_GET_NEXT_ID, &attr, ID_ATTR_SIZE) < 0) {
			if (errno == ENOENT)
				return programs; /* past the last id */
			return -1;
		}
		id = attr.next_id;

		memset(&attr, 0, ID_ATTR_SIZE);
		attr.prog_id = id;
		int fd = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr, ID_ATTR_SIZE);
		if (fd < 0) {
			if (errno == ENOENT)
				continue; /* unloaded since it was listed, as kstat skips it */
			return -1;
		}

		/* Zeroed like kstat does: pointer/count pairs left non-zero make the kernel copy arrays. */
		memset(&info, 0, sizeof(info));
		memset(&attr, 0, INFO_ATTR_SIZE);
		attr.info.bpf_fd = (uint32_t)fd;
		attr.info.info_len = sizeof(info);
		attr.info.info = (uint64_t)(uintptr_t)&info;
		long result = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr, INFO_ATTR_SIZE);
		close(fd);
		if (result < 0)
			return -1;
		/* Used, so that reading the counters is part of the work, as it is for kstat. */
		*run_cnt_sum += info.run_cnt + info.run_time_ns;
		if (records) {
			if (programs == capacity)
				return programs;
			struct floor_record *record = &records[programs];
			record->id = info.id;
			record->type = info.type;
			memcpy(record->tag, info.tag, sizeof(record->tag));
			memcpy(record->name, info.name, sizeof(record->name));
			record->load_time = info.load_time;
			record->run_time_ns = info.run_time_ns;
			record->run_cnt = info.run_cnt;
			record->recursion_misses = info.recursion_misses;
		}
		programs++;
	}
}

long floor_snapshot_records(struct floor_record *records, long capacity)
{
	uint64_t run_cnt_sum = 0;

	return snapshot(&run_cnt_sum, records, capacity);
}

int main(int argc, char **argv)
{
	long passes = argc > 1 ? strtol(argv[1], NULL, 10) : 10;
	static uint64_t ns_per_pass[MAX_PASSES];
	static uint64_t cpu_ns_per_pass[MAX_PASSES];
	uint64_t run_cnt_sum = 0;
	long programs = 0;

	if (passes < 1 || passes > MAX_PASSES) {
		fprintf(stderr, "usage: %s PASSES (1..%d)\n", argv[0], MAX_PASSES);
		return 2;
	}
	for (long pass = 0; pass < passes; pass++) {
		uint64_t cpu_before = clock_ns(CLOCK_THREAD_CPUTIME_ID);
		uint64_t before = monotonic_ns();
		programs = snapshot(&run_cnt_sum, NULL, 0);
		ns_per_pass[pass] = monotonic_ns() - before;
		cpu_ns_per_pass[pass] = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu_before;
		if (programs < 0) {
			perror("bpf");
			return 1;
		}
	}
	printf("{\"programs\": %ld, \"checksum\": %llu, \"ns_per_pass\": [", programs,
	       (unsigned long long)run_cnt_sum);
	for (long pass = 0; pass < passes; pass++)
		printf("%s%llu", pass ? ", " : "", (unsigned long long)ns_per_pass[pass]);
	printf("], \"cpu_ns_per_pass\": [");
	for (long pass = 0; pass < passes; pass++)
		printf("%s%llu", pass ? ", " : "", (unsigned long long)cpu_ns_per_pass[pass]);
	printf("]}\n");
	return 0;
}
