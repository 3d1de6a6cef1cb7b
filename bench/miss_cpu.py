"""CPU per miss of the proxy core, without sockets: PACKET_INs in, FLOW_MODs out.

A real SwitchSession and Proxy (as in tests/test_proxy_core.py) are fed batches of buffered OF1.0
or OF1.3 PACKET_INs that hit a rule, the way a busy bridge's reads arrive; the answers are
drained and dropped. This isolates the proxy's own work from the kernel and the event loop.

    python bench/miss_cpu.py [--version 1.3] [--batches 2000] [--batch 64] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ovs_sriov_proxy.openflow.framing import OFP10, OFP13, OFPT_HELLO, simple_message  # noqa: E402
from ovs_sriov_proxy.proxy import Proxy  # noqa: E402
from ovs_sriov_proxy.rules.flowparse import parse_flow  # noqa: E402
from ovs_sriov_proxy.rules.store import RuleStore  # noqa: E402
from ovs_sriov_proxy.sandbox import udp_frame  # noqa: E402
from ovs_sriov_proxy.sessions.switch import SessionTiming, SwitchSession  # noqa: E402

FRAME = udp_frame("00:00:00:00:00:01", "00:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 1234, 53)


def packet_in(version: int, buffer_id: int) -> bytes:
    if version == OFP10:
        body = struct.pack("!IHHBx", buffer_id, len(FRAME), 1, 0) + FRAME
    else:
        match = struct.pack("!HHII4x", 1, 12, 0x80000004, 1)
        body = struct.pack("!IHBBQ", buffer_id, len(FRAME), 0, 0, 0) + match + b"\0\0" + FRAME
    return struct.pack("!BBHI", version, 10, 8 + len(body), 0) + body


def connected(version: int) -> tuple[Proxy, SwitchSession]:
    store = RuleStore()
    store.replace_origin("config", [parse_flow("priority=10,udp actions=output:2")])
    proxy = Proxy(store)
    session = SwitchSession(frozenset({version}), SessionTiming(), now=0)
    session.data_to_send()
    session.receive_data(simple_message(version, OFPT_HELLO, 0), 0)
    requests = session.data_to_send()
    features_xid = struct.unpack_from("!I", requests, 4)[0]
    local_port = struct.pack("!H6s16s24x", 0xFFFE, b"\2" * 6, b"br0")
    if version == OFP10:
        features = struct.pack("!QIB3xII", 1, 256, 1, 0, 0) + local_port
        proxy.handle_events(session, session.receive_data(
            simple_message(version, 6, features_xid, features), 0))
    else:
        ports_xid = struct.unpack_from("!I", requests, len(requests) - 16 + 4)[0]
        features = struct.pack("!QIBB2xII", 1, 256, 254, 0, 0, 0)
        session.receive_data(simple_message(version, 6, features_xid, features), 0)
        port = struct.pack("!I4x6s2x16s32x", 0xFFFFFFFE, b"\2" * 6, b"br0")
        proxy.handle_events(session, session.receive_data(
            simple_message(version, 19, ports_xid, struct.pack("!HH4x", 13, 0) + port), 0))
    session.data_to_send()
    assert proxy.bridges, "handshake did not complete"
    return proxy, session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", choices=["1.0", "1.3"], default="1.3")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    version = OFP10 if args.version == "1.0" else OFP13
    proxy, session = connected(version)
    batch = b"".join(packet_in(version, i) for i in range(args.batch))

    def run() -> None:
        for _ in range(args.batches):
            proxy.handle_events(session, session.receive_data(batch, 1.0))
            session.data_to_send()

    run()  # warm up: the rule's templates are built on its first hit
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    misses = args.batches * args.batch
    bridge = next(iter(proxy.bridges.values()))
    assert bridge.hits == 2 * misses, bridge.all_counters()
    print(f"OpenFlow {args.version}: {misses / elapsed:,.0f} misses/s, "
          f"{elapsed / misses * 1e6:.2f} µs of CPU per miss ({args.batch} PACKET_INs per read)")
    if args.profile:
        cProfile.runctx("run()", globals(), locals(), "/tmp/miss_cpu.prof")
        pstats.Stats("/tmp/miss_cpu.prof").sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
