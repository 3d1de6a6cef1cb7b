"""[ovsdb] and VM-scoped [[rules]] in the config file; the memory file; offload counting."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest

from ovs_sriov_proxy import config as config_module
from ovs_sriov_proxy.config import ConfigError, OvsdbConfig, parse_config
from ovs_sriov_proxy.ovsdb import memory
from ovs_sriov_proxy.ovsdb.model import BridgeSettings, ControllerSpec
from ovs_sriov_proxy.ovsdb.offload import count_offloaded
from ovs_sriov_proxy.rules.flowparse import format_flow


def test_ovsdb_table_with_every_key(tmp_path: Path) -> None:
    for name in ("k.pem", "c.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    config = parse_config("""\
[ovsdb]
remote = "ssl:192.0.2.10:6640,unix:db.sock"
bridges = ["br-int", "br-ex"]
fail_mode = "standalone"
inactivity_probe = 0
max_backoff = 2.5
vswitchd_ctl = ""

[ovsdb.tls]
private_key = "k.pem"
certificate = "c.pem"
ca_cert = "ca.pem"
""", tmp_path / "proxy.toml")
    ovsdb = config.ovsdb
    assert ovsdb is not None
    assert ovsdb.remote == f"ssl:192.0.2.10:6640,unix:{tmp_path / 'db.sock'}"
    assert (ovsdb.bridges, ovsdb.fail_mode, ovsdb.inactivity_probe, ovsdb.max_backoff) == (
        ("br-int", "br-ex"), "standalone", 0.0, 2.5)
    assert ovsdb.vswitchd_ctl is None
    assert ovsdb.tls is not None and ovsdb.tls.ca_cert == tmp_path / "ca.pem"


def test_ovsdb_defaults() -> None:
    assert parse_config("").ovsdb is None  # no table: OVSDB is not touched
    assert parse_config("[ovsdb]\n").ovsdb == OvsdbConfig()
    assert OvsdbConfig().remote == "unix:/var/run/openvswitch/db.sock"


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ('[ovsdb]\nremot = "x"\n', 2, "ovsdb.remot", "unknown key (expected one of: remote, bridges, "
     "fail_mode, inactivity_probe, max_backoff, vswitchd_ctl, tls)"),
    ('[ovsdb]\nremote = "ptcp:6640"\n', 2, "ovsdb.remote", "'ptcp:6640' is not an OVSDB remote "
     "(unix:PATH, tcp:IP:PORT or ssl:IP:PORT): unknown method 'ptcp'"),
    ('[ovsdb]\nremote = "tcp:127.0.0.1"\n', 2, "ovsdb.remote", "'tcp:127.0.0.1' is not an OVSDB "
     "remote (unix:PATH, tcp:IP:PORT or ssl:IP:PORT): missing port"),
    ('[ovsdb]\nbridges = ["br0", "br0"]\n', 2, "ovsdb.bridges[1]", "duplicate bridge 'br0'"),
    ('[ovsdb]\nbridges = ["br 0"]\n', 2, "ovsdb.bridges[0]", "'br 0' is not a bridge name"),
    ('[ovsdb]\nfail_mode = "open"\n', 2, "ovsdb.fail_mode",
     "must be one of secure, standalone, got 'open'"),
    ('[ovsdb]\ninactivity_probe = 2\n', 2, "ovsdb.inactivity_probe",
     "must be 0 (no probe) or at least 5 seconds, got 2"),
    ('[ovsdb]\nmax_backoff = 0.5\n', 2, "ovsdb.max_backoff", "must be at least 1 second, got 0.5"),
    ('[ovsdb]\nremote = "ssl:127.0.0.1:6640"\n', 1, "ovsdb",
     "an ssl: remote needs [ovsdb.tls] (private_key, certificate, ca_cert)"),
    ('[[rules]]\nflow = "in_port=1 actions=drop"\niface_id = "a"\n', 2, "rules[0].flow",
     "a rule with iface_id gets in_port from the VM's interface; remove in_port from the flow"),
    ('[[rules]]\nflow = "actions=drop"\niface_id = "a"\nvm = "b"\n', 4, "rules[0].vm",
     "give only one of iface_id, vm, mac"),
    ('[[rules]]\nflow = "actions=drop"\nmac = "fa:16:3e"\n', 3, "rules[0].mac",
     "'fa:16:3e' is not a MAC address (aa:bb:cc:dd:ee:ff)"),
    ('[[rules]]\nflow = "actions=drop"\niface_id = ""\n', 3, "rules[0].iface_id", "must not be empty"),
])
def test_ovsdb_errors(text: str, line: int, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "proxy.toml")
    assert (caught.value.line, caught.value.key, caught.value.problem) == (line, key, problem)


def test_vm_scoped_rules_are_kept_apart_from_the_plain_ones() -> None:
    config = parse_config("""\
