"""os-ken as the proxy's codec for everything off the hot path.

os-ken's own `ofproto_parser.msg()` logs and swallows any parse failure (a bare except) and
returns None; the proxy needs the failure as a `RemoteProtocolError` that costs the peer its
session. So this module calls os-ken's per-version parser tables directly and keeps an explicit
allow-list of the message types the proxy decodes (everything else is relayed or ignored as raw
bytes, never half-decoded).
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

from os_ken.ofproto import (
    ofproto_protocol,
    ofproto_v1_0,
    ofproto_v1_0_parser,
    ofproto_v1_3,
    ofproto_v1_3_parser,
    ofproto_v1_4,
    ofproto_v1_4_parser,
    ofproto_v1_5,
    ofproto_v1_5_parser,
)

from . import wellformed
from .framing import (
    OFP10,
    OFP13,
    OFP14,
    OFP15,
    OFPT10_STATS_REPLY,
    OFPT13_MULTIPART_REPLY,
    OFPT_ERROR,
    OFPT_FEATURES_REPLY,
    OFPT_FLOW_REMOVED,
    OFPT_PORT_STATUS,
    Message,
    RemoteProtocolError,
)

_MODULES: dict[int, tuple[ModuleType, ModuleType]] = {
    OFP10: (ofproto_v1_0, ofproto_v1_0_parser),
    OFP13: (ofproto_v1_3, ofproto_v1_3_parser),
    OFP14: (ofproto_v1_4, ofproto_v1_4_parser),
    OFP15: (ofproto_v1_5, ofproto_v1_5_parser),
}

# Switch-to-controller messages the proxy decodes with os-ken (all versions); PACKET_IN is
# decoded by hand in packet.py. The reply type numbers differ between 1.0 and 1.3+.
DECODED_FROM_SWITCH: dict[int, frozenset[int]] = {
    OFP10: frozenset({OFPT_ERROR, OFPT_FEATURES_REPLY, OFPT_FLOW_REMOVED, OFPT_PORT_STATUS,
                      OFPT10_STATS_REPLY}),
    **{
        v: frozenset({OFPT_ERROR, OFPT_FEATURES_REPLY, OFPT_FLOW_REMOVED, OFPT_PORT_STATUS,
                      OFPT13_MULTIPART_REPLY})
        for v in (OFP13, OFP14, OFP15)
    },
}


def ofproto(version: int) -> ModuleType:
    return _MODULES[version][0]


def parser(version: int) -> ModuleType:
    return _MODULES[version][1]


@cache
def datapath(version: int) -> Any:
    """The stand-in 'datapath' os-ken's message classes want: just the protocol description."""
    return ofproto_protocol.ProtocolDesc(version)


def decode(message: Message) -> Any:
    """Decode an allow-listed message with os-ken; RemoteProtocolError if it is malformed."""
    allowed = DECODED_FROM_SWITCH.get(message.version, frozenset())
    if message.type not in allowed:
        raise ValueError(f"message type {message.type} is not decoded by the proxy")
    cls = parser(message.version)._MSG_PARSERS.get(message.type)
    if cls is None:  # pragma: no cover - every allow-listed type has a parser
        raise ValueError(f"os-ken has no parser for type {message.type}")
    wellformed.check(message.version, message.type, message.raw)  # or os-ken may loop forever
    try:
        msg = cls(datapath(message.version), message.version, message.type, len(message.raw),
                  message.xid, message.raw)
    except Exception as exc:  # os-ken raises struct, index, key and its own errors on bad input
        raise RemoteProtocolError(f"malformed message type {message.type}: {exc!r}") from exc
    if msg is None:
        raise RemoteProtocolError(f"os-ken could not decode message type {message.type}")
    return msg


def serialize(msg: Any, xid: int | None = None) -> bytes:
    """Serialize an os-ken message object (optionally forcing its xid)."""
    if xid is not None:
        msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)
