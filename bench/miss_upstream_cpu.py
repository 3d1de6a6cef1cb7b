"""CPU per miss of the northbound path, without sockets: a PACKET_IN no rule answers goes up to a
controller, whose PACKET_OUT comes back and is applied.

A real SwitchSession, Proxy and Northbound are wired to one controller link whose session is a
real ControllerSession past its HELLO; the link's bytes are handed over in memory. Each miss:
the bridge's PACKET_IN in, the proxy's PACKET_IN to the controller out, the controller's
PACKET_OUT (carrying the proxy's buffer id) in, the PACKET_OUT to the bridge out. This isolates
the proxy's own work on the miss path from the kernel and the event loop.

    python bench/miss_upstream_cpu.py [--misses 20000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from miss_cpu import connected, packet_in  # noqa: E402

from ovs_sriov_proxy.config import ControllerConfig  # noqa: E402
from ovs_sriov_proxy.northbound import Northbound  # noqa: E402
from ovs_sriov_proxy.openflow.framing import OFP13, hello  # noqa: E402
from ovs_sriov_proxy.sessions.controller import ControllerSession  # noqa: E402
from ovs_sriov_proxy.sessions.keepalive import SessionTiming  # noqa: E402
from ovs_sriov_proxy.targets import parse_active  # noqa: E402

NO_BUFFER = 0xFFFFFFFF


class MemoryLink:
    """A ControllerLink stand-in: the controller session is READY; flushed bytes are kept."""

    def __init__(self, name: str, target: object, versions: frozenset[int], view: Any,
                 timing: SessionTiming, on_events: Any, **_: object) -> None:
        self.name = name
        self.session = ControllerSession(name, versions, view, timing, 0)
        self.session.data_to_send()
        self.session.receive_data(hello(frozenset({OFP13})), 0)
        self.sent: list[bytes] = []

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def flush(self) -> None:
        self.sent.append(self.session.data_to_send())


def packet_out(buffer_id: int) -> bytes:
    """The controller's answer: output:2 for the proxy's buffer."""
    actions = struct.pack("!HHIH6x", 0, 16, 2, 0xFFFF)
    body = struct.pack("!IIH6x", buffer_id, 1, len(actions)) + actions
    return struct.pack("!BBHI", OFP13, 13, 8 + len(body), 5) + body


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    proxy, session = connected(OFP13)
    proxy.apply_rule_change(proxy.store.replace_origin("config", []))  # no rule answers
    session.data_to_send()
    northbound = Northbound(proxy, [ControllerConfig("up", parse_active("tcp:127.0.0.1:1"))],
                            miss_timeout=0.2, timing=SessionTiming(), link_factory=MemoryLink)
    bridge = next(iter(proxy.bridges.values()))
    ready = type("Ready", (), {"ports": {}, "datapath_id": 1, "n_tables": 254, "n_buffers": 0})
    northbound.bridge_ready(bridge, ready)  # type: ignore[arg-type]
    (link,) = northbound.links[bridge.session].values()
    assert isinstance(link, MemoryLink)
    miss = packet_in(OFP13, NO_BUFFER)

    def one() -> None:
        proxy.handle_events(session, session.receive_data(miss, 1.0))
        northbound.flush_links()
        (proxy_buffer,) = struct.unpack_from("!I", link.sent.pop(), 8)
        northbound._on_link_events(link, link.session.receive_data(packet_out(proxy_buffer), 1.0))  # type: ignore[arg-type]
        session.data_to_send()

    def run() -> None:
        for _ in range(args.misses):
            one()

    run()  # warm up
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    assert bridge.counters["won_by:up"] == 2 * args.misses, bridge.all_counters()
    print(f"OpenFlow 1.3: {args.misses / elapsed:,.0f} upstream misses/s, "
          f"{elapsed / args.misses * 1e6:.2f} µs of CPU per miss (one controller)")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    asyncio.run(main())
