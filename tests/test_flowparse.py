"""ovs-ofctl flow text to FlowRule and back."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovs_sriov_proxy.rules.fields import FIELDS
from ovs_sriov_proxy.rules.flowparse import (
    FlowSyntaxError,
    format_flow,
    format_match,
    parse_flow,
    parse_match,
)
from ovs_sriov_proxy.rules.model import (
    DEFAULT_PRIORITY,
    OFPP_ALL,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_MAX,
    OFPP_NORMAL,
    FlowRule,
    Match,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    SetQueue,
)


def fields_of(text: str) -> dict[str, tuple[int, int]]:
    return parse_match(text).fields()


def full(name: str) -> int:
    return FIELDS[name].full_mask


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def ip6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


def error_of(text: str) -> FlowSyntaxError:
    with pytest.raises(FlowSyntaxError) as info:
        parse_flow(text)
    return info.value


# ---------------------------------------------------------------------------------------------
# Whole rules


def test_typical_rule() -> None:
    rule = parse_flow("priority=100,in_port=1,udp,tp_dst=5060 actions=output:2", bridge="br-int")
    assert rule.priority == 100
    assert rule.bridge == "br-int"
    assert rule.origin == "config"
    assert rule.text == "priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"
    assert rule.match.fields() == {
        "in_port": (1, full("in_port")),
        "eth_type": (0x0800, 0xFFFF),
        "ip_proto": (17, 0xFF),
        "udp_dst": (5060, 0xFFFF),
    }
    assert rule.actions == (Output(2),)


def test_defaults_and_origin() -> None:
    rule = parse_flow("actions=drop", origin="primary")
    assert rule == FlowRule(Match(), (), DEFAULT_PRIORITY, 0, 0, None, "primary")


def test_timeouts_and_table_zero() -> None:
    rule = parse_flow("table=0,priority=7,idle_timeout=10,hard_timeout=0x20,ip actions=drop")
    assert (rule.priority, rule.idle_timeout, rule.hard_timeout) == (7, 10, 32)


def test_spaces_separate_like_commas() -> None:
    spaced = parse_flow("priority=5 ip nw_src=10.0.0.1, udp actions=normal")
    assert spaced == parse_flow("priority=5,ip,nw_src=10.0.0.1,udp actions=normal")


def test_field_order_does_not_matter() -> None:
    assert fields_of("tp_dst=80,tcp") == fields_of("tcp,tp_dst=80")
    assert fields_of("nw_src=1.2.3.4,arp") == fields_of("arp,arp_spa=1.2.3.4")


# ---------------------------------------------------------------------------------------------
# Match fields


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in_port=7", {"in_port": (7, full("in_port"))}),
        ("in_port=LOCAL", {"in_port": (OFPP_LOCAL, full("in_port"))}),
        ("in_port=0xffffff00", {"in_port": (OFPP_MAX, full("in_port"))}),
        ("dl_src=00:11:22:33:44:55", {"eth_src": (0x001122334455, full("eth_src"))}),
        ("eth_dst=1:2:3:4:5:6", {"eth_dst": (0x010203040506, full("eth_dst"))}),
        (
            "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00",
            {"eth_dst": (0x010000000000, 0x010000000000)},
        ),
        ("dl_type=0x88cc", {"eth_type": (0x88CC, 0xFFFF)}),
        ("eth_type=2048", {"eth_type": (0x0800, 0xFFFF)}),
        ("dl_vlan=100", {"vlan_vid": (0x1064, 0x1FFF)}),
        ("dl_vlan=0xffff", {"vlan_vid": (0, 0x1FFF)}),
        ("dl_vlan=5,dl_vlan_pcp=3", {"vlan_vid": (0x1005, 0x1FFF), "vlan_pcp": (3, 7)}),
        ("dl_vlan_pcp=3", {"vlan_vid": (0x1000, 0x1000), "vlan_pcp": (3, 7)}),
        ("vlan_vid=0x1005/0x1fff", {"vlan_vid": (0x1005, 0x1FFF)}),
        ("ip,ip_dscp=46", {"eth_type": (0x0800, 0xFFFF), "ip_dscp": (46, 0x3F)}),
        ("ip,nw_tos=0xb8", {"eth_type": (0x0800, 0xFFFF), "ip_dscp": (46, 0x3F)}),
        ("ipv6,nw_ecn=3", {"eth_type": (0x86DD, 0xFFFF), "ip_ecn": (3, 3)}),
        ("ip,nw_proto=47", {"eth_type": (0x0800, 0xFFFF), "ip_proto": (47, 0xFF)}),
        ("ip,nw_src=10.1.2.3", {"eth_type": (0x0800, 0xFFFF), "ipv4_src": (ip4("10.1.2.3"), full("ipv4_src"))}),
        (
            "ip,nw_dst=10.1.2.3/16",
            {"eth_type": (0x0800, 0xFFFF), "ipv4_dst": (ip4("10.1.0.0"), 0xFFFF0000)},
        ),
        (
            "ip,nw_dst=10.1.2.3/255.0.255.0",
            {"eth_type": (0x0800, 0xFFFF), "ipv4_dst": (ip4("10.0.2.0"), 0xFF00FF00)},
        ),
        ("ip,ipv4_src=1.2.3.4", {"eth_type": (0x0800, 0xFFFF), "ipv4_src": (ip4("1.2.3.4"), 0xFFFFFFFF)}),
        ("ip,ip_dst=1.2.3.4/0", {"eth_type": (0x0800, 0xFFFF)}),
        ("arp,arp_op=2", {"eth_type": (0x0806, 0xFFFF), "arp_op": (2, 0xFFFF)}),
        ("arp,nw_proto=1", {"eth_type": (0x0806, 0xFFFF), "arp_op": (1, 0xFFFF)}),
        ("arp,nw_dst=10.0.0.0/8", {"eth_type": (0x0806, 0xFFFF), "arp_tpa": (ip4("10.0.0.0"), 0xFF000000)}),
        ("arp,arp_spa=10.0.0.1", {"eth_type": (0x0806, 0xFFFF), "arp_spa": (ip4("10.0.0.1"), 0xFFFFFFFF)}),
        (
            "arp,arp_sha=00:00:00:00:00:01,arp_tha=ff:ff:ff:ff:ff:ff",
            {
                "eth_type": (0x0806, 0xFFFF),
                "arp_sha": (1, full("arp_sha")),
                "arp_tha": (full("arp_tha"), full("arp_tha")),
            },
        ),
        (
            "ipv6,ipv6_src=2001:db8::1/32",
            {"eth_type": (0x86DD, 0xFFFF), "ipv6_src": (ip6("2001:db8::"), ((1 << 32) - 1) << 96)},
        ),
        (
            "ipv6,ipv6_dst=::1/::ffff",
            {"eth_type": (0x86DD, 0xFFFF), "ipv6_dst": (1, 0xFFFF)},
        ),
        ("ipv6,ipv6_label=0x12345", {"eth_type": (0x86DD, 0xFFFF), "ipv6_flabel": (0x12345, 0xFFFFF)}),
        ("ipv6,ipv6_flabel=0x5/0xf", {"eth_type": (0x86DD, 0xFFFF), "ipv6_flabel": (5, 0xF)}),
        ("tcp,tp_src=80", {"eth_type": (0x0800, 0xFFFF), "ip_proto": (6, 0xFF), "tcp_src": (80, 0xFFFF)}),
        ("udp6,tp_dst=53", {"eth_type": (0x86DD, 0xFFFF), "ip_proto": (17, 0xFF), "udp_dst": (53, 0xFFFF)}),
        (
            "sctp,tp_dst=0x1000/0xf000",
            {"eth_type": (0x0800, 0xFFFF), "ip_proto": (132, 0xFF), "sctp_dst": (0x1000, 0xF000)},
        ),
        ("sctp6", {"eth_type": (0x86DD, 0xFFFF), "ip_proto": (132, 0xFF)}),
        ("tcp6,tcp_dst=22", {"eth_type": (0x86DD, 0xFFFF), "ip_proto": (6, 0xFF), "tcp_dst": (22, 0xFFFF)}),
        ("udp,udp_src=68", {"eth_type": (0x0800, 0xFFFF), "ip_proto": (17, 0xFF), "udp_src": (68, 0xFFFF)}),
        (
            "icmp,icmp_type=8,icmp_code=0",
            {"eth_type": (0x0800, 0xFFFF), "ip_proto": (1, 0xFF), "icmpv4_type": (8, 0xFF), "icmpv4_code": (0, 0xFF)},
        ),
        (
            "icmp6,icmp_type=135",
            {"eth_type": (0x86DD, 0xFFFF), "ip_proto": (58, 0xFF), "icmpv6_type": (135, 0xFF)},
        ),
        ("ip,dl_type=0x0800", {"eth_type": (0x0800, 0xFFFF)}),  # same value twice is fine
    ],
)
def test_match_fields(text: str, expected: dict[str, tuple[int, int]]) -> None:
    assert fields_of(text) == expected


@pytest.mark.parametrize(
    ("text", "vlan_vid", "vlan_pcp"),
    [
        ("vlan_tci=0", (0, 0x1FFF), None),  # no tag
        ("vlan_tci=0x0000/0x1000", (0, 0x1000), None),
        ("vlan_tci=0x1000/0x1000", (0x1000, 0x1000), None),  # any tag
        ("vlan_tci=0x1005/0x1fff", (0x1005, 0x1FFF), None),
        ("vlan_tci=0x7005", (0x1005, 0x1FFF), (3, 7)),
        ("vlan_tci=0x6000/0xe000", (0x1000, 0x1000), (3, 7)),  # PCP implies a tag
        ("vlan_tci=0x0005/0x0fff", (5, 0xFFF), None),
    ],
)
def test_vlan_tci_semantics(
    text: str, vlan_vid: tuple[int, int], vlan_pcp: tuple[int, int] | None
) -> None:
    fields = fields_of(text)
    assert fields.get("vlan_vid") == vlan_vid
    assert fields.get("vlan_pcp") == vlan_pcp


def test_values_masked_on_store() -> None:
    match = parse_match("dl_src=ff:ff:ff:ff:ff:ff/ff:00:00:00:00:00")
    assert match.fields() == {"eth_src": (0xFF0000000000, 0xFF0000000000)}
    assert match.value & ~match.mask == 0


def test_parse_match_is_the_match_of_parse_flow() -> None:
    text = "in_port=3,tcp,nw_dst=10.0.0.0/8,tp_dst=443"
    assert parse_match(text) == parse_flow(f"priority=9,{text} actions=drop").match


def test_empty_match() -> None:
    assert parse_match("") == Match()


# ---------------------------------------------------------------------------------------------
# Actions


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ("output:2", (Output(2),)),
        ("output:0xffffff00", (Output(OFPP_MAX),)),
        ("2,3", (Output(2), Output(3))),
        ("output:in_port", (Output(OFPP_IN_PORT),)),
        ("output:NORMAL", (Output(OFPP_NORMAL),)),
        ("output:flood,output:all", (Output(OFPP_FLOOD), Output(OFPP_ALL))),
        ("output:local,output:controller", (Output(OFPP_LOCAL), Output(OFPP_CONTROLLER))),
        ("normal", (Output(OFPP_NORMAL),)),
        ("FLOOD", (Output(OFPP_FLOOD),)),
        ("all", (Output(OFPP_ALL),)),
        ("LOCAL", (Output(OFPP_LOCAL),)),
        ("in_port", (Output(OFPP_IN_PORT),)),
        ("controller", (Output(OFPP_CONTROLLER, 0xFFFF),)),
        ("controller:128", (Output(OFPP_CONTROLLER, 128),)),
        ("controller(max_len=64)", (Output(OFPP_CONTROLLER, 64),)),
        ("drop", ()),
        ("", ()),
        ("mod_vlan_vid:100", (SetField("vlan_vid", 0x1064),)),
        ("set_vlan_vid:0", (SetField("vlan_vid", 0x1000),)),
        ("mod_vlan_pcp:5", (SetField("vlan_pcp", 5),)),
        ("strip_vlan", (PopVlan(),)),
        ("pop_vlan", (PopVlan(),)),
        ("push_vlan:0x8100", (PushVlan(0x8100),)),
        ("push_vlan:0x88a8", (PushVlan(0x88A8),)),
        ("set_queue:7", (SetQueue(7),)),
        ("mod_dl_src:00:11:22:33:44:55", (SetField("eth_src", 0x001122334455),)),
        ("mod_dl_dst:aa:bb:cc:dd:ee:ff", (SetField("eth_dst", 0xAABBCCDDEEFF),)),
        ("set_field:00:00:00:00:00:02->dl_dst", (SetField("eth_dst", 2),)),
        ("set_field:0x1005->vlan_vid", (SetField("vlan_vid", 0x1005),)),
        ("set_field:5->vlan_vid", (SetField("vlan_vid", 0x1005),)),
        ("set_field:3->vlan_pcp", (SetField("vlan_pcp", 3),)),
    ],
)
def test_actions_without_prerequisites(actions: str, expected: tuple[object, ...]) -> None:
    assert parse_flow(f"in_port=1 actions={actions}").actions == expected


@pytest.mark.parametrize(
    ("match", "actions", "expected"),
    [
        ("ip", "mod_nw_src:10.0.0.1", SetField("ipv4_src", ip4("10.0.0.1"))),
        ("ip", "mod_nw_dst:10.0.0.2", SetField("ipv4_dst", ip4("10.0.0.2"))),
        ("ip", "mod_nw_tos:0xb8", SetField("ip_dscp", 46)),
        ("ipv6", "mod_nw_tos:4", SetField("ip_dscp", 1)),
        ("ip", "mod_nw_ecn:2", SetField("ip_ecn", 2)),
        ("tcp", "mod_tp_src:1234", SetField("tcp_src", 1234)),
        ("udp", "mod_tp_dst:53", SetField("udp_dst", 53)),
        ("sctp6", "mod_tp_dst:9", SetField("sctp_dst", 9)),
        ("ip", "set_field:1.2.3.4->nw_dst", SetField("ipv4_dst", ip4("1.2.3.4"))),
        ("ip", "set_field:1.2.3.4->ipv4_src", SetField("ipv4_src", ip4("1.2.3.4"))),
        ("ip", "set_field:0xb8->nw_tos", SetField("ip_dscp", 46)),
        ("ip", "set_field:10->ip_dscp", SetField("ip_dscp", 10)),
        ("udp", "set_field:99->tp_src", SetField("udp_src", 99)),
        ("tcp", "set_field:99->tcp_dst", SetField("tcp_dst", 99)),
        ("ipv6", "set_field:2001:db8::7->ipv6_dst", SetField("ipv6_dst", ip6("2001:db8::7"))),
        ("ipv6", "set_field:0x54321->ipv6_label", SetField("ipv6_flabel", 0x54321)),
        ("icmp", "set_field:3->icmp_type", SetField("icmpv4_type", 3)),
        ("icmp6", "set_field:1->icmp_code", SetField("icmpv6_code", 1)),
        ("arp", "set_field:10.0.0.9->arp_spa", SetField("arp_spa", ip4("10.0.0.9"))),
        ("arp", "set_field:2->arp_op", SetField("arp_op", 2)),
        ("arp", "set_field:00:00:00:00:00:09->arp_tha", SetField("arp_tha", 9)),
    ],
)
def test_set_field_actions(match: str, actions: str, expected: SetField) -> None:
    assert parse_flow(f"{match} actions={actions}").actions == (expected,)


def test_action_list_keeps_order() -> None:
    rule = parse_flow(
        "dl_vlan=10 actions=strip_vlan,push_vlan:0x8100,mod_vlan_vid:20,set_queue:1,output:3,CONTROLLER:64"
    )
    assert rule.actions == (
        PopVlan(),
        PushVlan(0x8100),
        SetField("vlan_vid", 0x1014),
        SetQueue(1),
        Output(3),
        Output(OFPP_CONTROLLER, 64),
    )


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("in_port=1", "no actions=", None),
        ("in_port=1 actions=outptu:2", "unknown action 'outptu' (did you mean 'output'?)", 19),
        ("in_port=1 actions=output:2,flod", "unknown action 'flod'", 28),
        ("in_port=1 actions=resubmit(,2)", "unsupported action 'resubmit'", 19),
        ("in_port=1,foo=3 actions=drop", "unknown field 'foo'", 11),
        ("in_prot=1 actions=drop", "unknown field 'in_prot' (did you mean 'in_port'?)", 1),
        ("ct_state=+trk actions=drop", "unsupported field 'ct_state'", 1),
        ("tp_dst=80 actions=drop", "tp_dst needs tcp, udp or sctp", 1),
        ("icmp,tp_dst=80 actions=drop", "tp_dst needs tcp, udp or sctp in the match, but the match has ip_proto=1", 6),
        ("udp_dst=80 actions=drop", "udp_dst requires eth_type 0x0800 or 0x86dd (add 'ip' or 'ipv6')", 1),
        ("ip,udp_dst=80 actions=drop", "udp_dst requires ip_proto 17 (add 'udp' or 'udp6')", 4),
        ("nw_src=1.2.3.4 actions=drop", "nw_src requires eth_type 0x0800 (add 'ip')", 1),
        ("ipv6,nw_src=1.2.3.4 actions=drop", "nw_src requires eth_type 0x0800", 6),
        ("ip,ipv6_src=::1 actions=drop", "ipv6_src requires eth_type 0x86dd (add 'ipv6')", 4),
        ("icmp_type=3 actions=drop", "icmp_type requires eth_type 0x0800", 1),
        ("ip,icmp_type=3 actions=drop", "icmp_type requires ip_proto 1 (add 'icmp')", 4),
        ("arp_op=1 actions=drop", "arp_op requires eth_type 0x0806 (add 'arp')", 1),
        ("nw_proto=6 actions=drop", "nw_proto requires eth_type", 1),
        ("nw_tos=4 actions=drop", "nw_tos requires eth_type", 1),
        ("dl_vlan=0xffff,dl_vlan_pcp=1 actions=drop", "dl_vlan_pcp requires a VLAN tag", 16),
        ("ip,dl_type=0x86dd actions=drop", "dl_type conflicts with ip (column 1) on eth_type", 4),
        ("tcp,udp actions=drop", "udp conflicts with tcp (column 1) on ip_proto", 5),
        ("dl_src=zz actions=drop", "dl_src: 'zz' is not a MAC address", 8),
        ("dl_src=00:11:22:33:44 actions=drop", "not a MAC address", 8),
        ("ip,nw_src=1.2.3.300 actions=drop", "nw_src: '1.2.3.300' is not an IPv4 address", 11),
        ("ip,nw_src=1.2.3.4/33 actions=drop", "prefix /33 is longer than 32", 19),
        ("ipv6,ipv6_src=1.2.3.4 actions=drop", "is not an IPv6 address", 15),
        ("in_port=0 actions=drop", "in_port: port 0 is out of range 1..4294967040", 9),
        ("in_port=0xffffff01 actions=drop", "out of range 1..4294967040", 9),
        ("in_port=eth0 actions=drop", "in_port: invalid port 'eth0'", 9),
        ("dl_type=0x10000 actions=drop", "dl_type: 0x10000 is out of range 0..65535", 9),
        ("dl_type=0x800/0xff00 actions=drop", "dl_type does not take a mask", 9),
        ("tcp,tp_dst=1_000 actions=drop", "tp_dst: '1_000' is not an integer", 12),
        ("tcp,tp_dst=70000 actions=drop", "out of range 0..65535", 12),
        ("dl_vlan=4096 actions=drop", "dl_vlan: 4096 is not a VLAN ID", 9),
        ("dl_vlan_pcp=8 actions=drop", "out of range 0..7", 13),
        ("vlan_tci=0x0005 actions=drop", "can never match", 10),
        ("vlan_tci=0x1000/0x3000 actions=drop", "PCP bits (0xe000) must be masked all or none", 1),
        ("ip=1 actions=drop", "ip takes no value", 1),
        ("in_port= actions=drop", "in_port needs a value", 1),
        ("in_port(1) actions=drop", "in_port takes in_port=VALUE", 1),
        ("priority=65536 actions=drop", "priority: 65536 is out of range 0..65535", 10),
        ("idle_timeout=-1 actions=drop", "idle_timeout: '-1' is not an integer", 14),
        ("hard_timeout=70000 actions=drop", "hard_timeout: 70000 is out of range", 14),
        ("table=1 actions=drop", "table: the proxy only answers from table 0", 1),
        ("cookie=0x1 actions=drop", "cookie: the proxy assigns cookies", 1),
        ("in_port=1 actions=drop,output:2", "drop must be the only action", 19),
        ("in_port=1 actions=output:0", "output: port 0 is out of range", 26),
        ("in_port=1 actions=output:table", "output: invalid port 'table'", 26),
        ("in_port=1 actions=output", "output needs an argument", 19),
        ("in_port=1 actions=output(port=2,max_len=5)", "output takes output:VALUE", 19),
        ("in_port=1 actions=controller:70000", "controller max_len: 70000 is out of range", 30),
        ("in_port=1 actions=controller(reason=no_match)", "only controller(max_len=N) is supported", 30),
        ("in_port=1 actions=controller(max_len=1", "unbalanced parentheses", 29),
        ("in_port=1 actions=normal:1", "normal takes no argument", 19),
        ("in_port=1 actions=mod_vlan_vid:4096", "mod_vlan_vid: 4096 is out of range 0..4095", 32),
        ("in_port=1 actions=mod_vlan_pcp:8", "out of range 0..7", 32),
        ("in_port=1 actions=push_vlan:0x0800", "push_vlan: ethertype 0x0800 is not 0x8100 or 0x88a8", 29),
        ("in_port=1 actions=set_queue:x", "set_queue: 'x' is not an integer", 29),
        ("in_port=1 actions=mod_dl_src:zz", "mod_dl_src: 'zz' is not a MAC address", 30),
        ("in_port=1 actions=mod_nw_src:1.2.3.4", "mod_nw_src requires eth_type 0x0800 (add 'ip') in the match", 19),
        ("ip actions=mod_nw_tos:3", "not a multiple of 4", 23),
        ("in_port=1 actions=mod_tp_dst:80", "mod_tp_dst needs tcp, udp or sctp in the match", 19),
        ("ip actions=mod_tp_src:80", "but the match pins no transport protocol", 12),
        ("in_port=1 actions=set_field:1", "set_field takes set_field:VALUE->FIELD", 19),
        ("in_port=1 actions=set_field:1->bogus", "set_field: unknown field 'bogus'", 32),
        ("in_port=1 actions=set_field:1->nw_ttl", "set_field: unsupported field 'nw_ttl'", 32),
        ("in_port=1 actions=set_field:0x800->eth_type", "eth_type cannot be written", 19),
        ("in_port=1 actions=set_field:2->in_port", "in_port cannot be written", 19),
        ("ip actions=set_field:1.2.3.4/8->nw_src", "masked set_field is not supported", 22),
        ("in_port=1 actions=set_field:1.2.3.4->ip_src", "set_field to ipv4_src requires eth_type 0x0800", 19),
        ("ip actions=set_field:80->tcp_dst", "set_field to tcp_dst requires ip_proto 6", 12),
        ("ip actions=set_field:80->tp_dst", "set_field to tp_dst needs tcp, udp or sctp", 12),
        ("ip actions=set_field:6->nw_proto", "ip_proto cannot be written", 12),
        ("ip actions=set_field:1->ip_dscp,set_field:x->ip_dscp", "set_field to ip_dscp: 'x' is not an integer", 43),
    ],
)
def test_errors_name_the_problem_and_column(text: str, message: str, column: int | None) -> None:
    error = error_of(text)
    assert message in error.problem
    assert error.column == column
    assert str(error).startswith(error.problem)
    if column is not None:
        assert str(error).endswith(f"at column {column}")


def test_errors_are_value_errors() -> None:
    assert issubclass(FlowSyntaxError, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ip actions=drop", "a match takes no actions"),
        ("priority=5,ip", "priority is not a match field"),
        ("ip,idle_timeout=5", "idle_timeout is not a match field"),
        ("tcp,tp_dst=x", "tp_dst: 'x' is not an integer"),
        ("sctp,bogus", "unknown field 'bogus'"),
    ],
)
def test_parse_match_errors(text: str, message: str) -> None:
    with pytest.raises(FlowSyntaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_match(text)


# ---------------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize(
    ("text", "formatted"),
    [
        ("priority=100,in_port=1,udp,tp_dst=5060 actions=output:2",
         "priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"),
        ("ip,nw_src=10.0.0.0/8 actions=drop", "priority=32768,ip,nw_src=10.0.0.0/8 actions=drop"),
        ("ip,nw_src=10.0.0.0/255.0.255.0 actions=NORMAL",
         "priority=32768,ip,nw_src=10.0.0.0/255.0.255.0 actions=NORMAL"),
        ("dl_vlan=5,dl_vlan_pcp=2 actions=strip_vlan,LOCAL",
         "priority=32768,dl_vlan=5,dl_vlan_pcp=2 actions=pop_vlan,LOCAL"),
        ("dl_vlan=0xffff actions=push_vlan:0x8100,mod_vlan_vid:7,IN_PORT",
         "priority=32768,vlan_tci=0x0000 actions=push_vlan:0x8100,mod_vlan_vid:7,IN_PORT"),
        ("vlan_tci=0x1000/0x1000 actions=controller:100",
         "priority=32768,vlan_tci=0x1000/0x1000 actions=CONTROLLER:100"),
        ("idle_timeout=5,hard_timeout=6,priority=1,in_port=LOCAL actions=controller",
         "priority=1,idle_timeout=5,hard_timeout=6,in_port=LOCAL actions=CONTROLLER"),
        ("dl_type=0x88cc actions=FLOOD,ALL", "priority=32768,dl_type=0x88cc actions=FLOOD,ALL"),
        ("icmp6,icmp_type=135 actions=set_field:2->icmp_code",
         "priority=32768,icmp6,icmp_type=135 actions=set_field:2->icmpv6_code"),
        ("tcp,tp_src=0x50/0xfff0 actions=mod_tp_dst:8080",
         "priority=32768,tcp,tp_src=0x50/0xfff0 actions=set_field:8080->tcp_dst"),
        ("ip,nw_proto=47 actions=mod_nw_tos:8,set_queue:2",
         "priority=32768,ip,nw_proto=47 actions=mod_nw_tos:8,set_queue:2"),
        ("arp,arp_op=1,arp_tpa=10.0.0.1 actions=mod_dl_dst:00:00:00:00:00:01",
         "priority=32768,arp,arp_op=1,arp_tpa=10.0.0.1 actions=mod_dl_dst:00:00:00:00:00:01"),
        ("ipv6,ipv6_dst=2001:db8::/64,ipv6_label=7 actions=drop",
         "priority=32768,ipv6,ipv6_dst=2001:db8::/64,ipv6_label=7 actions=drop"),
    ],
)
def test_format_flow(text: str, formatted: str) -> None:
    rule = parse_flow(text)
    assert format_flow(rule) == formatted
    assert parse_flow(formatted) == rule


def test_format_match() -> None:
    match = parse_match("udp,in_port=2,dl_src=00:00:00:00:00:0a,tp_dst=53")
    assert format_match(match) == "in_port=2,udp,dl_src=00:00:00:00:00:0a,tp_dst=53"
    assert format_match(Match()) == ""


# ---------------------------------------------------------------------------------------------
# Round trip, by property

_PROTOCOLS = [
    (None, None),
    (0x0800, None),
    (0x86DD, None),
    (0x0806, None),
    (0x88CC, None),
    (0x0800, 6),
    (0x0800, 17),
    (0x0800, 132),
    (0x0800, 1),
    (0x0800, 47),
    (0x86DD, 6),
    (0x86DD, 17),
    (0x86DD, 132),
    (0x86DD, 58),
]
_L4 = {6: "tcp", 17: "udp", 132: "sctp"}


def _masked(name: str) -> st.SearchStrategy[tuple[int, int]]:
    bits = FIELDS[name].bits
    return st.tuples(st.integers(0, (1 << bits) - 1), st.integers(1, (1 << bits) - 1))


def _exact(name: str) -> st.SearchStrategy[tuple[int, int]]:
    bits = FIELDS[name].bits
    return st.integers(0, (1 << bits) - 1).map(lambda v: (v, (1 << bits) - 1))


def _prefix(bits: int) -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(
        st.integers(0, (1 << bits) - 1),
        st.integers(1, bits).map(lambda p: ((1 << p) - 1) << (bits - p)),
    )


@st.composite
def rules(draw: st.DrawFn) -> FlowRule:
    fields: dict[str, tuple[int, int]] = {}
    eth_type, ip_proto = draw(st.sampled_from(_PROTOCOLS))
    if eth_type is not None:
        fields["eth_type"] = (eth_type, 0xFFFF)
    if ip_proto is not None:
        fields["ip_proto"] = (ip_proto, 0xFF)
    optional: dict[str, st.SearchStrategy[tuple[int, int]]] = {
        "in_port": st.integers(1, OFPP_MAX).map(lambda p: (p, 0xFFFFFFFF))
        | st.sampled_from([(OFPP_LOCAL, 0xFFFFFFFF), (OFPP_CONTROLLER, 0xFFFFFFFF)]),
        "eth_src": _masked("eth_src"),
        "eth_dst": _exact("eth_dst"),
    }
    if eth_type in (0x0800, 0x86DD):
        optional |= {"ip_dscp": _exact("ip_dscp"), "ip_ecn": _exact("ip_ecn")}
    if eth_type == 0x0800:
        optional |= {"ipv4_src": _masked("ipv4_src"), "ipv4_dst": _prefix(32)}
    if eth_type == 0x86DD:
        optional |= {"ipv6_src": _prefix(128), "ipv6_dst": _masked("ipv6_dst"), "ipv6_flabel": _masked("ipv6_flabel")}
    if eth_type == 0x0806:
        optional |= {name: _masked(name) for name in ("arp_spa", "arp_tpa", "arp_sha", "arp_tha")}
        optional["arp_op"] = _exact("arp_op")
    if ip_proto in _L4:
        optional |= {f"{_L4[ip_proto]}_src": _masked("tcp_src"), f"{_L4[ip_proto]}_dst": _exact("tcp_dst")}
    if ip_proto in (1, 58) and eth_type is not None:
        version = "v4" if ip_proto == 1 else "v6"
        optional |= {f"icmp{version}_type": _exact("icmpv4_type"), f"icmp{version}_code": _exact("icmpv4_code")}
    chosen = draw(st.lists(st.sampled_from(sorted(optional)), unique=True))
    for name in chosen:
        fields[name] = draw(optional[name])
    vlan = draw(st.sampled_from(["none", "untagged", "vid", "vid+pcp", "any", "any+pcp", "masked"]))
    vid = draw(st.integers(0, 0xFFF))
    pcp = draw(st.integers(0, 7))
    if vlan == "untagged":
        fields["vlan_vid"] = (0, 0x1FFF)
    elif vlan.startswith("vid"):
        fields["vlan_vid"] = (0x1000 | vid, 0x1FFF)
    elif vlan.startswith("any"):
        fields["vlan_vid"] = (0x1000, 0x1000)
    elif vlan == "masked":
        fields["vlan_vid"] = (0x1000 | vid, 0x1000 | draw(st.integers(1, 0xFFF)))
    if vlan.endswith("+pcp"):
        fields["vlan_pcp"] = (pcp, 7)

    setters: list[st.SearchStrategy[object]] = [
        st.integers(1, OFPP_MAX).map(Output),
        st.sampled_from([OFPP_IN_PORT, OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_LOCAL]).map(Output),
        st.integers(0, 0xFFFF).map(lambda n: Output(OFPP_CONTROLLER, n)),
        st.integers(0, 0xFFF).map(lambda v: SetField("vlan_vid", 0x1000 | v)),
        st.integers(0, 7).map(lambda v: SetField("vlan_pcp", v)),
        st.sampled_from([PushVlan(0x8100), PushVlan(0x88A8), PopVlan()]),
        st.integers(0, 0xFFFFFFFF).map(SetQueue),
        st.integers(0, (1 << 48) - 1).map(lambda v: SetField("eth_src", v)),
        st.integers(0, (1 << 48) - 1).map(lambda v: SetField("eth_dst", v)),
    ]
    for name, (_value, mask) in list(fields.items()):
        writable = name not in ("in_port", "eth_type", "ip_proto", "vlan_vid", "vlan_pcp")
        if writable and mask:
            bits = FIELDS[name].bits
            setters.append(st.integers(0, (1 << bits) - 1).map(lambda v, n=name: SetField(n, v)))
    actions = draw(st.lists(st.one_of(setters), max_size=6))
    return FlowRule(
        match=Match.from_fields(fields),
        actions=tuple(actions),  # type: ignore[arg-type]
        priority=draw(st.integers(0, 0xFFFF)),
        idle_timeout=draw(st.integers(0, 0xFFFF)),
        hard_timeout=draw(st.integers(0, 0xFFFF)),
        bridge=draw(st.none() | st.sampled_from(["br-int", "br0"])),
        origin=draw(st.sampled_from(["config", "primary"])),
    )


@given(rules())
def test_format_then_parse_round_trips(rule: FlowRule) -> None:
    text = format_flow(rule)
    assert parse_flow(text, bridge=rule.bridge, origin=rule.origin) == rule


@given(rules())
def test_format_match_then_parse_match_round_trips(rule: FlowRule) -> None:
    assert parse_match(format_match(rule.match)) == rule.match
