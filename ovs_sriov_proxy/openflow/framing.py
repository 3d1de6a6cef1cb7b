"""OpenFlow framing: split a byte stream into messages and check their headers.

Pure code, no I/O. A `Framer` takes whatever bytes a transport read and returns whole messages;
anything that cannot be a valid OpenFlow message raises `RemoteProtocolError` — the blame is the
peer's, and the caller closes that one session.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!BBHI")
_VERSION_TYPE_LENGTH = struct.Struct("!BBH")
_XID = struct.Struct("!I")
HEADER_LEN = HEADER.size
MAX_MESSAGE_LEN = 0xFFFF  # the length field is 16 bits

OFP10 = 0x01
OFP13 = 0x04
OFP14 = 0x05
OFP15 = 0x06
VERSION_NAMES = {OFP10: "OpenFlow10", OFP13: "OpenFlow13", OFP14: "OpenFlow14", OFP15: "OpenFlow15"}
VERSIONS_BY_NAME = {name: v for v, name in VERSION_NAMES.items()}
# Versions any OpenFlow peer may put in a header; 1.1 and 1.2 are real but not offered by us.
KNOWN_WIRE_VERSIONS = frozenset(range(0x01, 0x07))

# Message types whose numbers are the same in every version we speak.
OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_EXPERIMENTER = 4
OFPT_FEATURES_REQUEST = 5
OFPT_FEATURES_REPLY = 6
OFPT_GET_CONFIG_REQUEST = 7
OFPT_GET_CONFIG_REPLY = 8
OFPT_SET_CONFIG = 9
OFPT_PACKET_IN = 10
OFPT_FLOW_REMOVED = 11
OFPT_PORT_STATUS = 12
OFPT_PACKET_OUT = 13
OFPT_FLOW_MOD = 14

# Types whose numbers moved between 1.0 and 1.3.
OFPT10_STATS_REQUEST = 16
OFPT10_STATS_REPLY = 17
OFPT10_BARRIER_REQUEST = 18
OFPT10_BARRIER_REPLY = 19
OFPT13_MULTIPART_REQUEST = 18
OFPT13_MULTIPART_REPLY = 19
OFPT13_BARRIER_REQUEST = 20
OFPT13_BARRIER_REPLY = 21


def barrier_request_type(version: int) -> int:
    return OFPT10_BARRIER_REQUEST if version == OFP10 else OFPT13_BARRIER_REQUEST


def barrier_reply_type(version: int) -> int:
    return OFPT10_BARRIER_REPLY if version == OFP10 else OFPT13_BARRIER_REPLY


class ProtocolError(Exception):
    """An OpenFlow conversation cannot go on."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that is not valid OpenFlow (its fault, not ours)."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something invalid (our bug)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One whole OpenFlow message as received: header fields plus the complete bytes."""

    version: int
    type: int
    xid: int
    raw: bytes

    @property
    def body(self) -> bytes:
        return self.raw[HEADER_LEN:]


class Framer:
    """Reassembles messages from a stream.

    `expected_version` is None until version negotiation is done; after that a message with a
    different version is refused (OpenFlow requires every message to carry the negotiated one,
    except that HELLO and ERROR may be sent before it is known).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.expected_version: int | None = None

    def receive_data(self, data: bytes | bytearray) -> list[Message]:
        return [Message(raw[0], raw[1], _XID.unpack_from(raw, 4)[0], raw)
                for raw in self.receive_raw(data)]

    def receive_raw(self, data: bytes | bytearray) -> list[bytes]:
        """Whole messages as bytes (the hot path: no per-message objects beyond the bytes)."""
        if self._buffer:  # a partial message was pending: join it with the new data, once
            self._buffer += data
            stream = bytes(self._buffer)
            self._buffer.clear()
        else:
            stream = bytes(data)  # the common case: transports hand in bytes, so no copy
        messages: list[bytes] = []
        offset = 0
        end = len(stream)
        unpack_from = _VERSION_TYPE_LENGTH.unpack_from
        expected = self.expected_version
        while end - offset >= HEADER_LEN:
            version, msg_type, length = unpack_from(stream, offset)
            if length < HEADER_LEN:
                raise RemoteProtocolError(f"message length {length} is shorter than a header")
            if version != expected:
                if version not in KNOWN_WIRE_VERSIONS:
                    raise RemoteProtocolError(f"not OpenFlow: version byte 0x{version:02x}")
                if expected is not None and msg_type != OFPT_HELLO:
                    raise RemoteProtocolError(
                        f"message version 0x{version:02x} differs from the negotiated "
                        f"0x{expected:02x}")
            if end - offset < length:
                break
            messages.append(stream[offset : offset + length])
            offset += length
        if offset < end:
            self._buffer += stream[offset:]
        return messages

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)


