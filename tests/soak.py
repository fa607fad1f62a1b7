"""The soak (not part of the suite): `make soak`, or `python -m tests.soak` as root.

1,000 programs with loopback traffic, the real `kstat` CLI sampling every 100 ms with the
NDJSON and StatsD sinks for SOAK_DURATION (default 10m). Every 10 s it records kstat's RSS and
open fds; at the end it checks that RSS stayed flat, fds did not grow, and the report holds
every snapshot the window should have taken.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kstat.durations import format_duration_ns, parse_duration_ns
from kstat.testing.loader import LoopbackTarget, SocketFilter

PROGRAMS = 1_000
INTERVAL_NS = 100_000_000
SAMPLE_EVERY_S = 10.0
# After the first minute's warm-up (caches, allocator arenas), RSS may wander this much.
RSS_TOLERANCE_KB = 4 * 1024


def status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> int:
    duration_ns = parse_duration_ns(os.environ.get("SOAK_DURATION", "10m"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65_536)), hard))
    programs = [SocketFilter(f"kstat_soak{index % 50}") for index in range(PROGRAMS)]
    targets = [LoopbackTarget(program) for program in programs[:20]]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for target in targets:
                target.send(10)
            stop.wait(0.01)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    workdir = Path(tempfile.mkdtemp(prefix="kstat-soak-"))
    command = [
        sys.executable, "-m", "kstat", "-duration", format_duration_ns(duration_ns), "--interval", "100ms",
        "--sink", f"ndjson:{workdir / 's.ndjson'}", "--sink", "statsd://127.0.0.1:18125",
        "-output", str(workdir / "r.json"),
    ]  # fmt: skip
    print(f"soak: {PROGRAMS} programs, {format_duration_ns(duration_ns)} at 100ms, output in {workdir}")
    kstat_process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    try:
        while kstat_process.poll() is None:
            time.sleep(SAMPLE_EVERY_S)
            try:
                rss_kb = status_field(kstat_process.pid, "VmRSS")
                fds = len(os.listdir(f"/proc/{kstat_process.pid}/fd"))
            except (OSError, KeyError):
                break
            samples.append((time.monotonic() - started, rss_kb, fds))
            print(f"  t={samples[-1][0]:6.0f}s  rss={rss_kb / 1024:6.1f} MB  fds={fds}", flush=True)
        kstat_process.wait()
    finally:
        stop.set()
        for target in targets:
            target.close()
        for program in programs:
            program.close()
    report = json.loads((workdir / "r.json").read_text())
    expected_snapshots = duration_ns // INTERVAL_NS + 1
    warm = [sample for sample in samples if sample[0] >= 60] or samples
    rss_growth_kb = max(rss for _, rss, _ in warm) - min(rss for _, rss, _ in warm)
    fd_counts = {fds for _, _, fds in samples}
    checks = {
        "kstat exited 0": kstat_process.returncode == 0,
        f"RSS flat after warm-up (grew {rss_growth_kb} kB, limit {RSS_TOLERANCE_KB})": rss_growth_kb
        <= RSS_TOLERANCE_KB,
        f"no fd growth (seen {sorted(fd_counts)})": len(fd_counts) <= 1,
        f"every snapshot taken ({report['snapshots']} of {expected_snapshots})": report["snapshots"]
        >= expected_snapshots - 1,
    }
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}: {check}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
