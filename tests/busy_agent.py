"""A stand-in agent with a user-space side: holds a busy socket filter and burns CPU on demand.

    python -m tests.busy_agent NAME [WORK_INSTRUCTIONS]

Names itself NAME (its comm), loads a socket filter of WORK_INSTRUCTIONS instructions of work,
attached to a UDP socket on 127.0.0.1, then prints one JSON line, {"pid": ..., "id": ...,
"port": ...}, and obeys commands on stdin, answering each with `ok`:

- `burn MS`: spin in user space until this process has used MS more milliseconds of CPU (its
  own accounting, `time.process_time`), then answer;
- `grow MB`: touch MB more megabytes of memory (kept until the end), then answer.

Packets sent to the port by another process run the filter in that process's context, so the
agent's own CPU is only what it burns. Ends at end of input.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from kstat.abi.enums import SO_ATTACH_BPF
from kstat.testing.loader import SocketFilter
from tests.names import KT


def burn(milliseconds: int) -> None:
    until = time.process_time() + milliseconds / 1000
    spins = 0
    while time.process_time() < until:
        spins += sum(range(200))


def main(arguments: list[str]) -> None:
    name = arguments[0]
    work = int(arguments[1]) if len(arguments) > 1 else 0
    # Its command, as an agent's own name: what the owners section and compare's rows show.
    with open("/proc/self/comm", "w") as comm:
        comm.write(name)
    # A program name holds letters, digits, `_` and `.` only; the suite's prefix tells this
    # suite's agents from another suite's on the same host.
    program = SocketFilter((KT + name.replace("-", "_"))[:15], work)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, program.fd)
    # A large receive buffer is not needed: the filter drops every packet before it queues.
    print(json.dumps({"pid": os.getpid(), "id": program.id, "port": receiver.getsockname()[1]}), flush=True)
    kept: list[bytearray] = []
    for line in sys.stdin:
        command, *values = line.split()
        if command == "burn":
            burn(int(values[0]))
        elif command == "grow":
            block = bytearray(int(values[0]) * 1024 * 1024)
            for offset in range(0, len(block), 4096):
                block[offset] = 1
            kept.append(block)
        print("ok", flush=True)
    receiver.close()
    program.close()


if __name__ == "__main__":
    main(sys.argv[1:])
