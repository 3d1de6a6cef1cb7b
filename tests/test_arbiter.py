"""Primacy between upstream controllers, with the clock injected."""

from __future__ import annotations

import datetime

import pytest

from ovs_sriov_proxy.arbiter import Arbiter, Policy
from ovs_sriov_proxy.config import parse_config
from ovs_sriov_proxy.rules.fields import pack
from ovs_sriov_proxy.rules.flowparse import parse_match

NOON = datetime.time(12, 0)
NIGHT = datetime.time(2, 30)
SIP = pack({"eth_type": 0x0800, "ip_proto": 17, "udp_dst": 5060})
WEB = pack({"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": 443})


def config_arbiter() -> Arbiter:
    config = parse_config('''
[[controllers]]
name = "default"
target = "tcp:127.0.0.1:6633"
priority = 10

[[controllers]]
name = "voip"
target = "tcp:127.0.0.1:6634"
priority = 50
[controllers.primacy]
scope = "udp,tp_dst=5060"
hours = ["22:00-06:00"]

[[controllers]]
name = "busy"
target = "tcp:127.0.0.1:6635"
priority = 90
[controllers.primacy]
max_packet_in_rate = 2
''')
    return Arbiter.from_config(config.controllers)


def test_scope_decides_who_hears_a_miss() -> None:
    arbiter = config_arbiter()
    assert arbiter.eligible(SIP) == ["busy", "voip", "default"]
    assert arbiter.eligible(WEB) == ["busy", "default"]
    assert arbiter.eligible(SIP, available=["default", "voip"]) == ["voip", "default"]


def test_priority_wins_while_everyone_has_primacy() -> None:
    arbiter = config_arbiter()
    assert arbiter.winner(["default", "voip"], now=0, local_time=NIGHT) == "voip"
    assert arbiter.winner(["default", "busy", "voip"], now=0, local_time=NIGHT) == "busy"


def test_outside_its_hours_a_controller_yields_to_lower_priority() -> None:
    arbiter = config_arbiter()
    assert arbiter.winner(["default", "voip"], now=0, local_time=NOON) == "default"
    # A window that wraps midnight: 22:00-06:00 includes 23:59 and 05:59, not 06:00.
    for moment, expected in ((datetime.time(23, 59), "voip"), (datetime.time(5, 59), "voip"),
                             (datetime.time(6, 0), "default")):
        assert arbiter.winner(["default", "voip"], now=0, local_time=moment) == expected


def test_above_its_packet_in_rate_a_controller_yields_until_it_calms_down() -> None:
    arbiter = config_arbiter()
    for t in (0.1, 0.2, 0.3):
        arbiter.record_packet_in("busy", now=t)
    assert arbiter.packet_in_rate("busy", now=0.5) == 3
    assert arbiter.winner(["busy", "default"], now=0.5, local_time=NOON) == "default"
    assert arbiter.winner(["busy", "default"], now=1.25, local_time=NOON) == "busy"  # two left


def test_equal_priority_is_broken_by_config_order_whatever_the_answer_order() -> None:
    arbiter = Arbiter([Policy("a", 5, 0), Policy("b", 5, 1), Policy("c", 5, 2)])
    for answered in (["a", "b", "c"], ["c", "b", "a"], ["b", "c"]):
        assert arbiter.winner(answered, now=0, local_time=NOON) == sorted(answered)[0]


def test_no_answer_no_winner_and_unknown_names_ignored() -> None:
    arbiter = Arbiter([Policy("a", 1, 0, scope=parse_match("udp"))])
    assert arbiter.winner([], now=0, local_time=NOON) is None
    assert arbiter.winner(["stranger"], now=0, local_time=NOON) is None
    assert arbiter.eligible(WEB) == []


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError):
        Arbiter([Policy("a", 1, 0), Policy("a", 2, 1)])
