"""Bundle messages read and rewritten (ovs_sriov_proxy/openflow/bundles.py), checked against
os-ken's encoders of both forms: ONF's extension for 1.3 and the standard 1.4 messages."""

from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as o13
from os_ken.ofproto import ofproto_v1_3_parser as p13
from os_ken.ofproto import ofproto_v1_4 as o14
from os_ken.ofproto import ofproto_v1_4_parser as p14

from ovs_sriov_proxy.openflow import bundles
from ovs_sriov_proxy.openflow.framing import RemoteProtocolError

DP13 = ofproto_protocol.ProtocolDesc(0x04)
DP14 = ofproto_protocol.ProtocolDesc(0x05)


def raw(msg, xid: int = 6) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def flow_mod(dp, parser, priority: int = 5) -> object:
    return parser.OFPFlowMod(dp, priority=priority, match=parser.OFPMatch(in_port=1),
                             instructions=[])


@pytest.mark.parametrize("dp, parser, ofp, control_cls, add_cls", [
    (DP13, p13, o13, "ONFBundleCtrlMsg", "ONFBundleAddMsg"),
    (DP14, p14, o14, "OFPBundleCtrlMsg", "OFPBundleAddMsg"),
])
def test_both_forms_are_read_and_their_ids_and_messages_rewritten(dp, parser, ofp, control_cls,
                                                                   add_cls) -> None:
    prefix = "ONF_BCT_" if dp is DP13 else "OFPBCT_"
    commit = raw(getattr(parser, control_cls)(dp, 7, getattr(ofp, prefix + "COMMIT_REQUEST"),
                                              0, []))
    bundle = bundles.parse(commit)
    assert bundle is not None and not bundle.add
    assert (bundle.bundle_id, bundle.control_type) == (7, bundles.OFPBCT_COMMIT_REQUEST)
    assert bundles.parse(bundle.with_bundle_id(commit, 99)).bundle_id == 99

    inner = flow_mod(dp, parser)
    add = raw(getattr(parser, add_cls)(dp, 7, 0, inner, []))
    bundle = bundles.parse(add)
    assert bundle is not None and bundle.add and bundle.bundle_id == 7
    carried = bundle.inner(add)
    assert carried == raw(flow_mod(dp, parser), xid=6)  # os-ken gives it the add's xid
    replacement = raw(flow_mod(dp, parser, priority=900), xid=1)
    rewrapped = bundle.rewrap(add, 12, replacement, xid=0x55)
    again = bundles.parse(rewrapped)
    assert again is not None and again.bundle_id == 12
    assert struct.unpack_from("!HI", rewrapped, 2) == (len(rewrapped), 0x55)
    moved = again.inner(rewrapped)
    assert moved[8:] == replacement[8:] and struct.unpack_from("!I", moved, 4)[0] == 0x55


def test_discard_builds_what_os_ken_builds() -> None:
    expected13 = raw(p13.ONFBundleCtrlMsg(DP13, 3, o13.ONF_BCT_DISCARD_REQUEST, 0, []), xid=9)
    assert bundles.discard(0x04, 3, 9) == expected13
    expected14 = raw(p14.OFPBundleCtrlMsg(DP14, 3, o14.OFPBCT_DISCARD_REQUEST, 0, []), xid=9)
    assert bundles.discard(0x05, 3, 9) == expected14


def test_other_messages_are_not_bundles_and_broken_bundles_are_refused() -> None:
    assert bundles.parse(raw(flow_mod(DP13, p13))) is None
    nicira = struct.pack("!BBHIII", 4, 4, 16, 1, 0x2320, 29)
    assert bundles.parse(nicira) is None
    add = bytearray(raw(p13.ONFBundleAddMsg(DP13, 7, 0, flow_mod(DP13, p13), [])))
    struct.pack_into("!H", add, 24 + 2, 4000)  # the carried message claims more than there is
    with pytest.raises(RemoteProtocolError):
        bundles.parse(bytes(add))
    with pytest.raises(RemoteProtocolError):
        bundles.parse(bytes(add[:20]))
