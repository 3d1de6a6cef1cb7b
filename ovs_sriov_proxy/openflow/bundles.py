"""OpenFlow bundles on the wire: the 1.4+ messages and the ONF extension that 1.3 uses.

A controller may wrap flow-mods, group-mods and the like in a bundle (neutron's OVS agent does,
on 1.3, through the ONF extension), so that the bridge applies them all or none. The proxy must
treat every wrapped message as it treats the same message alone (cookie tags, priority bands,
group and meter ids), and give each controller's bundles their own ids on the proxy's one
connection to the bridge, where bundle ids of two controllers would otherwise collide.

Layouts (after the message header; the ONF extension adds experimenter id and type first):
  control: bundle_id u32, type u16, flags u16, properties
  add:     bundle_id u32, pad u16, flags u16, the message (its own header and length),
           zero padding to 8 bytes if properties follow, properties

os-ken encodes both forms but does not decode them on the switch side; this is the small part
of them the proxy reads and rewrites. Pure functions on bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .framing import RemoteProtocolError

OFPT_EXPERIMENTER, OFPT14_BUNDLE_CONTROL, OFPT14_BUNDLE_ADD_MESSAGE = 4, 33, 34
ONF_EXPERIMENTER = 0x4F4E4600
ONF_ET_BUNDLE_CONTROL, ONF_ET_BUNDLE_ADD_MESSAGE = 2300, 2301
OFPBCT_OPEN_REQUEST, OFPBCT_CLOSE_REQUEST = 0, 2
OFPBCT_COMMIT_REQUEST, OFPBCT_DISCARD_REQUEST = 4, 6
OFP13, OFP14 = 0x04, 0x05
OFPET_BUNDLE_FAILED, OFPBFC_OUT_OF_BUNDLES, OFPBFC_MSG_UNSUP = 17, 5, 10
BUNDLE_TYPES = frozenset({OFPT_EXPERIMENTER, OFPT14_BUNDLE_CONTROL, OFPT14_BUNDLE_ADD_MESSAGE})

_HDR = struct.Struct("!BBHI")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle message: which form, its bundle id and where its body starts."""

    add: bool  # False: a control message
    body_at: int  # 8 (1.4+) or 16 (the ONF extension of 1.3)
    bundle_id: int
    control_type: int = -1  # control messages only

    def inner(self, raw: bytes) -> bytes:
        """The message an add carries."""
        at = self.body_at + 8
        (length,) = _U16.unpack_from(raw, at + 2)
        return raw[at:at + length]

    def with_bundle_id(self, raw: bytes, bundle_id: int) -> bytes:
        out = bytearray(raw)
        _U32.pack_into(out, self.body_at, bundle_id)
        return bytes(out)

    def rewrap(self, raw: bytes, bundle_id: int, inner: bytes, xid: int) -> bytes:
        """An add like `raw`, for `bundle_id`, carrying `inner` (whose xid must be the add's:
        OVS checks that), with `raw`'s flags and properties."""
        at = self.body_at + 8
        (old_length,) = _U16.unpack_from(raw, at + 2)
        properties = raw[at + (old_length + 7) // 8 * 8:]
        head = bytearray(raw[:at])
        _U32.pack_into(head, 4, xid)
        _U32.pack_into(head, self.body_at, bundle_id)
        inner = inner[:4] + _U32.pack(xid) + inner[8:]
        body = inner + (bytes(-len(inner) % 8) if properties else b"")
        out = head + body + properties
        _U16.pack_into(out, 2, len(out))
        return bytes(out)


def discard(version: int, bundle_id: int, xid: int) -> bytes:
    """A DISCARD_REQUEST for `bundle_id`, in the form of `version`."""
    body = struct.pack("!IHH", bundle_id, OFPBCT_DISCARD_REQUEST, 0)
    if version >= OFP14:
        return _HDR.pack(version, OFPT14_BUNDLE_CONTROL, 8 + len(body), xid) + body
    head = struct.pack("!II", ONF_EXPERIMENTER, ONF_ET_BUNDLE_CONTROL)
    return _HDR.pack(version, OFPT_EXPERIMENTER, 16 + len(body), xid) + head + body


def parse(raw: bytes) -> Bundle | None:
    """The bundle a message is, or None if it is not a bundle message. Raises
    RemoteProtocolError for a bundle message that does not hold together."""
    version, msg_type = raw[0], raw[1]
    if msg_type == OFPT_EXPERIMENTER and version == OFP13 and len(raw) >= 16:
        experimenter, exp_type = struct.unpack_from("!II", raw, 8)
        if experimenter != ONF_EXPERIMENTER or exp_type not in (ONF_ET_BUNDLE_CONTROL,
                                                                 ONF_ET_BUNDLE_ADD_MESSAGE):
            return None
        add, body_at = exp_type == ONF_ET_BUNDLE_ADD_MESSAGE, 16
    elif msg_type in (OFPT14_BUNDLE_CONTROL, OFPT14_BUNDLE_ADD_MESSAGE) and version >= OFP14:
        add, body_at = msg_type == OFPT14_BUNDLE_ADD_MESSAGE, 8
    else:
        return None
    if len(raw) < body_at + 8:
        raise RemoteProtocolError("bundle message too short")
    (bundle_id,) = _U32.unpack_from(raw, body_at)
    if not add:
        return Bundle(False, body_at, bundle_id, _U16.unpack_from(raw, body_at + 4)[0])
    at = body_at + 8
    if len(raw) < at + 8:
        raise RemoteProtocolError("bundle add without a message")
    inner_version, _, inner_length, _ = _HDR.unpack_from(raw, at)
    if inner_version != version or inner_length < 8 or at + inner_length > len(raw):
        raise RemoteProtocolError("the message in a bundle add does not fit it")
    return Bundle(True, body_at, bundle_id)