[[rules]]
flow = "priority=1 actions=drop"

[[rules]]
flow = "priority=100,udp actions=output:1"
iface_id = "port-uuid-1"

[[rules]]
flow = "priority=90 actions=output:1"
bridge = "br-int"
mac = "FA:16:3E:00:00:01"

[[rules]]
flow = "priority=80 actions=output:1"
vm = "instance-1"
""")
    assert [format_flow(r) for r in config.rules] == ["priority=1 actions=drop"]
    assert [(r.key, r.value, r.rule.bridge, r.rule.origin, format_flow(r.rule)) for r in config.vm_rules] == [
        ("iface-id", "port-uuid-1", None, "vm", "priority=100,udp actions=output:1"),
        ("attached-mac", "fa:16:3e:00:00:01", "br-int", "vm", "priority=90 actions=output:1"),
        ("vm-uuid", "instance-1", None, "vm", "priority=80 actions=output:1"),
    ]


def test_new_config_classes_document_every_field() -> None:
    tree = ast.parse(inspect.getsource(config_module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in ("OvsdbConfig", "VmRule", "PolicyConfig"):
            body = node.body
            for index, item in enumerate(body):
                if isinstance(item, ast.AnnAssign):
                    following = body[index + 1]
                    assert isinstance(following, ast.Expr), f"{node.name}.{ast.unparse(item.target)}"


def test_memory_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "state" / memory.FILE_NAME
    assert memory.load(path) == {}
    saved = {"br0": BridgeSettings.of([ControllerSpec("tcp:10.0.0.1:6633", "in-band", 5000, None)],
                                      "standalone", ["OpenFlow10", "OpenFlow13"]),
             "br1": BridgeSettings()}
    memory.save(path, saved)
    assert memory.load(path) == saved
    assert json.loads(path.read_text())["version"] == 1
    assert not path.with_name(path.name + ".tmp").exists()
    path.write_text('{"version": 2, "bridges": {}}')
    with pytest.raises(memory.BadMemoryFile, match="unknown version 2"):
        memory.load(path)
    path.write_text('{"version": 1, "bridges": {"br0": {"controllers": [{"target": "x", "max_backoff": "1"}]}}}')
    with pytest.raises(memory.BadMemoryFile, match="expected int"):
        memory.load(path)


def test_offloaded_flows_are_counted_by_the_bridge_of_their_input_port() -> None:
    dump = """\
ufid:aa, skb_priority(0/0),in_port(rep1),eth(src=00:00:00:00:00:01),eth_type(0x0800), packets:5, bytes:300, used:0.1s, offloaded:yes, dp:tc, actions:rep2
ufid:bb, skb_priority(0/0),in_port(rep2),eth_type(0x0800), packets:1, bytes:60, used:0.1s, offloaded:yes, dp:tc, actions:rep1
ufid:cc, in_port(uplink),eth_type(0x0806), packets:1, bytes:60, used:0.1s, offloaded:yes, dp:tc, actions:rep1
ufid:dd, in_port(elsewhere),eth_type(0x0806), packets:1, bytes:60, used:0.1s, actions:drop
"""
    counts = count_offloaded(dump, {"rep1": "br-int", "rep2": "br-int", "uplink": "br-ex"})
    assert counts == {"br-int": 2, "br-ex": 1}
    assert count_offloaded("", {"rep1": "br-int"}) == {}


def test_bridges_cannot_be_pointed_at_an_ephemeral_port() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[proxy]\nlisten = ["ptcp:0:127.0.0.1"]\n[ovsdb]\n', "proxy.toml")
    assert (caught.value.line, caught.value.key) == (2, "proxy.listen[0]")
    assert "needs a fixed port, not 0" in caught.value.problem
    assert parse_config('[proxy]\nlisten = ["ptcp:0:127.0.0.1"]\n').ovsdb is None  # fine without
