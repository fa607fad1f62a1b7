"""A stand-in agent in its own process: loads socket filters, then obeys commands on stdin.

    python -m tests.program_holder NAME:FUNCTION_NAME [NAME:FUNCTION_NAME ...]

Prints one JSON line, {"pid": ..., "ids": [...]}, once the programs are loaded; then reads
`send INDEX COUNT` (send COUNT packets through program INDEX), `unload INDEX`, and answers each
with `ok`. Ends, unloading everything, at end of input.
"""

from __future__ import annotations

import json
import os
import sys

from kstat.testing.loader import LoopbackTarget, SocketFilter


def main(specs: list[str]) -> None:
    targets: list[LoopbackTarget | None] = []
    for spec in specs:
        name, _, function_name = spec.partition(":")
        targets.append(LoopbackTarget(SocketFilter(name, function_name=function_name or None)))
    ids = [target.program.id for target in targets if target is not None]
    print(json.dumps({"pid": os.getpid(), "ids": ids}), flush=True)
    for line in sys.stdin:
        command, *arguments = line.split()
        index = int(arguments[0])
        target = targets[index]
        assert target is not None, f"program {index} is unloaded"
        if command == "send":
            target.send(int(arguments[1]))
        elif command == "unload":
            target.close()
            target.program.close()
            targets[index] = None
        print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
