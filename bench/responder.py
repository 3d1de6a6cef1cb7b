"""A trivial OpenFlow controller that answers every PACKET_IN as cheaply as possible.

It exists to measure the load generator's own ceiling (bench/ofload.py): if
ofload against this responder is far above the figure for a real controller, the
real controller, not the generator, was the bottleneck.

Per connection: send HELLO (1.3 with a version bitmap offering 1.0 and 1.3) and
FEATURES_REQUEST in the switch's version, answer ECHO_REQUEST, and answer each
PACKET_IN with one pre-packed message: PACKET_OUT (output:2) carrying the
buffer_id back, or with ``--answer flow-mod`` a FLOW_MOD (match-all body,
output:2) carrying it. An unbuffered PACKET_IN is answered by a PACKET_OUT that
echoes the frame. Everything else is ignored. All answers triggered by one read
are written with one write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import struct
import sys

OFP10 = 0x01
OFP13 = 0x04
NO_BUFFER = 0xFFFFFFFF
OFPP_CONTROLLER_13 = 0xFFFFFFFD
T_HELLO, T_ECHO_REQUEST, T_ECHO_REPLY, T_FEATURES_REQUEST, T_PACKET_IN = 0, 2, 3, 5, 10
T_PACKET_OUT, T_FLOW_MOD = 13, 14

HDR = struct.Struct("!BBHI")
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
OUT_PORT = 2

# PACKET_OUT with one output action, no data: version, type, len, xid, buffer_id, in_port, ...
PO10 = struct.Struct("!BBHIIHHHHHH")  # ... actions_len=8, OUTPUT(type 0, len 8, port, max_len)
PO13 = struct.Struct("!BBHIIIH6xHHIH6x")  # ... actions_len=16, OUTPUT(type 0, len 16, port, max_len)


def hello() -> bytes:
    bitmap = struct.pack("!HHI", 1, 8, (1 << OFP10) | (1 << OFP13))
    return HDR.pack(OFP13, T_HELLO, 16, 1) + bitmap


def flow_mod_parts(version: int) -> tuple[bytes, bytes]:
    """A FLOW_MOD (add, priority 10, match-all, output:2) split around its buffer_id."""
    if version == OFP10:
        match_all = struct.pack("!I", 0x3FFFFF) + bytes(36)  # every field wildcarded
        head_body = match_all + struct.pack("!QHHHH", 0, 0, 0, 0, 10)  # cookie, ADD, idle, hard, prio
        tail = struct.pack("!HH", 0xFFFF, 0) + struct.pack("!HHHH", 0, 8, OUT_PORT, 0)
        length = 8 + len(head_body) + 4 + len(tail)
        return HDR.pack(OFP10, T_FLOW_MOD, length, 0) + head_body, tail
    head_body = struct.pack("!QQBBHHH", 0, 0, 0, 0, 0, 0, 10)
    tail = struct.pack("!IIH2x", 0xFFFFFFFF, 0xFFFFFFFF, 0)  # out_port, out_group, flags
    tail += struct.pack("!HH4x", 1, 4)  # empty OXM match, padded to 8
    tail += struct.pack("!HH4x", 4, 24) + struct.pack("!HHIH6x", 0, 16, OUT_PORT, 0)  # APPLY_ACTIONS
    length = 8 + len(head_body) + 4 + len(tail)
    return HDR.pack(OFP13, T_FLOW_MOD, length, 0) + head_body, tail


MAX_MESSAGE = 65536


class Responder(asyncio.BufferedProtocol):
    """One switch connection. Reads go into a preallocated buffer (recv_into):
    asyncio's plain Protocol allocates 256 KiB per read, which is slow on a VM."""

    def __init__(self, answer: str, counters: dict[str, int]) -> None:
        self.answer = answer
        self.counters = counters
        self.buf = bytearray(4 * MAX_MESSAGE)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.version = 0
        self.transport: asyncio.Transport | None = None
        self.fm_parts: tuple[bytes, bytes] = (b"", b"")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(hello())
        self.counters["connections"] += 1

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.end < MAX_MESSAGE:
            pending = self.end - self.start
            self.buf[:pending] = self.buf[self.start:self.end]
            self.start, self.end = 0, pending
        return self.view[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        data = self.buf
        n = self.end
        off = self.start
        out: list[bytes] = []
        unpack = HDR.unpack_from
        answered = 0
        while n - off >= 8:
            version, mtype, length, xid = unpack(data, off)
            if length < 8:
                assert self.transport is not None
                self.transport.close()
                return
            if n - off < length:
                break
            if mtype == T_PACKET_IN:
                answered += 1
                out.append(self.answer_packet_in(data, off, length, xid))
            elif mtype == T_ECHO_REQUEST:
                out.append(HDR.pack(version, T_ECHO_REPLY, length, xid) + data[off + 8:off + length])
            elif mtype == T_HELLO:
                self.version = OFP13 if version >= OFP13 else OFP10
                self.fm_parts = flow_mod_parts(self.version)
                out.append(HDR.pack(self.version, T_FEATURES_REQUEST, 8, 2))
            off += length
        if off == n:
            self.start = self.end = 0
        else:
            self.start = off
        if out:
            self.counters["packet_ins"] += answered
            assert self.transport is not None
            self.transport.write(b"".join(out))

    def answer_packet_in(self, data: bytearray, off: int, length: int, xid: int) -> bytes:
        bid = U32.unpack_from(data, off + 8)[0]
        if self.version == OFP10:
            in_port = U16.unpack_from(data, off + 14)[0]
            if bid != NO_BUFFER:
                if self.answer == "flow-mod":
                    head, tail = self.fm_parts
                    return head + U32.pack(bid) + tail
                return PO10.pack(OFP10, T_PACKET_OUT, 24, xid, bid, in_port, 8, 0, 8, OUT_PORT, 0)
            frame = data[off + 18:off + length]
            return PO10.pack(OFP10, T_PACKET_OUT, 24 + len(frame), xid, bid, in_port, 8, 0, 8,
                             OUT_PORT, 0) + frame
        # OF1.3: in_port from the first OXM if it is in_port, else CONTROLLER.
        match_len = U16.unpack_from(data, off + 26)[0]
        in_port = OFPP_CONTROLLER_13
        if match_len >= 12 and data[off + 30] == 0 and data[off + 28:off + 30] == b"\x80\x00":
            in_port = U32.unpack_from(data, off + 32)[0]
        if bid != NO_BUFFER:
            if self.answer == "flow-mod":
                head, tail = self.fm_parts
                return head + U32.pack(bid) + tail
            return PO13.pack(OFP13, T_PACKET_OUT, 40, xid, bid, in_port, 16, 0, 16, OUT_PORT, 0)
        data_off = off + 24 + (match_len + 7) // 8 * 8 + 2
        frame = data[data_off:off + length]
        return PO13.pack(OFP13, T_PACKET_OUT, 40 + len(frame), xid, bid, in_port, 16, 0, 16,
                         OUT_PORT, 0) + frame

    def connection_lost(self, exc: Exception | None) -> None:
        self.counters["connections"] -= 1


async def serve(host: str, port: int, answer: str, duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    counters = {"connections": 0, "packet_ins": 0}
    server = await loop.create_server(lambda: Responder(answer, counters), host, port,
                                      reuse_address=True, backlog=1024)
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    print(f"responder listening on tcp:{host}:{port} answer={answer}", flush=True)
    try:
        await asyncio.wait_for(stop, duration) if duration else await stop
    except TimeoutError:
        pass
    server.close()
    print(f"responder: answered {counters['packet_ins']} packet-ins", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="ptcp:6653:127.0.0.1", help="ptcp:PORT[:IP]")
    ap.add_argument("--answer", choices=("packet-out", "flow-mod"), default="packet-out",
                    help="what answers a buffered PACKET_IN")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    ap.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    args = ap.parse_args(argv)
    parts = args.listen.split(":")
    if parts[0] != "ptcp" or len(parts) not in (2, 3):
        ap.error(f"--listen must be ptcp:PORT[:IP], got {args.listen!r}")
    host = parts[2] if len(parts) == 3 else "127.0.0.1"
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(host, int(parts[1]), args.answer, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
