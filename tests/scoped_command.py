"""A command that leaves its programs every way an agent can, for `kstat run`'s scope tests.

    python -m tests.scoped_command IDS_FILE RECEIVER_SOCKET PIN_PATH PACKETS

It loads five socket filters and sends PACKETS datagrams through each that can run:

- `held`: attached to a socket, its fd kept open until the command exits;
- `daemon`: loaded by a daemon that a double fork left to init (its parent exits at once);
- `socket`: attached to a socket, its fd closed: only the socket holds it;
- `handed`: its fd sent over RECEIVER_SOCKET to a process outside the command's tree (`python
  -m tests.scoped_command receive ...`), which attaches it and sends the packets, and closed;
- `pinned`: pinned at PIN_PATH by `bpftool prog pin`, its fd closed (it never runs).

Then it writes {"held": id, ...} to IDS_FILE and lingers a moment (a collector's last snapshot
must see the final counts), stopping the daemon before it exits.

    python -m tests.scoped_command receive RECEIVER_SOCKET PACKETS

The receiver: prints "ready" once it listens, attaches the program it is handed to a loopback
socket of its own, sends PACKETS datagrams through it, answers "sent", and holds the program
until its input ends.
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from kstat.abi.enums import SO_ATTACH_BPF
from kstat.testing.loader import LoopbackTarget, SocketFilter
from tests.names import KT

# Longer than two of the scope tests' intervals (100 ms): the window's last read follows it.
LINGER_S = 0.5


def attached_pair(program_fd: int) -> tuple[socket.socket, socket.socket]:
    """A receiving socket with the program attached, and a sender connected to it."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, program_fd)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    return receiver, sender


def send(sender: socket.socket, count: int) -> None:
    for _ in range(count):
        sender.send(b"kstat")


def daemon(packets: int) -> int:
    """The double-forked daemon's program id (read from a pipe); it runs until its parent's pipe
    closes."""
    ids_read, ids_write = os.pipe()
    stop_read, stop_write = os.pipe()
    if os.fork() == 0:
        status = 1
        try:
            os.close(ids_read)
            os.close(stop_write)
            if os.fork() != 0:
                os._exit(0)  # the middle process: the daemon's parent, gone at once
            os.setsid()
            with SocketFilter(f"{KT}sc_dmn") as program, LoopbackTarget(program) as target:
                target.send(packets)
                os.write(ids_write, f"{program.id}\n".encode())
                os.read(stop_read, 1)  # until the command closes its end
            status = 0
        finally:
            os._exit(status)  # never back into the command's code
    os.close(ids_write)
    os.close(stop_read)
    with os.fdopen(ids_read) as reading:
        program_id = int(reading.readline())
    # `stop_write` stays open, left to the command's exit to close: the daemon holds its
    # program until then.
    return program_id


def command(ids_file: Path, receiver_path: str, pin_path: str, packets: int) -> None:
    ids: dict[str, int] = {}
    held = SocketFilter(f"{KT}sc_held")
    ids["held"] = held.id
    with LoopbackTarget(held) as target:
        target.send(packets)
        ids["daemon"] = daemon(packets)

        through_socket = SocketFilter(f"{KT}sc_sock")
        ids["socket"] = through_socket.id
        receiver, sender = attached_pair(through_socket.fd)
        through_socket.close()  # only the socket holds it now
        send(sender, packets)

        handed = SocketFilter(f"{KT}sc_hand")
        ids["handed"] = handed.id
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
            channel.connect(receiver_path)
            channel.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [handed.fd]))])
            handed.close()
            assert channel.recv(16) == b"sent"

        pinned = SocketFilter(f"{KT}sc_pin")
        ids["pinned"] = pinned.id
        subprocess.run(["bpftool", "prog", "pin", "id", str(pinned.id), pin_path], check=True)
        pinned.close()

        ids_file.write_text(json.dumps(ids))
        time.sleep(LINGER_S)  # the workload's own linger, as an agent outlives its load test
        receiver.close()
        sender.close()
    held.close()


def receive(receiver_path: str, packets: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(receiver_path)
        listener.listen(1)
        print("ready", flush=True)
        connection, _ = listener.accept()
        with connection:
            fds = array.array("i")
            _, ancillary, _, _ = connection.recvmsg(1, socket.CMSG_LEN(fds.itemsize))
            fds.frombytes(ancillary[0][2][: fds.itemsize])
            program_fd = fds[0]
            receiver, sender = attached_pair(program_fd)
            send(sender, packets)
            connection.sendall(b"sent")
        sys.stdin.read()
        receiver.close()
        sender.close()
        os.close(program_fd)


if __name__ == "__main__":
    if sys.argv[1] == "receive":
        receive(sys.argv[2], int(sys.argv[3]))
    else:
        command(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
