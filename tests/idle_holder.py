"""Another process holding many idle programs, as other tenants' agents do on a busy node.

    python -m tests.idle_holder COUNT NAME

Loads COUNT socket filters named NAME (no sockets: they never run), prints one JSON line
{"pid": ..., "count": ...} once they are loaded, and holds them until its input ends.
"""

from __future__ import annotations

import json
import os
import resource
import sys

from kstat.testing.loader import SocketFilter


def main(count: int, name: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1_024)), hard))
    held = [SocketFilter(name) for _ in range(count)]
    print(json.dumps({"pid": os.getpid(), "count": len(held)}), flush=True)
    sys.stdin.read()
    for program in held:
        program.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
