"""`make test-kernels`: the kernel tests of the matrix on every kernel of tests/kernels/matrix.py,
each booted under qemu, then natively; one line per kernel, and the support table.

    python -m tests.kernels [--kernels "5.10 6.1 native"] [--timeout 1800] [--no-table]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from attrs import frozen

from tests.kernels import table
from tests.kernels.images import ImageError, cache_root, fetch
from tests.kernels.matrix import KERNEL_TESTS, MATRIX, NATIVE
from tests.kernels.vm import RESULTS_IN_GUEST, boot, guest_python_layers, kvm_usable

TREE = Path(__file__).resolve().parents[2]
LOGS = TREE / "kernel-logs"
DOCUMENT = TREE / "docs" / "kernels.md"
_GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@frozen
class PytestCounts:
    passed: int
    failed: int
    skipped: int
    skip_reasons: tuple[str, ...]


def read_junit(path: Path) -> PytestCounts | None:
    """pytest's counts from its JUnit XML; None if it wrote none (it never ran to the end)."""
    if not path.exists():
        return None
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    total, failures, errors, skipped = (
        int(suite.get(name, "0")) for name in ("tests", "failures", "errors", "skipped")
    )
    reasons = []
    for case in suite.iter("testcase"):
        for skip in case.findall("skipped"):
            reasons.append(f"{case.get('name')}: {skip.get('message', '').strip()}")
    return PytestCounts(total - failures - errors - skipped, failures + errors, skipped, tuple(reasons))


def _read_facts(results: Path) -> dict[str, Any]:
    found = results / "facts.json"
    return dict(json.loads(found.read_text())) if found.exists() else {}


@frozen
class KernelRun:
    """What one kernel's run found."""

    name: str
    release: str
    counts: PytestCounts | None
    facts: dict[str, Any]
    exit_status: int | None
    seconds: float
    how: str
    work: Path

    @property
    def failed(self) -> bool:
        return self.counts is None or bool(self.counts.failed) or self.exit_status != 0 or not self.facts

    def line(self) -> str:
        counts = self.counts
        tested = (
            "no results"
            if counts is None
            else f"{counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped"
        )
        method = str(self.facts.get("snapshot_method", "?"))
        return (
            f"{self.name:<11} {self.release:<24} {method:<9} {tested:<34} {self.seconds:5.0f} s  {self.how}"
        )


def _collected(
    name: str, release: str, work: Path, *, exit_status: int | None, seconds: float, how: str
) -> KernelRun:
    results = work / "results"
    return KernelRun(
        name=name,
        release=release,
        counts=read_junit(results / "junit.xml"),
        facts=_read_facts(results),
        exit_status=exit_status,
        seconds=seconds,
        how=how,
        work=work,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kernels", description=__doc__)
    parser.add_argument("--kernels", default="", help="a part of the matrix: names, space-separated")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds a VM may take (about 200 on an idle machine)"
    )
    parser.add_argument("--no-table", action="store_true", help="leave docs/kernels.md alone")
    options = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make test-kernels needs root: it loads eBPF programs and boots VMs", file=sys.stderr)
        return 2
    wanted = options.kernels.split() or [kernel.name for kernel in MATRIX] + [NATIVE]
    unknown = set(wanted) - {kernel.name for kernel in MATRIX} - {NATIVE}
    if unknown:
        print(f"not in the matrix: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    kernels = [kernel for kernel in MATRIX if kernel.name in wanted]
    LOGS.mkdir(exist_ok=True)
    started = time.monotonic()
    try:
        images = fetch(kernels, cache_root(), print)
    except ImageError as error:
        print(f"kernel images: {error}", file=sys.stderr)
        return 1
    print(f"images ready in {time.monotonic() - started:.0f} s (cache: {cache_root()})")
    accelerator = "kvm" if kvm_usable() else "tcg"
    if images and accelerator == "tcg":
        print("KVM is not usable here: the VMs run under TCG emulation (times inside mean nothing)")
    runs: list[KernelRun] = []
    shared = LOGS / ".images"
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir()
    try:
        layers = guest_python_layers(TREE, shared) if images else []
        for image in images:
            work = LOGS / image.kernel.name
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            # Under emulation, run times mean nothing: tests leave out what compares them.
            emulated = " KSTAT_TEST_EMULATED=1" if accelerator == "tcg" else ""
            command = (
                f"export PATH={_GUEST_PATH} HOME=/root LANG=C.UTF-8 TERM=dumb{emulated}\n"
                f"cd {TREE} && {sys.executable} -m tests.kernels.guest {RESULTS_IN_GUEST}"
            )
            outcome = boot(image, layers, command, work, timeout_s=options.timeout, accelerator=accelerator)
            how = outcome.accelerator + (", timed out" if outcome.timed_out else "")
            run = _collected(
                image.kernel.name,
                image.version,
                work,
                exit_status=outcome.exit_status,
                seconds=outcome.seconds,
                how=how,
            )
            _report(run)
            runs.append(run)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    if NATIVE in wanted:
        runs.append(_native())
    rows = {run.name: table.row(run.name, run.facts, run.counts) for run in runs if run.facts and run.counts}
    if not options.no_table and rows:
        table.update(DOCUMENT, rows, _PREAMBLE)
        print(f"support table: {DOCUMENT.relative_to(TREE)}")
    passed = sum(run.counts.passed for run in runs if run.counts)
    failed = sum(run.counts.failed for run in runs if run.counts)
    skipped = sum(run.counts.skipped for run in runs if run.counts)
    print(f"kernels: {passed} passed, {failed} failed, {skipped} skipped")
    failed_kernels = [run.name for run in runs if run.failed]
    if failed_kernels:
        print(
            f"failed on: {', '.join(failed_kernels)} (logs under {LOGS.relative_to(TREE)}/)", file=sys.stderr
        )
        return 1
    return 0


def _native() -> KernelRun:
    """The same tests on this machine's own kernel, without a VM."""
    work = LOGS / NATIVE
    shutil.rmtree(work, ignore_errors=True)
    (work / "results").mkdir(parents=True)
    began = time.monotonic()
    with (work / "console.log").open("wb") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "tests.kernels.guest", str(work / "results")],
            cwd=TREE,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    release = os.uname().release
    name = f"{NATIVE} {'.'.join(release.split('.')[:2])}"
    run = _collected(
        name,
        release,
        work,
        exit_status=completed.returncode,
        seconds=time.monotonic() - began,
        how="this machine",
    )
    _report(run)
    return run


def _report(run: KernelRun) -> None:
    """The kernel's line, its skips with their reasons, and the end of its console if it failed."""
    print(run.line(), flush=True)
    for reason in run.counts.skip_reasons if run.counts else ():
        print(f"    skipped {reason}")
    if run.failed:
        console = run.work / "console.log"
        if console.exists():
            tail = console.read_text(errors="replace").splitlines()[-30:]
            print("\n".join(f"    | {line}" for line in tail), flush=True)


_PREAMBLE = (
    "# Kernels",
    "",
    "What kstat reads on each kernel it is tested on. The table is written by `make test-kernels`",
    f"from what each kernel's run found; the tests that run on every kernel: {len(KERNEL_TESTS)} entries"
    " of tests/kernels/matrix.py.",
)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
