"""Lists os-ken would walk forever are refused before it sees them (openflow/wellformed.py)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as o10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as o13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.openflow import codec, wellformed
from ovs_sriov_proxy.openflow.framing import OFP10, OFP13, Message, RemoteProtocolError
from ovs_sriov_proxy.openflow.translate import translate

DP13 = ofproto_protocol.ProtocolDesc(OFP13)
DP10 = ofproto_protocol.ProtocolDesc(OFP10)
# The FLOW_MOD the translation fuzzing found: after its match comes an instruction of type
# 0xed, which os-ken's parser skips without moving on, forever.
HANGS_OS_KEN = bytes.fromhex(
    "040e005200001234000000000000000000370000000000000000000000007200ffffffff00000000000000"
    "00000000000001000c80000004000000010000000000ed0018000000000000001000000002ffe5")


def build(msg: Any) -> bytearray:
    msg.set_xid(7)
    msg.serialize()
    return bytearray(msg.buf)


def flow_mod13() -> bytearray:
    return build(p13.OFPFlowMod(DP13, match=p13.OFPMatch(in_port=1), instructions=[
        p13.OFPInstructionActions(o13.OFPIT_APPLY_ACTIONS, [p13.OFPActionOutput(2)])]))


def finishes(call: Callable[[], Any], seconds: float = 5.0) -> BaseException | None:
    """Run `call` in a thread; fail the test if it has not returned within `seconds`."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    return outcome[0]


def test_the_flow_mod_that_hung_os_ken_is_refused_at_once() -> None:
    assert isinstance(finishes(lambda: translate(HANGS_OS_KEN, OFP10)), RemoteProtocolError)
    with pytest.raises(RemoteProtocolError, match="unknown instruction type 237"):
        wellformed.check_flow_mod(OFP13, HANGS_OS_KEN)


@pytest.mark.parametrize("offset, value, problem", [
    (66, 0, "an instruction of length 0"),       # the apply-actions instruction's length
    (66, 12, "an instruction of length 12"),     # not a multiple of 8
    (66, 64, "an instruction of length 64"),     # past the end
    (74, 0, "an action of length 0"),            # the output action's length
    (50, 0, "match of type 1 and length 0"),     # the match's length
    (50, 400, "match of length 400"),
])
def test_broken_lengths_in_a_1_3_flow_mod(offset: int, value: int, problem: str) -> None:
    raw = flow_mod13()
    wellformed.check_flow_mod(OFP13, bytes(raw))  # the intact message passes
    struct.pack_into("!H", raw, offset, value)
    with pytest.raises(RemoteProtocolError, match=problem):
        wellformed.check_flow_mod(OFP13, bytes(raw))
    assert isinstance(finishes(lambda: translate(bytes(raw), OFP10)), RemoteProtocolError)


def test_a_1_0_flow_mod_with_an_action_of_length_0() -> None:
    raw = build(p10.OFPFlowMod(DP10, p10.OFPMatch(), 0, o10.OFPFC_ADD, 0, 0, 1, 0xFFFFFFFF,
                               o10.OFPP_NONE, 0, [p10.OFPActionOutput(2)]))
    wellformed.check_flow_mod(OFP10, bytes(raw))
    struct.pack_into("!H", raw, 72 + 2, 0)
    with pytest.raises(RemoteProtocolError, match="an action of length 0"):
        wellformed.check_flow_mod(OFP10, bytes(raw))


def test_a_flow_statistics_reply_with_an_entry_of_length_0_is_refused_by_the_decoder() -> None:
    entry = bytearray(struct.pack("!HBxIIHHHH4xQQQ", 0, 0, 1, 2, 100, 0, 0, 0, 0, 0, 0))
    match = bytearray()
    p13.OFPMatch(in_port=1).serialize(match, 0)
    entry += match
    struct.pack_into("!H", entry, 0, len(entry))
    header = struct.pack("!BBHIHH4x", OFP13, 19, 16 + len(entry), 9, 1, 0)
    good = header + bytes(entry)
    reply = codec.decode(Message(OFP13, 19, 9, good))
    assert reply.body[0].match["in_port"] == 1
    bad = bytearray(good)
    struct.pack_into("!H", bad, 16, 0)
    error = finishes(lambda: codec.decode(Message(OFP13, 19, 9, bytes(bad))))
    assert isinstance(error, RemoteProtocolError) and "length 0" in str(error)


def nx_controller2(userdata_length: int) -> bytes:
    """A Nicira controller2 action with one userdata property of the given length field."""
    return (struct.pack("!HHIH6x", 0xFFFF, 24, 0x2320, 37)
            + struct.pack("!HH", 3, userdata_length) + b"\x01\x02\0\0")


def flow_mod13_with(action: bytes) -> bytes:
    raw = flow_mod13()
    instruction = struct.pack("!HH4x", o13.OFPIT_APPLY_ACTIONS, 8 + len(action)) + action
    raw = raw[:64] + instruction
    struct.pack_into("!H", raw, 2, len(raw))
    return bytes(raw)


def test_nested_lists_of_nicira_actions_are_walked_too() -> None:
    ct = bytearray()
    p13.NXActionCT(flags=1, zone_src="", zone_ofs_nbits=0, recirc_table=255, alg=0, actions=[
        p13.OFPActionSetField(ct_mark=1)]).serialize(ct, 0)
    wellformed.check_flow_mod(OFP13, flow_mod13_with(bytes(ct)))
    struct.pack_into("!H", ct, 24 + 2, 0)  # the set_field inside ct()
    broken = flow_mod13_with(bytes(ct))
    with pytest.raises(RemoteProtocolError, match=r"ct\(\)'s actions: an action of length 0"):
        wellformed.check_flow_mod(OFP13, broken)
    assert isinstance(finishes(lambda: translate(broken, OFP10)), RemoteProtocolError)

    wellformed.check_flow_mod(OFP13, flow_mod13_with(nx_controller2(6)))
    broken = flow_mod13_with(nx_controller2(0))
    with pytest.raises(RemoteProtocolError, match=r"a controller\(\) property of length 0"):
        wellformed.check_flow_mod(OFP13, broken)
    assert isinstance(finishes(lambda: translate(broken, OFP10)), RemoteProtocolError)


