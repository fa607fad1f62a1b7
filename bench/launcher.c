/*
 * launcher RESULT COMMAND [ARG...]: runs COMMAND as this small process's child and writes to
 * RESULT, as one JSON line, when it was launched and when it exited (CLOCK_MONOTONIC), its exit
 * status (as wait(2) gives it) and its rusage.
 *
 * Why not wait4 from the bench itself: Linux keeps a process's peak RSS across exec, so a child
 * forked by the bench's Python (tens of MB, 10,000 programs' fds and objects) reports at least
 * the bench's own RSS. A child forked by this launcher starts from the launcher's few hundred KB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s RESULT COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    FILE *result = fopen(argv[1], "w");
    if (result == NULL) {
        fprintf(stderr, "launcher: %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    long long launched_ns = monotonic_ns();
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "launcher: fork: %s\n", strerror(errno));
        return 2;
    }
    if (child == 0) {
        execvp(argv[2], argv + 2);
        fprintf(stderr, "launcher: %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage usage;
    while (wait4(child, &status, 0, &usage) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "launcher: wait4: %s\n", strerror(errno));
            return 2;
        }
    }
    long long exited_ns = monotonic_ns();
    fprintf(result,
            "{\"launched_ns\": %lld, \"exited_ns\": %lld, \"wait_status\": %d, "
            "\"user_us\": %lld, \"system_us\": %lld, \"max_rss_kib\": %ld}\n",
            launched_ns, exited_ns, status,
            (long long)usage.ru_utime.tv_sec * 1000000LL + usage.ru_utime.tv_usec,
            (long long)usage.ru_stime.tv_sec * 1000000LL + usage.ru_stime.tv_usec, usage.ru_maxrss);
    return fclose(result) == 0 ? 0 : 2;
}
