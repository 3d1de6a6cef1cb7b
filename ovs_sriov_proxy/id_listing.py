"""Listing a bridge's groups, meters and meter limit before its controllers connect.

With several controllers, group and meter ids are split between them (idspaces.py). The proxy
must know which ids are already on the bridge (a restarted proxy finds its controllers' groups
there) before any controller's first delete-all, and the meter slices depend on the bridge's
meter limit. So it asks for GROUP_DESC, METER_CONFIG (1.5: METER_DESC) and METER_FEATURES, and
the northbound connects the controllers once all three are answered (or have failed: a bridge
without meters answers with an error). Sans-IO: requests out, replies in.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .openflow import codec
from .openflow.framing import OFPT13_MULTIPART_REPLY, Message

OFPMP_GROUP_DESC, OFPMP_METER_CONFIG, OFPMP_METER_FEATURES = 7, 10, 11
OFPG_ALL, OFPM_ALL = 0xFFFFFFFC, 0xFFFFFFFF
MULTIPART_MORE = 1

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def listing_requests(version: int) -> dict[int, Any]:
    """The requests that list a bridge's groups, meters and meter limit (os-ken messages), by
    multipart type."""
    parser, dp = codec.parser(version), codec.datapath(version)
    if version >= 0x06:  # 1.5 names one group or OFPG_ALL, and calls meter config "desc"
        group_desc = parser.OFPGroupDescStatsRequest(dp, 0, OFPG_ALL)
        meters = parser.OFPMeterDescStatsRequest(dp, 0, OFPM_ALL)
    else:
        group_desc = parser.OFPGroupDescStatsRequest(dp, 0)
        meters = parser.OFPMeterConfigStatsRequest(dp, 0, OFPM_ALL)
    return {OFPMP_GROUP_DESC: group_desc, OFPMP_METER_CONFIG: meters,
            OFPMP_METER_FEATURES: parser.OFPMeterFeaturesStatsRequest(dp, 0)}


class IdListing:
    """One bridge's listing, under way: `requests()` to send, then `reply`/`error` for each
    answer until they return True (everything answered)."""

    def __init__(self, version: int, next_xid: Callable[[], int]) -> None:
        self.version = version
        self._next_xid = next_xid
        self.pending: dict[int, int] = {}  # request xid -> multipart type
        self.groups: list[int] = []
        self.meters: list[int] = []
        self.max_meter = 0

    def requests(self) -> list[bytes]:
        out = []
        for kind, request in listing_requests(self.version).items():
            xid = self._next_xid()
            self.pending[xid] = kind
            out.append(codec.serialize(request, xid))
        return out

    def expects(self, xid: int) -> bool:
        return xid in self.pending

    def reply(self, message: Message) -> bool:
        """One reply (or part of one); True once everything is answered."""
        kind = self.pending[message.xid]
        raw = message.raw
        if kind == OFPMP_METER_FEATURES:
            if len(raw) >= 20:
                self.max_meter = _U32.unpack_from(raw, 16)[0]
        elif message.type == OFPT13_MULTIPART_REPLY:
            # group desc and meter config entries alike: length u16 at 0, the id u32 at 4
            found = self.groups if kind == OFPMP_GROUP_DESC else self.meters
            at = 16
            while at + 8 <= len(raw):
                (length,) = _U16.unpack_from(raw, at)
                if length < 8 or at + length > len(raw):
                    break  # malformed by the bridge: what was read stands
                found.append(_U32.unpack_from(raw, at + 4)[0])
                at += length
        if message.type != OFPT13_MULTIPART_REPLY or not raw[11] & MULTIPART_MORE:
            del self.pending[message.xid]
        return not self.pending

    def error(self, xid: int) -> bool:
        """The bridge refused one request (e.g. no meters): nothing of that kind to list."""
        self.pending.pop(xid, None)
        return not self.pending
