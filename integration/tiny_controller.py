"""A small OpenFlow controller for tests: answers every miss by sending the packet to one port.

    python integration/tiny_controller.py --listen PORT --output N [--answer packet-out|flow-mod|none]
                                          [--idle-timeout S] [--version 1.0|1.3]
                                          [--on-connect delete-all|modify-all]

`flow-mod` installs an exact in_port/eth_dst flow (idle timeout as given) carrying the miss's buffer
id; `none` never answers (a controller that hangs); `garbage` answers with bytes that are not
OpenFlow. `--on-connect delete-all` deletes every flow when the switch connects, as many
controllers do; `modify-all` makes every flow send to --output (a non-strict modify). Messages are built and parsed with os-ken,
which covers the controller's direction. It logs one line per answered miss to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys

from os_ken.ofproto import ofproto_protocol

VERSIONS = {"1.0": 0x01, "1.3": 0x04}


class FramedController(asyncio.Protocol):
    """Splits the controller's byte stream into OpenFlow messages, answers ECHO_REQUESTs and
    hands every other message to `handle` (shared with group15_controller.py)."""

    transport: asyncio.Transport
    buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 8:
            version, msg_type, length, xid = struct.unpack_from("!BBHI", self.buffer)
            if len(self.buffer) < length:
                return
            raw, self.buffer = self.buffer[:length], self.buffer[length:]
            if msg_type == 2:  # ECHO_REQUEST
                self.transport.write(struct.pack("!BBHI", version, 3, length, xid) + raw[8:])
            else:
                self.handle(msg_type, raw, xid)

    def handle(self, msg_type: int, raw: bytes, xid: int) -> None:
        """One message other than an ECHO_REQUEST."""


class Controller(FramedController):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.version = VERSIONS[args.version]
        self.dp = ofproto_protocol.ProtocolDesc(self.version)
        self.parser = self.dp.ofproto_parser
        self.ofp = self.dp.ofproto
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send(self.parser.OFPHello(self.dp))
        self.send(self.parser.OFPFeaturesRequest(self.dp))
        if self.args.on_connect:
            self.send(self.everything(self.ofp.OFPFC_DELETE if self.args.on_connect == "delete-all"
                                      else self.ofp.OFPFC_MODIFY))

    def everything(self, command: int) -> object:
        """A FLOW_MOD that reaches every flow of the switch."""
        actions = [self.parser.OFPActionOutput(self.args.output)]
        if self.version == 0x01:
            return self.parser.OFPFlowMod(
                self.dp, match=self.parser.OFPMatch(wildcards=self.ofp.OFPFW_ALL), cookie=0,
                command=command, idle_timeout=0, hard_timeout=0, priority=0,
                buffer_id=self.ofp.OFP_NO_BUFFER, out_port=self.ofp.OFPP_NONE, flags=0,
                actions=actions)
        return self.parser.OFPFlowMod(
            self.dp, table_id=self.ofp.OFPTT_ALL, command=command, out_port=self.ofp.OFPP_ANY,
            out_group=self.ofp.OFPG_ANY, instructions=[self.parser.OFPInstructionActions(
                self.ofp.OFPIT_APPLY_ACTIONS, actions)])

    def send(self, msg: object) -> None:
        msg.serialize()  # type: ignore[attr-defined]
        self.transport.write(bytes(msg.buf))  # type: ignore[attr-defined]

    def handle(self, msg_type: int, raw: bytes, xid: int) -> None:
        if msg_type == 10:  # PACKET_IN
            self.packet_in(raw, xid)

    def packet_in(self, raw: bytes, xid: int) -> None:
        msg = self.parser.OFPPacketIn.parser(self.dp, self.version, 10, len(raw), xid, raw)
        if self.args.answer == "none":
            return
        if self.args.answer == "garbage":  # a broken controller: not OpenFlow at all
            self.transport.write(b"\xff" * 16)
            return
        in_port = msg.in_port if self.version == 0x01 else msg.match["in_port"]
        actions = [self.parser.OFPActionOutput(self.args.output)]
        if self.args.answer == "flow-mod":
            eth_dst = bytes(msg.data[0:6])
            mac = ":".join(f"{b:02x}" for b in eth_dst)
            if self.version == 0x01:
                match = self.parser.OFPMatch(
                    wildcards=self.ofp.OFPFW_ALL & ~self.ofp.OFPFW_IN_PORT & ~self.ofp.OFPFW_DL_DST,
                    in_port=in_port, dl_dst=eth_dst)
                self.send(self.parser.OFPFlowMod(
                    self.dp, match=match, cookie=0, command=self.ofp.OFPFC_ADD,
                    idle_timeout=self.args.idle_timeout, priority=100, buffer_id=msg.buffer_id,
                    out_port=self.ofp.OFPP_NONE, actions=actions))
            else:
                self.send(self.parser.OFPFlowMod(
                    self.dp, priority=100, idle_timeout=self.args.idle_timeout,
                    buffer_id=msg.buffer_id, match=self.parser.OFPMatch(in_port=in_port, eth_dst=mac),
                    instructions=[self.parser.OFPInstructionActions(
                        self.ofp.OFPIT_APPLY_ACTIONS, actions)]))
        else:
            data = None if msg.buffer_id != self.ofp.OFP_NO_BUFFER else msg.data
            self.send(self.parser.OFPPacketOut(self.dp, msg.buffer_id, in_port, actions, data))
        print(f"answered miss buffer={msg.buffer_id} in_port={in_port} -> {self.args.output}",
              file=sys.stderr, flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--output", type=int, default=2)
    parser.add_argument("--answer", choices=["packet-out", "flow-mod", "none", "garbage"],
                        default="packet-out")
    parser.add_argument("--idle-timeout", type=int, default=0)
    parser.add_argument("--version", choices=sorted(VERSIONS), default="1.3")
    parser.add_argument("--on-connect", choices=["delete-all", "modify-all"])
    args = parser.parse_args()
    server = await asyncio.get_running_loop().create_server(lambda: Controller(args), "127.0.0.1",
                                                            args.listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
