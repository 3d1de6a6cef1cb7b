"""OpenFlow load generator: fake switches that stream flow misses at a controller.

Plays N switches (OpenFlow 1.0 or 1.3) against a controller and measures how fast
and how quickly it answers PACKET_INs, in the spirit of cbench (oflops):

* ``throughput`` mode keeps a window of W unanswered PACKET_INs per switch; every
  answer is replaced at once by a new PACKET_IN, so the controller is never idle.
* ``latency`` mode keeps exactly one unanswered PACKET_IN per switch.

A *response* is a FLOW_MOD or PACKET_OUT that carries back the buffer_id of an
unanswered PACKET_IN (``--buffered``, the default), or, with ``--unbuffered``, a
PACKET_OUT whose frame carries the sequence number the generator embedded in the
UDP payload. Latency is measured from the write of the PACKET_IN to the read of
its response (both timestamps are taken once per batch, on CLOCK_MONOTONIC).

The hot path uses plain ``struct`` and pre-built byte strings: every PACKET_IN is
``prefix + seq + suffix`` with the prefix/suffix pre-built per flow, and all the
replacements triggered by one read are written with one ``write``. Each worker
process owns a share of the switches and its own event loop; the parent
aggregates per-loop counts and latency samples.

The protocol side (``FakeSwitch``) is sans-IO: bytes in, bytes out, ``now`` passed
in, so the unit tests can check its bytes with os-ken's parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import struct
import sys
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

OFP10 = 0x01
OFP13 = 0x04
VERSIONS = {"1.0": OFP10, "1.3": OFP13}

NO_BUFFER = 0xFFFFFFFF
OFPP_CONTROLLER_13 = 0xFFFFFFFD

# Message types that are the same in 1.0 and 1.3.
T_HELLO = 0
T_ERROR = 1
T_ECHO_REQUEST = 2
T_ECHO_REPLY = 3
T_VENDOR = 4
T_FEATURES_REQUEST = 5
T_FEATURES_REPLY = 6
T_GET_CONFIG_REQUEST = 7
T_GET_CONFIG_REPLY = 8
T_SET_CONFIG = 9
T_PACKET_IN = 10
T_PACKET_OUT = 13
T_FLOW_MOD = 14

# Types whose numbers differ between the versions.
T10_STATS_REQUEST, T10_STATS_REPLY = 16, 17
T10_BARRIER_REQUEST, T10_BARRIER_REPLY = 18, 19
T10_QUEUE_GET_CONFIG_REQUEST, T10_QUEUE_GET_CONFIG_REPLY = 20, 21
T13_MULTIPART_REQUEST, T13_MULTIPART_REPLY = 18, 19
T13_BARRIER_REQUEST, T13_BARRIER_REPLY = 20, 21
T13_QUEUE_GET_CONFIG_REQUEST, T13_QUEUE_GET_CONFIG_REPLY = 22, 23
T13_ROLE_REQUEST, T13_ROLE_REPLY = 24, 25
T13_GET_ASYNC_REQUEST, T13_GET_ASYNC_REPLY = 26, 27

OFPMP_DESC = 0
OFPMP_PORT_DESC = 13
OFPET_BAD_REQUEST = 1
OFPBRC_BAD_TYPE = 1
OFPBRC_BAD_VENDOR = 3  # OFPBRC_BAD_EXPERIMENTER in 1.3
OFPR_NO_MATCH = 0

HDR = struct.Struct("!BBHI")
HDR_BID = struct.Struct("!BBHII")  # header + the u32 at offset 8 (PACKET_OUT buffer_id)
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")

# Where a response carries the buffer_id.
FLOW_MOD_BUFFER_ID_OFFSET = {OFP10: 64, OFP13: 32}
# PACKET_OUT: offset of actions_len and of the actions.
PACKET_OUT_ACTIONS_LEN_OFFSET = {OFP10: 14, OFP13: 16}
PACKET_OUT_ACTIONS_OFFSET = {OFP10: 16, OFP13: 24}

ETH_IPV4_UDP_HEADERS = 14 + 20 + 8  # where the UDP payload, hence the seq, starts
MAX_MESSAGE = 65536  # an OpenFlow message is at most 65535 bytes
RECV_BUFFER = 4 * MAX_MESSAGE


# ---------------------------------------------------------------------------
# Message builders (switch -> controller direction)
# ---------------------------------------------------------------------------


def ofp_message(version: int, msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return HDR.pack(version, msg_type, 8 + len(body), xid) + body


def build_hello(version: int) -> bytes:
    """HELLO; for 1.3 with a version-bitmap element announcing 1.3 only."""
    if version == OFP10:
        return ofp_message(OFP10, T_HELLO, 1)
    bitmap_element = struct.pack("!HHI", 1, 8, 1 << OFP13)  # OFPHET_VERSIONBITMAP
    return ofp_message(version, T_HELLO, 1, bitmap_element)


def port_mac(dpid: int, port_no: int) -> bytes:
    return struct.pack("!BBHH", 0x02, 0xFE, dpid & 0xFFFF, port_no)


def build_features_reply(version: int, xid: int, dpid: int, n_ports: int) -> bytes:
    capabilities = 0x47 if version == OFP13 else 0x87  # flow/table/port stats (+queue, arp)
    if version == OFP10:
        body = struct.pack("!QIB3xII", dpid, 256, 1, capabilities, 0xFFF)
        for port_no in range(1, n_ports + 1):
            body += struct.pack(
                "!H6s16sIIIIII", port_no, port_mac(dpid, port_no),
                f"p{port_no}".encode(), 0, 0, 0xC0, 0xC0, 0xC0, 0,  # 1GB-FD|copper
            )
        return ofp_message(OFP10, T_FEATURES_REPLY, xid, body)
    body = struct.pack("!QIBB2xII", dpid, 256, 254, 0, capabilities, 0)
    return ofp_message(OFP13, T_FEATURES_REPLY, xid, body)


def build_port_desc_reply(xid: int, dpid: int, n_ports: int) -> bytes:
    body = struct.pack("!HH4x", OFPMP_PORT_DESC, 0)
    for port_no in range(1, n_ports + 1):
        body += struct.pack(
            "!I4x6s2x16sIIIIIIII", port_no, port_mac(dpid, port_no),
            f"p{port_no}".encode(), 0, 4, 0x820, 0x820, 0x820, 0,  # state LIVE, 1GB-FD|copper
            1_000_000, 1_000_000,
        )
    return ofp_message(OFP13, T13_MULTIPART_REPLY, xid, body)


def build_desc_body(dpid: int) -> bytes:
    return struct.pack(
        "!256s256s256s32s256s", b"ovs-sriov-proxy bench", b"ofload fake switch",
        b"ofload", b"%016x" % dpid, b"dp %016x" % dpid,
    )


def build_error(version: int, xid: int, err_type: int, code: int, offending: bytes) -> bytes:
    return ofp_message(version, T_ERROR, xid, struct.pack("!HH", err_type, code) + offending[:64])


def build_frame(src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes,
                sport: int, dport: int, frame_size: int) -> tuple[bytes, bytes]:
    """An Ethernet/IPv4/UDP frame, split where the 4-byte sequence number goes.

    Returns (head, tail); the frame is ``head + seq + tail``. The UDP checksum is 0
    (allowed in IPv4) so the seq does not change any checksum.
    """
    payload_len = max(frame_size - ETH_IPV4_UDP_HEADERS, 4)
    ip_total = 20 + 8 + payload_len
    ip_hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_total, 0, 0x4000, 64, 17, 0, src_ip, dst_ip)
    csum = sum(U16.unpack_from(ip_hdr, i)[0] for i in range(0, 20, 2))
    while csum >> 16:
        csum = (csum & 0xFFFF) + (csum >> 16)
    ip_hdr = ip_hdr[:10] + U16.pack(~csum & 0xFFFF) + ip_hdr[12:]
    udp_hdr = struct.pack("!HHHH", sport, dport, 8 + payload_len, 0)
    head = dst_mac + src_mac + b"\x08\x00" + ip_hdr + udp_hdr
    return head, bytes(payload_len - 4)


def packet_in_parts(version: int, in_port: int, frame_head: bytes, frame_tail: bytes,
                    buffered: bool) -> tuple[bytes, bytes]:
    """A PACKET_IN (table miss, as OVS sends it) split around its 4-byte sequence number.

    Buffered: the seq is the buffer_id. Unbuffered: buffer_id is NO_BUFFER and the
    seq sits at the start of the UDP payload. xid is 0 like OVS's async messages.
    OF1.3 fields follow OVS 3.1 on a miss: reason NO_MATCH, table 0, cookie 0, and
    an OXM match holding only in_port.
    """
    frame_len = len(frame_head) + 4 + len(frame_tail)
    if version == OFP10:
        total = 18 + frame_len
        header = HDR.pack(OFP10, T_PACKET_IN, total, 0)
        after_bid = struct.pack("!HHBx", frame_len, in_port, OFPR_NO_MATCH)
    else:
        total = 8 + 16 + 16 + 2 + frame_len
        header = HDR.pack(OFP13, T_PACKET_IN, total, 0)
        oxm_in_port = struct.pack("!HBBI", 0x8000, 0 << 1, 4, in_port)
        match = struct.pack("!HH", 1, 4 + len(oxm_in_port)) + oxm_in_port + bytes(4)
        after_bid = struct.pack("!HBBQ", frame_len, OFPR_NO_MATCH, 0, 0) + match + bytes(2)
    if buffered:
        return header, after_bid + frame_head + bytes(4) + frame_tail
    return header + U32.pack(NO_BUFFER) + after_bid + frame_head, frame_tail


@dataclass(frozen=True)
class LoadConfig:
    """What one run plays; shared by all workers."""

    host: str
    port: int
    version: int
    switches: int
    mode: str  # "throughput" | "latency"
    window: int  # unanswered PACKET_INs per switch
    seconds: float  # measured time, after the warm-up
    warmup: float
    loop: float  # length of one measured loop (responses/s is the mean over loops)
    buffered: bool
    flows: int  # distinct frames per switch
    ports: int
    frame_size: int
    loss_timeout: float  # an unanswered PACKET_IN older than this is lost and replaced
    connect_timeout: float
    dpid_base: int


def switch_flows(cfg: LoadConfig, dpid: int) -> list[tuple[bytes, bytes]]:
    """The (prefix, suffix) pool of one switch.

    Flow 0 comes from the 'server' MAC on the last port, so a learning switch learns
    it; every other flow goes to that MAC from ports 1..ports-1 with its own source
    MAC and UDP source port, so a learning controller installs one flow per source.
    """
    server_mac = struct.pack("!BBHH", 0x02, 0x00, dpid & 0xFFFF, 0xFFFF)
    dst_ip = bytes([10, 255, (dpid >> 8) & 0xFF, dpid & 0xFF])
    pool = []
    for i in range(cfg.flows):
        if i == 0:
            src_mac, dst_mac, in_port = server_mac, b"\xff" * 6, cfg.ports
        else:
            src_mac = struct.pack("!BBHH", 0x02, 0x01, dpid & 0xFFFF, i)
            dst_mac, in_port = server_mac, 1 + (i - 1) % max(cfg.ports - 1, 1)
        src_ip = bytes([10, (dpid >> 8) & 0xFF, dpid & 0xFF, 1 + i % 250])
        head, tail = build_frame(src_mac, dst_mac, src_ip, dst_ip, 1024 + i, 5000, cfg.frame_size)
        pool.append(packet_in_parts(cfg.version, in_port, head, tail, cfg.buffered))
    return pool


# ---------------------------------------------------------------------------
# The fake switch (sans-IO)
# ---------------------------------------------------------------------------


class FakeSwitch:
    """One fake switch: answers the controller, streams PACKET_INs, matches responses.

    ``receive(data, now)`` returns the bytes to write (answers and replacement
    PACKET_INs). Sequence numbers come from ``seq_source`` so they are unique in
    a worker; ``lat`` collects latencies (ns) of responses inside the measured time.
    """

    def __init__(self, cfg: LoadConfig, dpid: int, stats: WorkerStats) -> None:
        self.cfg = cfg
        self.version = cfg.version
        self.dpid = dpid
        self.stats = stats
        self.pool = switch_flows(cfg, dpid)
        self.outstanding: dict[int, int] = {}  # seq -> send time (ns)
        self.next_seq = 1
        self.seq_step = 1
        self.flow_idx = 0
        # Receive buffer filled in place (recv_into): a fresh 256 KiB bytes per read,
        # as asyncio's plain Protocol does, costs ~80 us per read on this VM.
        self.buf = bytearray(RECV_BUFFER)
        self.view = memoryview(self.buf)
        self.start = 0  # first unparsed byte
        self.end = 0  # end of received data
        self.ready = False  # FEATURES_REPLY sent
        self.streaming = False
        self.peer_version: int | None = None
        self.responses = 0
        self.flow_mod_off = FLOW_MOD_BUFFER_ID_OFFSET[cfg.version]
        self.po_alen_off = PACKET_OUT_ACTIONS_LEN_OFFSET[cfg.version]
        self.po_act_off = PACKET_OUT_ACTIONS_OFFSET[cfg.version]

    # -- outputs ---------------------------------------------------------
    def hello(self) -> bytes:
        return build_hello(self.version)

    def packet_ins(self, count: int, now: int) -> list[bytes]:
        """``count`` new PACKET_INs, recorded as sent at ``now``."""
        out: list[bytes] = []
        pool = self.pool
        npool = len(pool)
        idx = self.flow_idx
        seq = self.next_seq
        outstanding = self.outstanding
        pack = U32.pack
        for _ in range(count):
            prefix, suffix = pool[idx]
            out.append(prefix + pack(seq) + suffix)
            outstanding[seq] = now
            seq += 1
            idx += 1
            if idx == npool:
                idx = 0
        self.flow_idx = idx
        self.stats.sent += count
        self.next_seq = seq
        return out

    def begin_streaming(self, now: int) -> bytes:
        self.streaming = True
        return b"".join(self.packet_ins(self.cfg.window, now))

    def reclaim_lost(self, now: int) -> bytes:
        """Drop unanswered PACKET_INs older than the loss timeout and replace them."""
        limit = now - int(self.cfg.loss_timeout * 1e9)
        lost = []
        for seq, sent_at in self.outstanding.items():
            if sent_at > limit:
                break  # dict is in send order
            lost.append(seq)
        if not lost:
            return b""
        for seq in lost:
            del self.outstanding[seq]
        self.stats.lost += len(lost)
        return b"".join(self.packet_ins(len(lost), now)) if self.streaming else b""

    # -- input -----------------------------------------------------------
    def get_buffer(self) -> memoryview:
        """Where the next read goes (asyncio.BufferedProtocol.get_buffer)."""
        if len(self.buf) - self.end < MAX_MESSAGE:
            pending = self.end - self.start
            self.buf[:pending] = self.buf[self.start:self.end]
            self.start, self.end = 0, pending
        return self.view[self.end:]

    def receive(self, data: bytes, now: int) -> bytes:
        """Feed ``data``; returns the bytes to write. (Copying path for tests.)"""
        out = []
        for i in range(0, len(data), MAX_MESSAGE):
            chunk = data[i:i + MAX_MESSAGE]
            target = self.get_buffer()
            target[:len(chunk)] = chunk
            out.append(self.buffer_updated(len(chunk), now))
        return b"".join(out)

    def buffer_updated(self, nbytes: int, now: int) -> bytes:
        """``nbytes`` more bytes are in the buffer; returns the bytes to write."""
        self.end += nbytes
        data = self.buf
        n = self.end
        off = self.start
        out: list[bytes] = []
        outstanding = self.outstanding
        stats = self.stats
        measuring = stats.measure_start <= now < stats.measure_end
        lat_append = stats.latencies.append
        unpack_hdr = HDR_BID.unpack_from
        buffered = self.cfg.buffered
        answered = packet_outs = flow_mods = unmatched = 0
        while n - off >= 12:
            _, mtype, length, xid, bid = unpack_hdr(data, off)
            if n - off < length or length < 8:
                if length < 8:
                    raise ConnectionError(f"dpid {self.dpid:#x}: bad OpenFlow length {length}")
                break
            if mtype == T_PACKET_OUT:
                packet_outs += 1
                if not buffered and bid == NO_BUFFER:
                    act_len = U16.unpack_from(data, off + self.po_alen_off)[0]
                    seq_off = off + self.po_act_off + act_len + ETH_IPV4_UDP_HEADERS
                    bid = U32.unpack_from(data, seq_off)[0] if seq_off + 4 <= off + length else NO_BUFFER
                sent_at = outstanding.pop(bid, None)
                if sent_at is None:
                    unmatched += 1
                else:
                    answered += 1
                    if measuring:
                        lat_append(now - sent_at)
            elif mtype == T_FLOW_MOD:
                flow_mods += 1
                if buffered and length >= self.flow_mod_off + 4:
                    sent_at = outstanding.pop(U32.unpack_from(data, off + self.flow_mod_off)[0], None)
                    if sent_at is not None:
                        answered += 1
                        if measuring:
                            lat_append(now - sent_at)
            else:
                reply = self.control(mtype, xid, bytes(data[off:off + length]))
                if reply:
                    out.append(reply)
            off += length
        if n - off == 8 and data[off + 2:off + 4] == b"\x00\x08":  # a bare header (HELLO, ECHO...)
            reply = self.control(data[off + 1], U32.unpack_from(data, off + 4)[0], bytes(data[off:n]))
            if reply:
                out.append(reply)
            off = n
        if off == n:
            self.start = self.end = 0
        else:
            self.start = off
        stats.reads += 1
        stats.packet_outs += packet_outs
        stats.flow_mods += flow_mods
        stats.unmatched += unmatched
        if answered:
            self.responses += answered
            stats.count_responses(answered, now)
            if self.streaming:
                out.extend(self.packet_ins(answered, now))
        return b"".join(out) if out else b""

    def control(self, mtype: int, xid: int, msg: bytes) -> bytes:
        """Answer a non-hot-path message; returns the reply (may be empty)."""
        v = self.version
        self.stats.other += 1
        if mtype == T_HELLO:
            self.peer_version = msg[0]
            if msg[0] < v and not _hello_offers(msg, v):
                raise ConnectionError(f"dpid {self.dpid:#x}: controller speaks only version {msg[0]}")
            return b""
        if mtype == T_ECHO_REQUEST:
            return HDR.pack(v, T_ECHO_REPLY, len(msg), xid) + msg[8:]
        if mtype == T_FEATURES_REQUEST:
            self.ready = True
            return build_features_reply(v, xid, self.dpid, self.cfg.ports)
        if mtype == T_GET_CONFIG_REQUEST:
            return ofp_message(v, T_GET_CONFIG_REPLY, xid, struct.pack("!HH", 0, 0xFFFF))
        if mtype in (T_SET_CONFIG, T_ERROR, T_ECHO_REPLY):
            if mtype == T_ERROR:
                self.stats.errors += 1
            return b""
        if v == OFP10:
            return self._control10(mtype, xid, msg)
        return self._control13(mtype, xid, msg)

    def _control10(self, mtype: int, xid: int, msg: bytes) -> bytes:
        if mtype == T10_BARRIER_REQUEST:
            return ofp_message(OFP10, T10_BARRIER_REPLY, xid)
        if mtype == T10_STATS_REQUEST and len(msg) >= 12:
            stype = U16.unpack_from(msg, 8)[0]
            body = build_desc_body(self.dpid) if stype == OFPMP_DESC else b""
            return ofp_message(OFP10, T10_STATS_REPLY, xid, struct.pack("!HH", stype, 0) + body)
        if mtype == T10_QUEUE_GET_CONFIG_REQUEST and len(msg) >= 10:
            return ofp_message(OFP10, T10_QUEUE_GET_CONFIG_REPLY, xid, msg[8:10] + bytes(6))
        if mtype == T_VENDOR:
            return build_error(OFP10, xid, OFPET_BAD_REQUEST, OFPBRC_BAD_VENDOR, msg)
        if mtype in (15,):  # PORT_MOD
            return b""
        return build_error(OFP10, xid, OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE, msg)

    def _control13(self, mtype: int, xid: int, msg: bytes) -> bytes:
        if mtype == T13_BARRIER_REQUEST:
            return ofp_message(OFP13, T13_BARRIER_REPLY, xid)
        if mtype == T13_MULTIPART_REQUEST and len(msg) >= 16:
            mp_type = U16.unpack_from(msg, 8)[0]
            if mp_type == OFPMP_PORT_DESC:
                return build_port_desc_reply(xid, self.dpid, self.cfg.ports)
            body = build_desc_body(self.dpid) if mp_type == OFPMP_DESC else b""
            return ofp_message(OFP13, T13_MULTIPART_REPLY, xid, struct.pack("!HH4x", mp_type, 0) + body)
        if mtype == T13_ROLE_REQUEST and len(msg) >= 24:
            return ofp_message(OFP13, T13_ROLE_REPLY, xid, msg[8:24])
        if mtype == T13_GET_ASYNC_REQUEST:
            masks = struct.pack("!IIIIII", 0x3, 0x1, 0x7, 0x7, 0xF, 0x0)
            return ofp_message(OFP13, T13_GET_ASYNC_REPLY, xid, masks)
        if mtype == T13_QUEUE_GET_CONFIG_REQUEST and len(msg) >= 12:
            return ofp_message(OFP13, T13_QUEUE_GET_CONFIG_REPLY, xid, msg[8:12] + bytes(4))
        if mtype == T_VENDOR:
            return build_error(OFP13, xid, OFPET_BAD_REQUEST, OFPBRC_BAD_VENDOR, msg)
        if mtype in (15, 16, 17, 28, 29):  # GROUP_MOD, PORT_MOD, TABLE_MOD, SET_ASYNC, METER_MOD
            return b""
        return build_error(OFP13, xid, OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE, msg)


def _hello_offers(msg: bytes, version: int) -> bool:
    """Whether a HELLO's version bitmap includes ``version``."""
    off = 8
    while off + 4 <= len(msg):
        etype, elen = struct.unpack_from("!HH", msg, off)
        if elen < 4:
            return False
        if etype == 1 and off + 8 <= len(msg):
            return bool(U32.unpack_from(msg, off + 4)[0] & (1 << version))
        off += (elen + 7) // 8 * 8
    return False


