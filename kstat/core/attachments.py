"""Attachment strings, one format wherever kstat shows where a program runs.

    HOOK:PLACE[ DETAIL...]

- HOOK says how: `xdp/generic`, `xdp/native`, `xdp/offload` (netlink), `xdp` (a link),
  `tc/ingress`, `tc/egress` (tc filters), `tcx/ingress`, `tcx/egress`, `netkit/primary`,
  `cgroup/egress` (and the other cgroup attach types), `netns/flow_dissector`, `netns/sk_lookup`,
  or a link's type alone (`tracing`, `perf_event`, ...);
- PLACE says where: a network device (`eth0`, or `eth0@blue` in the network namespace `ip netns`
  calls blue, `eth0@netns:4026532301` in an unnamed one), a cgroup's path, a namespace's inode;
- DETAILs, for tc filters: `prio=N`, `handle=0xN`, and `da` in direct-action mode.

The same strings are in the report, NDJSON, StatsD and Prometheus labels, and `kstat list`,
and `--attached`/`--attach-type` select by them.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Attachment:
    hook: str
    place: str
    details: tuple[str, ...] = ()

    @staticmethod
    def parse(text: str) -> Attachment:
        head, *details = text.split(" ")
        hook, _, place = head.partition(":")
        return Attachment(hook, place, tuple(details))

    @property
    def device(self) -> str:
        """The place without its network namespace (`eth0` of `eth0@blue`)."""
        return self.place.split("@", 1)[0]

    def is_at(self, wanted: str) -> bool:
        """`--attached`: the place itself, a device in any namespace, or a cgroup by the end
        of its path (`kstat-t-cg`, `system.slice/nginx.service`)."""
        return wanted in (self.place, self.device) or (
            self.place.startswith("/") and self.place.rstrip("/").endswith("/" + wanted.strip("/"))
        )

    def is_of(self, wanted: str) -> bool:
        """`--attach-type`: the hook, or its kind alone (`tc` for `tc/ingress`, `xdp` for any
        XDP mode, `cgroup` for every cgroup hook)."""
        return wanted in (self.hook, self.hook.split("/", 1)[0])
