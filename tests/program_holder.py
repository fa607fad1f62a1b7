"""A stand-in agent in its own process: loads socket filters, then obeys commands on stdin.

    python -m tests.program_holder [--comm HEX] NAME:FUNCTION_NAME [NAME:FUNCTION_NAME ...]

With `--comm`, the process first names itself with those bytes (hex), as prctl(PR_SET_NAME)
does: any bytes, 15 at most, valid UTF-8 or not.

Prints one JSON line, {"pid": ..., "ids": [...]}, once the programs are loaded; then reads
commands and answers each with `ok`, or `ok VALUE`:

- `send INDEX COUNT`: send COUNT packets through program INDEX;
- `unload INDEX`: unload program INDEX;
- `dup INDEX`: one more fd to program INDEX;
- `swap INDEX`: close program INDEX's fd (its socket keeps the program loaded) and load another
  program, which the kernel gives the same fd number: `ok NEW_ID`;
- `open ID`: an fd to program ID (another process's, say);
- `link NAME`: load an iterator program and hold it only through its link (the program's own
  fd closed): `ok ID`.

Ends, unloading everything, at end of input.
"""

from __future__ import annotations

import json
import os
import sys

from kstat.abi.bpf import program_fd
from kstat.testing.loader import HeldByLink, LoopbackTarget, SocketFilter


def main(specs: list[str]) -> None:
    if specs[:1] == ["--comm"]:
        with open("/proc/self/comm", "wb") as comm:
            comm.write(bytes.fromhex(specs[1]))
        specs = specs[2:]
    targets: list[LoopbackTarget | None] = []
    for spec in specs:
        name, _, function_name = spec.partition(":")
        targets.append(LoopbackTarget(SocketFilter(name, function_name=function_name or None)))
    ids = [target.program.id for target in targets if target is not None]
    print(json.dumps({"pid": os.getpid(), "ids": ids}), flush=True)
    kept: list[int | SocketFilter] = []  # extra fds and programs, held until the end
    for line in sys.stdin:
        command, *arguments = line.split()
        answer = "ok"
        if command == "link":
            linked = HeldByLink(arguments[0])
            kept.append(linked.link_fd)
            answer = f"ok {linked.id}"
        elif command == "open":
            fd = program_fd(int(arguments[0]))
            assert fd is not None, f"no program {arguments[0]}"
            kept.append(fd)
        else:
            index = int(arguments[0])
            target = targets[index]
            assert target is not None, f"program {index} is unloaded"
            if command == "send":
                target.send(int(arguments[1]))
            elif command == "unload":
                target.close()
                target.program.close()
                targets[index] = None
            elif command == "dup":
                kept.append(os.dup(target.program.fd))
            elif command == "swap":
                number = target.program.fd
                target.program.close()
                replacement = SocketFilter(target.program.name)
                assert replacement.fd == number, f"fd {replacement.fd}, not {number}"
                kept.append(replacement)
                answer = f"ok {replacement.id}"
        print(answer, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
