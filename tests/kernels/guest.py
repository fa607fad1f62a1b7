"""What runs on each kernel of the matrix (inside its VM, or natively): the kernel tests of the
matrix under pytest, then what kstat reads on this kernel, for the support table.

    python -m tests.kernels.guest RESULTS_DIR

writes RESULTS_DIR/junit.xml (pytest's), RESULTS_DIR/facts.json and exits with pytest's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.kernels.facts import kernel_facts
from tests.kernels.matrix import KERNEL_TESTS


def main(arguments: list[str]) -> int:
    results = Path(arguments[0])
    results.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        # Hypothesis keeps its examples next to the tests otherwise.
        "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/kstat-hypothesis",
    }
    tested = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            f"--junitxml={results / 'junit.xml'}",
            *[test.node for test in KERNEL_TESTS],
        ],
        env=environment,
        check=False,
    )
    facts = kernel_facts()
    temporary = results / "facts.json.tmp"
    temporary.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    temporary.replace(results / "facts.json")
    print("kstat-vm: facts", json.dumps(facts, sort_keys=True), flush=True)
    return tested.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
