"""The soaks (not part of the suite): `make soak`, or `python -m tests.soak` as root.

SOAK_MODE=window (the default): 1,000 programs with loopback traffic, the real `kstat` CLI
sampling every 100 ms with the NDJSON and StatsD sinks for SOAK_DURATION (default 10m). Every
10 s it records kstat's RSS and open fds; at the end it checks that RSS stayed flat, fds did not
grow, and the report holds every snapshot the window should have taken.

SOAK_MODE=serve: `kstat serve` with its Prometheus endpoint scraped every second and an NDJSON
stream, while programs keep loading and unloading (churn) beside 1,000 steady ones, for
SOAK_DURATION; then SIGTERM. It checks that RSS and fds stayed flat, that the final report
covers the whole run (every churned program's runs in its totals, old ones left out of its
list), and that the exposition held only what was loaded.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from kstat.commands.serve import DEFAULT_KEEP_UNLOADED
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
    if os.environ.get("SOAK_MODE", "window") == "serve":
        return soak_serve(parse_duration_ns(os.environ.get("SOAK_DURATION") or "10m"))
    duration_ns = parse_duration_ns(os.environ.get("SOAK_DURATION") or "10m")
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


def soak_serve(duration_ns: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65_536)), hard))
    steady = [SocketFilter(f"kstat_soak{index % 50}") for index in range(PROGRAMS)]
    busy = [LoopbackTarget(program) for program in steady[:20]]
    stop = threading.Event()
    churned = [0, 0]  # programs loaded and unloaded, packets they received

    def traffic() -> None:
        while not stop.is_set():
            for target in busy:
                target.send(10)
            stop.wait(0.01)

    def churn() -> None:
        # A program that comes, runs a little and goes, ten times a second.
        while not stop.is_set():
            with SocketFilter("kstat_churn") as program, LoopbackTarget(program) as target:
                target.send(3)
                churned[0] += 1
                churned[1] += 3
                stop.wait(0.3)  # seen by a pass (250 ms) while loaded

    port = 20_999
    scrapes = {"count": 0, "largest": 0}

    def scrape() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    body = response.read()
                scrapes["count"] += 1
                scrapes["largest"] = max(scrapes["largest"], body.count(b"\nkstat_program_runs_total{"))
            except OSError:
                pass
            stop.wait(1.0)

    workdir = Path(tempfile.mkdtemp(prefix="kstat-soak-serve-"))
    command = [
        sys.executable, "-m", "kstat", "serve", "--interval", "250ms",
        "--sink", f"prometheus://127.0.0.1:{port}", "--sink", f"ndjson:{workdir / 's.ndjson'}",
        "-output", str(workdir / "r.json"),
    ]  # fmt: skip
    print(
        f"soak (serve): {PROGRAMS} programs and churn, {format_duration_ns(duration_ns)}, output in {workdir}"
    )
    kstat_process = subprocess.Popen(command, stderr=(workdir / "kstat.log").open("w"))
    time.sleep(3)
    threads = [threading.Thread(target=work, daemon=True) for work in (traffic, churn, scrape)]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, int, int]] = []
    # The report keeps listing the last DEFAULT_KEEP_UNLOADED unloaded programs, so memory rightly
    # grows until that many have churned (about six minutes); flat is judged from a minute later.
    full_at: float | None = None
    started = time.monotonic()
    try:
        while time.monotonic() - started < duration_ns / 1e9 and kstat_process.poll() is None:
            time.sleep(SAMPLE_EVERY_S)
            rss_kb = status_field(kstat_process.pid, "VmRSS")
            fds = len(os.listdir(f"/proc/{kstat_process.pid}/fd"))
            samples.append((time.monotonic() - started, rss_kb, fds))
            if full_at is None and churned[0] >= DEFAULT_KEEP_UNLOADED:
                full_at = samples[-1][0]
            print(
                f"  t={samples[-1][0]:6.0f}s  rss={rss_kb / 1024:6.1f} MB  fds={fds}  "
                f"churned={churned[0]}  scrapes={scrapes['count']}",
                flush=True,
            )
        stop.set()
        for thread in threads:
            thread.join()
        time.sleep(1)  # the last churned program's last runs seen by a pass
        kstat_process.send_signal(signal.SIGTERM)
        kstat_process.wait(120)
    finally:
        stop.set()
        for target in busy:
            target.close()
        for program in steady:
            program.close()
    report = json.loads((workdir / "r.json").read_text())
    churned_lines = [
        line for line in report["program_stats"].values() if line["kernel_name"] == "kstat_churn"
    ]
    churned_runs_listed = sum(line["run_count"] for line in churned_lines)
    warm_from = (full_at if full_at is not None else 0.0) + 60
    warm = [sample for sample in samples if sample[0] >= warm_from] or samples
    rss_growth_kb = max(rss for _, rss, _ in warm) - min(rss for _, rss, _ in warm)
    fd_counts = {fds for _, _, fds in samples}
    checks = {
        "kstat exited 0 on SIGTERM": kstat_process.returncode == 0,
        f"RSS flat after warm-up ({samples[0][1] / 1024:.1f} MB at {samples[0][0]:.0f} s, "
        f"{warm[0][1] / 1024:.1f} MB at {warm[0][0]:.0f} s once {DEFAULT_KEEP_UNLOADED} unloaded "
        f"programs are listed, {samples[-1][1] / 1024:.1f} MB at {samples[-1][0]:.0f} s; grew "
        f"{rss_growth_kb} kB since, limit {RSS_TOLERANCE_KB})": rss_growth_kb <= RSS_TOLERANCE_KB,
        f"no fd growth (seen {sorted(fd_counts)})": max(fd_counts) - min(fd_counts) <= 2,
        f"the report covers the whole run ({churned[0]} programs churned, "
        f"{report.get('programs_left_out')} left out of the list, {len(churned_lines)} listed)": (
            churned[0] > 0 and report.get("programs_left_out", 0) + len(churned_lines) == churned[0]
        ),
        f"every churned run counted ({churned[1]} packets)": report["total_run_count"] >= churned[1]
        and churned_runs_listed <= churned[1],
        f"the exposition held what was loaded (at most {scrapes['largest']} programs, "
        f"{scrapes['count']} scrapes)": PROGRAMS <= scrapes["largest"] <= PROGRAMS + 2,
    }
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}: {check}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