def test_only_the_multipart_replies_the_proxy_reads_are_decoded_and_1_4_ports_are_walked() -> None:
    group_desc = struct.pack("!BBHIHH4x", OFP13, 19, 16 + 8, 9, 7, 0) + struct.pack("!HBx4x", 0, 0)
    error = finishes(lambda: codec.decode(Message(OFP13, 19, 9, group_desc)))
    assert isinstance(error, RemoteProtocolError) and "type 7" in str(error)
    port = struct.pack("!IHxx6sxx16sII", 1, 40, b"\0\0\0\0\0\1", b"p1", 0, 0)
    port_desc = struct.pack("!BBHIHH4x", 0x05, 19, 16 + 40, 9, 13, 0) + port
    assert [p.port_no for p in codec.decode(Message(0x05, 19, 9, port_desc)).body] == [1]
    broken = bytearray(port_desc)
    struct.pack_into("!H", broken, 16 + 4, 0)
    error = finishes(lambda: codec.decode(Message(0x05, 19, 9, bytes(broken))))
    assert isinstance(error, RemoteProtocolError) and "length 0" in str(error)


# Found by fuzzing once the lists themselves were checked: os-ken walks actions and
# instructions by the length *it* gives each (fixed for most), so one that claims more bytes
# than its type has lands os-ken inside it, on padding it reads as an element of length 0.
METER_INSTRUCTION_OF_24_BYTES = bytes.fromhex(
    "040e0058000012340000000d0000000000000000000000000000000000008000ffffffff00000000000000"
    "00000000000001000c80000004000000010000000000060018000000000000001000000002ffe5000000000000")


def test_elements_longer_than_their_type_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="an instruction of type 6 is not 24 bytes"):
        wellformed.check_flow_mod(OFP13, METER_INSTRUCTION_OF_24_BYTES)
    assert isinstance(finishes(lambda: translate(METER_INSTRUCTION_OF_24_BYTES, OFP10)),
                      RemoteProtocolError)
    pop_vlan_of_16 = struct.pack("!HH12x", 18, 16)  # os-ken makes it 8: then 8 bytes of zeros
    with pytest.raises(RemoteProtocolError, match="an action of type 18 is not 16 bytes"):
        wellformed.check_flow_mod(OFP13, flow_mod13_with(pop_vlan_of_16))
    packet_out = build(p13.OFPPacketOut(DP13, 0xFFFFFFFF, 1, [p13.OFPActionPopVlan()], b""))
    packet_out = packet_out[:16] + struct.pack("!H", 16) + packet_out[18:24] + pop_vlan_of_16
    struct.pack_into("!H", packet_out, 2, len(packet_out))
    error = finishes(lambda: translate(bytes(packet_out), OFP10))
    assert isinstance(error, RemoteProtocolError) and "not 16 bytes" in str(error)


def bridge_samples() -> list[bytes]:
    from ovs_sriov_proxy.openflow import switch_side as side

    ports = [side.PortDesc(1, "p1", "00:00:00:00:00:01"), side.PortDesc(2, "p2", "00:00:00:00:00:02")]
    ct = p13.NXActionCT(flags=1, zone_src="", zone_ofs_nbits=0, recirc_table=255, alg=0,
                        actions=[p13.OFPActionSetField(ct_mark=1)])
    entry = bytearray(struct.pack("!HBxIIHHHH4xQQQ", 0, 0, 1, 2, 100, 0, 0, 0, 9, 3, 300))
    p13.OFPMatch(in_port=1).serialize(entry, len(entry))
    p13.OFPInstructionActions(o13.OFPIT_APPLY_ACTIONS, [p13.OFPActionOutput(2), ct]).serialize(
        entry, len(entry))
    struct.pack_into("!H", entry, 0, len(entry))
    samples = [side.multipart_reply(OFP13, 1, bytes(entry) * 2, 9)]
    for version in (OFP10, OFP13, 0x05, 0x06):
        samples += [side.port_status(version, reason=0, port=ports[0]),
                    side.flow_removed(version, cookie=1, priority=1, reason=0)]
        if version != OFP10:
            samples.append(side.port_desc_reply(version, ports, 5))
    samples.append(side.features_reply(OFP10, datapath_id=1, n_buffers=0, n_tables=1,
                                       capabilities=0, ports=ports, xid=1))
    return samples


# No shrinking: a hang leaves its thread spinning, and every later example would crawl.
@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(sample=st.sampled_from(bridge_samples()), data=st.data())
def test_corrupted_bridge_messages_decode_or_are_refused_and_never_hang(
        sample: bytes, data: st.DataObject) -> None:
    raw = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 3))):
        # Lengths are 16-bit fields: small values there are what makes parsers stall.
        at = data.draw(st.integers(8, len(raw) - 2))
        struct.pack_into("!H", raw, at, data.draw(st.sampled_from([0, 4, 8, 16, 0xFFFF])
                                                  | st.integers(0, 0xFFFF)))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(8, len(raw)))]
    struct.pack_into("!H", raw, 2, len(raw))
    message = Message(raw[0], raw[1], 1, bytes(raw))
    error = finishes(lambda: codec.decode(message))
    assert error is None or isinstance(error, RemoteProtocolError), repr(error)
