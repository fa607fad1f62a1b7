"""systemd's notification protocol (sd_notify(3)), for `kstat serve` under `Type=notify`.

A datagram to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
namespace): `READY=1` once the window's baseline is taken, `STOPPING=1` when a signal ends it,
`WATCHDOG=1` every half `$WATCHDOG_USEC` while the sampler's passes keep coming (so a stuck
sampler gets kstat restarted, not a stuck event loop only). Without `$NOTIFY_SOCKET` every call
does nothing: kstat outside systemd is unchanged.
"""

from __future__ import annotations

import os
import socket

from kstat._logging import get_logger

log = get_logger(__name__)


def _address(name: str) -> str | bytes:
    # "@name": the abstract namespace, whose addresses start with a NUL byte.
    return b"\0" + name[1:].encode() if name.startswith("@") else name


class Notifier:
    """Sends sd_notify messages to the socket `$NOTIFY_SOCKET` names (nothing without it)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ) if environ is None else environ
        self.socket_name = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        # The watchdog is ours only if it names this process (or no process at all).
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_s: float | None = (
            int(watchdog_usec) / 1e6 if watchdog_usec.isdigit() and int(watchdog_usec) > 0 and mine else None
        )

    @property
    def enabled(self) -> bool:
        return self.socket_name is not None

    def notify(self, *fields: str) -> bool:
        """Send `fields` (`READY=1`, `STATUS=...`) as one message; False if it could not go."""
        if self.socket_name is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
                sender.sendto(message, _address(self.socket_name))
        except OSError as error:
            # Never fatal: systemd then says the start timed out, which names the cause.
            log.warning("cannot notify systemd", socket=self.socket_name, error=error.strerror)
            return False
        return True