def header(version: int, msg_type: int, length: int, xid: int) -> bytes:
    if not HEADER_LEN <= length <= MAX_MESSAGE_LEN:
        raise LocalProtocolError(f"message length {length} out of range")
    return HEADER.pack(version, msg_type, length, xid)


def simple_message(version: int, msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return header(version, msg_type, HEADER_LEN + len(body), xid) + body


# ---- HELLO and version negotiation (OpenFlow 1.3.1+ section 6.3.1) ----

HELLO_ELEM_VERSIONBITMAP = 1


def hello(versions: frozenset[int], xid: int = 0) -> bytes:
    """A HELLO offering `versions`: the header carries the highest, a bitmap element all of them."""
    highest = max(versions)
    if highest == OFP10:
        return simple_message(OFP10, OFPT_HELLO, xid)
    bitmap = 0
    for v in versions:
        bitmap |= 1 << v
    element = struct.pack("!HHI", HELLO_ELEM_VERSIONBITMAP, 8, bitmap)
    return simple_message(highest, OFPT_HELLO, xid, element)


def peer_versions(message: Message) -> frozenset[int]:
    """The versions a peer's HELLO offers: its bitmap if it sent one, else every version up to its header's."""
    offered = bitmap_versions(message)
    return offered if offered is not None else frozenset(range(OFP10, message.version + 1))


def bitmap_versions(message: Message) -> frozenset[int] | None:
    """The versions in a HELLO's version bitmap element, or None if it has none."""
    body = message.body
    offset = 0
    while len(body) - offset >= 4:
        elem_type, elem_len = struct.unpack_from("!HH", body, offset)
        if elem_len < 4 or offset + elem_len > len(body):
            raise RemoteProtocolError(f"HELLO element of length {elem_len} does not fit")
        if elem_type == HELLO_ELEM_VERSIONBITMAP:
            offered: set[int] = set()
            for i in range((elem_len - 4) // 4):
                (word,) = struct.unpack_from("!I", body, offset + 4 + 4 * i)
                offered.update(32 * i + bit for bit in range(32) if word >> bit & 1)
            return frozenset(offered)
        offset += (elem_len + 7) // 8 * 8
    return None


def negotiate(ours: frozenset[int], message: Message) -> int | None:
    """The version both sides speak, or None (OpenFlow 1.3.1+, section 6.3.1): with a bitmap
    from the peer, the highest common version; without one, the lower of the two header
    versions, if we speak it."""
    offered = bitmap_versions(message)
    if offered is not None:
        common = ours & offered
        return max(common) if common else None
    version = min(message.version, max(ours))
    return version if version in ours else None


# ---- ERROR messages ----

OFPET_HELLO_FAILED = 0
OFPHFC_INCOMPATIBLE = 0
OFPET_BAD_REQUEST = 1
OFPBRC_BAD_VERSION = 0
OFPBRC_BAD_TYPE = 1
OFPBRC_BAD_LEN = 6


def hello_failed(ours: frozenset[int], message: Message) -> bytes:
    """The HELLO_FAILED/INCOMPATIBLE error for a peer whose HELLO shares no version with us,
    in the lowest version either side knows, saying which versions we speak."""
    offered = ", ".join(VERSION_NAMES.get(v, hex(v)) for v in sorted(ours))
    return error(min(ours | {message.version}), 0, OFPET_HELLO_FAILED, OFPHFC_INCOMPATIBLE,
                 f"we speak {offered}".encode())


def error(version: int, xid: int, err_type: int, code: int, data: bytes = b"") -> bytes:
    """An ERROR message; `data` is (the start of) the offending message, at most 64 bytes kept."""
    return simple_message(version, OFPT_ERROR, xid, struct.pack("!HH", err_type, code) + data[:64])
