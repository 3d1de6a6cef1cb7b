"""OVS connection target syntax."""

from __future__ import annotations

import dataclasses

import pytest

from ovs_sriov_proxy.targets import (
    ActiveTarget,
    PassiveTarget,
    TargetError,
    parse_active,
    parse_passive,
)


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("ptcp:6653", PassiveTarget("tcp", "0.0.0.0", 6653), "ptcp:6653:0.0.0.0"),
        ("ptcp:6653:127.0.0.1", PassiveTarget("tcp", "127.0.0.1", 6653), "ptcp:6653:127.0.0.1"),
        ("ptcp:0:127.0.0.1", PassiveTarget("tcp", "127.0.0.1", 0), "ptcp:0:127.0.0.1"),
        ("ptcp:6653:[::1]", PassiveTarget("tcp", "::1", 6653), "ptcp:6653:[::1]"),
        ("ptcp:1:[2001:DB8:0::1]", PassiveTarget("tcp", "2001:db8::1", 1), "ptcp:1:[2001:db8::1]"),
        ("pssl:6653", PassiveTarget("ssl", "0.0.0.0", 6653), "pssl:6653:0.0.0.0"),
        ("pssl:65535:10.0.0.1", PassiveTarget("ssl", "10.0.0.1", 65535), "pssl:65535:10.0.0.1"),
        ("punix:/run/proxy.sock", PassiveTarget("unix", path="/run/proxy.sock"), "punix:/run/proxy.sock"),
        ("punix:rel:with:colons", PassiveTarget("unix", path="rel:with:colons"), "punix:rel:with:colons"),
    ],
)
def test_passive(text: str, expected: PassiveTarget, canonical: str) -> None:
    target = parse_passive(text)
    assert target == expected
    assert str(target) == canonical
    assert parse_passive(str(target)) == target


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("tcp:127.0.0.1", ActiveTarget("tcp", "127.0.0.1", 6653), "tcp:127.0.0.1:6653"),
        ("tcp:127.0.0.1:6633", ActiveTarget("tcp", "127.0.0.1", 6633), "tcp:127.0.0.1:6633"),
        ("tcp:[::1]", ActiveTarget("tcp", "::1", 6653), "tcp:[::1]:6653"),
        ("tcp:[fe80::0001]:1", ActiveTarget("tcp", "fe80::1", 1), "tcp:[fe80::1]:1"),
        ("ssl:192.0.2.1", ActiveTarget("ssl", "192.0.2.1", 6653), "ssl:192.0.2.1:6653"),
        ("ssl:[::1]:6654", ActiveTarget("ssl", "::1", 6654), "ssl:[::1]:6654"),
        ("unix:/var/run/ctl.sock", ActiveTarget("unix", path="/var/run/ctl.sock"), "unix:/var/run/ctl.sock"),
    ],
)
def test_active(text: str, expected: ActiveTarget, canonical: str) -> None:
    target = parse_active(text)
    assert target == expected
    assert str(target) == canonical
    assert parse_active(str(target)) == target


def test_tls_flag() -> None:
    assert parse_passive("pssl:1").uses_tls
    assert not parse_passive("ptcp:1").uses_tls
    assert parse_active("ssl:1.2.3.4").uses_tls
    assert not parse_active("unix:/x").uses_tls


def test_targets_are_frozen() -> None:
    target = parse_active("tcp:1.2.3.4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tcp:6653:127.0.0.1", "unknown method 'tcp'"),
        ("6653", "unknown method '6653'"),
        ("", "unknown method ''"),
        ("ptcp", "unknown method 'ptcp'"),
        ("ptcp:", "missing port"),
        ("ptcp:x", "port 'x' is not a number in 0..65535"),
        ("ptcp:65536", "port '65536' is not a number in 0..65535"),
        ("ptcp:-1", "port '-1' is not a number"),
        ("ptcp:6653:", "missing IP address after ':'"),
        ("ptcp:6653:localhost", "'localhost' is not an IP address"),
        ("ptcp:6653:::1", "IPv6 address '::1' must be in brackets"),
        ("ptcp:6653:[127.0.0.1]", "only IPv6 addresses go in brackets"),
        ("ptcp:6653:1.2.3.4:5", "'1.2.3.4:5' is not an IP address"),
        ("punix:", "empty socket path"),
    ],
)
def test_passive_errors(text: str, problem: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_passive(text)
    message = str(info.value)
    assert problem in message
    assert message.startswith(f"invalid target {text!r}: ")
    assert message.endswith("(expected ptcp:PORT[:IP], pssl:PORT[:IP] or punix:PATH)")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ptcp:6653", "unknown method 'ptcp'"),
        ("tcp:", "missing IP address"),
        ("tcp:controller.example", "'controller.example' is not an IP address"),
        ("tcp:::1", "IPv6 address '::1' must be in brackets"),
        ("tcp:[::1", "'[::1' is not an IP address"),
        ("tcp:[::1]6653", "is not an IP address"),
        ("tcp:1.2.3.4:", "missing port after ':'"),
        ("tcp:1.2.3.4:0", "port '0' is not a number in 1..65535"),
        ("ssl:1.2.3.4:99999", "port '99999' is not a number in 1..65535"),
        ("unix:", "empty socket path"),
    ],
)
def test_active_errors(text: str, problem: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_active(text)
    message = str(info.value)
    assert problem in message
    assert message.endswith("(expected tcp:IP[:PORT], ssl:IP[:PORT] or unix:PATH)")


def test_target_error_is_value_error() -> None:
    assert issubclass(TargetError, ValueError)