# ---------------------------------------------------------------------------
# Worker: event loop, sockets, timing
# ---------------------------------------------------------------------------


@dataclass
class WorkerStats:
    measure_start: int = 0
    measure_end: int = 0
    loop_ns: int = 1
    loop_counts: list[int] = field(default_factory=list)
    latencies: array = field(default_factory=lambda: array("q"))
    sent: int = 0
    responses: int = 0
    flow_mods: int = 0
    packet_outs: int = 0
    unmatched: int = 0
    lost: int = 0
    errors: int = 0
    other: int = 0
    reads: int = 0  # buffer_updated calls: responses/reads is the batching achieved

    def count_responses(self, count: int, now: int) -> None:
        self.responses += count
        if self.measure_start <= now < self.measure_end:
            self.loop_counts[(now - self.measure_start) // self.loop_ns] += count


class SwitchProtocol(asyncio.BufferedProtocol):
    """Thin asyncio adapter around FakeSwitch."""

    def __init__(self, switch: FakeSwitch) -> None:
        self.switch = switch
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(self.switch.hello())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.switch.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        out = self.switch.buffer_updated(nbytes, time.monotonic_ns())
        if out:
            self.transport.write(out)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def _factory(proto: SwitchProtocol) -> Callable[[], SwitchProtocol]:
    return lambda: proto


async def _worker_async(cfg: LoadConfig, dpids: list[int],
                        conn: multiprocessing.connection.Connection) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = WorkerStats()
    protocols: list[SwitchProtocol] = []
    deadline = loop.time() + cfg.connect_timeout
    for dpid in dpids:
        proto = SwitchProtocol(FakeSwitch(cfg, dpid, stats))
        await asyncio.wait_for(loop.create_connection(_factory(proto), cfg.host, cfg.port),
                               max(deadline - loop.time(), 0.01))
        protocols.append(proto)
    while not all(p.switch.ready for p in protocols):
        if loop.time() > deadline:
            missing = [hex(p.switch.dpid) for p in protocols if not p.switch.ready]
            raise TimeoutError(f"no FEATURES_REQUEST within {cfg.connect_timeout}s for dpids {missing}")
        if any(p.closed.done() for p in protocols):
            raise ConnectionError("controller closed a connection during the handshake")
        await asyncio.sleep(0.005)

    # Tell the parent we are ready; it answers with the common start time.
    conn.send(("ready", len(protocols)))
    start_box: asyncio.Future[int] = loop.create_future()

    def on_parent() -> None:
        msg = conn.recv()
        if not start_box.done():
            start_box.set_result(msg[1])

    loop.add_reader(conn.fileno(), on_parent)
    start_ns = await asyncio.wait_for(start_box, cfg.connect_timeout + 10)
    loop.remove_reader(conn.fileno())

    n_loops = max(round(cfg.seconds / cfg.loop), 1)
    stats.loop_ns = int(cfg.loop * 1e9)
    stats.measure_start = start_ns + int(cfg.warmup * 1e9)
    stats.measure_end = stats.measure_start + n_loops * stats.loop_ns
    stats.loop_counts = [0] * n_loops
    await asyncio.sleep(max((start_ns - time.monotonic_ns()) / 1e9, 0))

    now = time.monotonic_ns()
    for p in protocols:
        p.write(p.switch.begin_streaming(now))
    # Bounded: runs until measure_end, waking every 50 ms to replace lost PACKET_INs.
    while True:
        now = time.monotonic_ns()
        if now >= stats.measure_end:
            break
        if any(p.closed.done() for p in protocols):
            raise ConnectionError("controller closed a connection during the run")
        for p in protocols:
            p.write(p.switch.reclaim_lost(now))
        await asyncio.sleep(min(0.05, (stats.measure_end - now) / 1e9))
    for p in protocols:
        p.switch.streaming = False
        if p.transport is not None:
            p.transport.close()
    per_switch = [p.switch.responses for p in protocols]
    return {
        "loop_counts": stats.loop_counts,
        "latencies": stats.latencies.tobytes(),
        "sent": stats.sent, "responses": stats.responses, "flow_mods": stats.flow_mods,
        "packet_outs": stats.packet_outs, "unmatched": stats.unmatched, "lost": stats.lost,
        "errors": stats.errors, "reads": stats.reads, "per_switch_min": min(per_switch), "per_switch_max": max(per_switch),
        "outstanding_at_end": sum(len(p.switch.outstanding) for p in protocols),
    }


def _worker(cfg: LoadConfig, dpids: list[int], cpu: int | None,
            conn: multiprocessing.connection.Connection) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        result = asyncio.run(_worker_async(cfg, dpids, conn))
        conn.send(("result", result))
    except (OSError, TimeoutError, ConnectionError) as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except Exception:  # noqa: BLE001 -- a generator bug: hand the traceback to the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# Parent: spawn workers, synchronise the start, aggregate
# ---------------------------------------------------------------------------


def percentile(sorted_values: list[int] | array, q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(int(q / 100.0 * len(sorted_values)), len(sorted_values) - 1)
    return float(sorted_values[idx])


def _receive(conn: multiprocessing.connection.Connection) -> tuple[str, Any]:
    try:
        kind, payload = conn.recv()
    except EOFError:
        raise RuntimeError("a worker died without reporting") from None
    return kind, payload


def run(cfg: LoadConfig, processes: int = 1, cpus: list[int] | None = None) -> dict[str, Any]:
    """Run one load; return the aggregated result. Raises RuntimeError on failure."""
    processes = max(1, min(processes, cfg.switches))
    dpids = [cfg.dpid_base + i for i in range(cfg.switches)]
    shares = [dpids[i::processes] for i in range(processes)]
    ctx = multiprocessing.get_context("fork")
    workers = []
    conns = []
    for i, share in enumerate(shares):
        parent_end, child_end = ctx.Pipe()
        cpu = cpus[i % len(cpus)] if cpus else None
        proc = ctx.Process(target=_worker, args=(cfg, share, cpu, child_end), daemon=True)
        proc.start()
        child_end.close()
        workers.append(proc)
        conns.append(parent_end)
    try:
        for c in conns:
            if not c.poll(cfg.connect_timeout + 5):
                raise RuntimeError("a worker did not finish its handshake in time")
            kind, payload = _receive(c)
            if kind != "ready":
                raise RuntimeError(f"worker failed: {payload}")
        start_ns = time.monotonic_ns() + 50_000_000
        for c in conns:
            c.send(("start", start_ns))
        results = []
        budget = cfg.warmup + cfg.seconds + 30
        for c in conns:
            if not c.poll(budget):
                raise RuntimeError("a worker did not report in time")
            kind, payload = _receive(c)
            if kind != "result":
                raise RuntimeError(f"worker failed: {payload}")
            results.append(payload)
    finally:
        for proc in workers:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
    return aggregate(cfg, processes, results)


def aggregate(cfg: LoadConfig, processes: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    n_loops = len(results[0]["loop_counts"])
    loop_totals = [sum(r["loop_counts"][i] for r in results) for i in range(n_loops)]
    rates = [c / cfg.loop for c in loop_totals]
    lat = array("q")
    for r in results:
        lat.frombytes(r["latencies"])
    lat_sorted = sorted(lat)
    us = 1e-3
    totals = {k: sum(r[k] for r in results)
              for k in ("sent", "responses", "flow_mods", "packet_outs", "unmatched", "lost", "errors", "reads",
                        "outstanding_at_end")}
    return {
        "target": f"tcp:{cfg.host}:{cfg.port}",
        "version": {OFP10: "1.0", OFP13: "1.3"}[cfg.version],
        "mode": cfg.mode,
        "switches": cfg.switches,
        "window": cfg.window,
        "buffered": cfg.buffered,
        "processes": processes,
        "loops": n_loops,
        "loop_seconds": cfg.loop,
        "responses_per_s": sum(rates) / len(rates),
        "loop_rates": rates,
        "loop_min": min(rates),
        "loop_max": max(rates),
        "latency_samples": len(lat_sorted),
        "latency_us": {
            "mean": (sum(lat_sorted) / len(lat_sorted) * us) if lat_sorted else float("nan"),
            "p50": percentile(lat_sorted, 50) * us,
            "p90": percentile(lat_sorted, 90) * us,
            "p99": percentile(lat_sorted, 99) * us,
            "p99.9": percentile(lat_sorted, 99.9) * us,
            "max": (lat_sorted[-1] * us) if lat_sorted else float("nan"),
        },
        "per_switch_min": min(r["per_switch_min"] for r in results),
        "per_switch_max": max(r["per_switch_max"] for r in results),
        **totals,
        "config": asdict(cfg),
    }


def format_result(res: dict[str, Any]) -> str:
    lat = res["latency_us"]
    batching = res["responses"] / max(res["reads"], 1)
    lines = [
        (f"ofload {res['target']} OF{res['version']} {res['mode']} switches={res['switches']} "
         f"window={res['window']} {'buffered' if res['buffered'] else 'unbuffered'} "
         f"processes={res['processes']}"),
        "loops (responses/s): " + " ".join(f"{r:.0f}" for r in res["loop_rates"]),
        (f"responses/s: mean {res['responses_per_s']:.0f}  min {res['loop_min']:.0f}  "
         f"max {res['loop_max']:.0f}  over {res['loops']} x {res['loop_seconds']}s"),
        (f"latency us: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
         f"p99.9 {lat['p99.9']:.1f}  mean {lat['mean']:.1f}  max {lat['max']:.1f}  "
         f"({res['latency_samples']} samples)"),
        (f"totals: sent {res['sent']}  responses {res['responses']}  flow_mods {res['flow_mods']}  "
         f"packet_outs {res['packet_outs']}  unmatched {res['unmatched']}  lost {res['lost']}  "
         f"errors {res['errors']}  responses/read {batching:.1f}  "
         f"per-switch responses {res['per_switch_min']}..{res['per_switch_max']}"),
    ]
    return "\n".join(lines)


def parse_target(target: str) -> tuple[str, int]:
    parts = target.split(":")
    if len(parts) != 3 or parts[0] != "tcp":
        raise argparse.ArgumentTypeError(f"target must be tcp:IP:PORT, got {target!r}")
    return parts[1], int(parts[2])


def parse_cpus(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--target", type=parse_target, default=("127.0.0.1", 6653), help="tcp:IP:PORT")
    ap.add_argument("--switches", type=int, default=16)
    ap.add_argument("--version", choices=sorted(VERSIONS), default="1.0")
    ap.add_argument("--mode", choices=("throughput", "latency"), default="throughput")
    ap.add_argument("--window", type=int, default=None,
                    help="unanswered PACKET_INs per switch (throughput default 64; latency is always 1)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured time, after the warm-up")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--loop", type=float, default=1.0, help="length of one measured loop (s)")
    buf = ap.add_mutually_exclusive_group()
    buf.add_argument("--buffered", dest="buffered", action="store_true", default=True,
                     help="unique buffer_id per PACKET_IN; the response carries it back")
    buf.add_argument("--unbuffered", dest="buffered", action="store_false",
                     help="buffer_id NO_BUFFER; the response is a PACKET_OUT echoing the frame")
    ap.add_argument("--flows", type=int, default=256, help="distinct frames (source MAC/port) per switch")
    ap.add_argument("--ports", type=int, default=4, help="ports per switch")
    ap.add_argument("--frame-size", type=int, default=64)
    ap.add_argument("--loss-timeout", type=float, default=0.5,
                    help="a PACKET_IN unanswered this long (s) counts as lost and is replaced")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--dpid-base", type=lambda s: int(s, 0), default=1)
    ap.add_argument("--processes", type=int, default=1, help="worker processes, each owning N/P switches")
    ap.add_argument("--cpus", type=parse_cpus, default=None, help="pin workers to these CPUs, e.g. 1 or 0,1")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    window = 1 if args.mode == "latency" else (args.window or 64)
    host, port = args.target
    cfg = LoadConfig(
        host=host, port=port, version=VERSIONS[args.version], switches=args.switches, mode=args.mode,
        window=window, seconds=args.seconds, warmup=args.warmup, loop=args.loop, buffered=args.buffered,
        flows=max(args.flows, 2), ports=max(args.ports, 2), frame_size=args.frame_size,
        loss_timeout=args.loss_timeout, connect_timeout=args.connect_timeout, dpid_base=args.dpid_base,
    )
    if args.cpus:
        os.sched_setaffinity(0, set(args.cpus))
    try:
        res = run(cfg, args.processes, args.cpus)
    except RuntimeError as exc:
        print(f"ofload: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(res) if args.json else format_result(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
