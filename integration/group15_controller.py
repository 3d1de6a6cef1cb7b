"""A small OpenFlow 1.5 controller for tests: on connect it deletes every group, as Faucet
does, then adds group 3 (fast failover, one bucket watching port 1, output:1) and sends a
barrier; it prints "barrier" on the reply and "error TYPE CODE" on any error. Messages are built
with os-ken's 1.5 encoders (os-ken's app framework is 1.3-centred; a 1.5 group-mod has bucket
properties the proxy remaps).

    python integration/group15_controller.py --listen PORT
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys

from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from tiny_controller import FramedController  # run as a script: integration/ is on sys.path

DP = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)


def encode(msg: object, xid: int) -> bytes:
    msg.set_xid(xid)  # type: ignore[attr-defined]
    msg.serialize()  # type: ignore[attr-defined]
    return bytes(msg.buf)  # type: ignore[attr-defined]


class Controller(FramedController):
    programmed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(encode(parser.OFPHello(DP), 1))

    def handle(self, msg_type: int, raw: bytes, xid: int) -> None:
        if msg_type == ofp.OFPT_ERROR:
            err_type, code = struct.unpack_from("!HH", raw, 8)
            print(f"error {err_type} {code}", file=sys.stderr, flush=True)
        elif msg_type == ofp.OFPT_BARRIER_REPLY:
            print("barrier", file=sys.stderr, flush=True)
        elif msg_type == ofp.OFPT_HELLO and not self.programmed:
            self.programmed = True
            self.program()

    def program(self) -> None:
        bucket = parser.OFPBucket(bucket_id=1, actions=[parser.OFPActionOutput(1)],
                                  properties=[parser.OFPGroupBucketPropWatch(
                                      type_=ofp.OFPGBPT_WATCH_PORT, watch=1)])
        for xid, msg in enumerate((
                parser.OFPGroupMod(DP, command=ofp.OFPGC_DELETE, group_id=ofp.OFPG_ALL),
                parser.OFPGroupMod(DP, command=ofp.OFPGC_ADD, type_=ofp.OFPGT_FF, group_id=3,
                                   buckets=[bucket]),
                parser.OFPBarrierRequest(DP)), start=2):
            self.transport.write(encode(msg, xid))


async def serve(port: int) -> None:
    await asyncio.get_running_loop().create_server(Controller, "127.0.0.1", port)
    await asyncio.Event().wait()


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--listen", type=int, required=True)
    asyncio.run(serve(args.parse_args().listen))


if __name__ == "__main__":
    main()
