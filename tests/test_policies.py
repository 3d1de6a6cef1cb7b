"""Network policies: the [[policies]] config, the drop rules they become for an OVSDB state,
and how those rules rank among the proxy's others."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from os_ken.ofproto import ofproto_protocol

from ovs_sriov_proxy.config import ConfigError, PolicyConfig, parse_config
from ovs_sriov_proxy.ovsdb.model import BridgeRow, BridgeSettings, InterfaceRow, OvsState
from ovs_sriov_proxy.policies import interface_tags, policy_rules, ports_by_mac
from ovs_sriov_proxy.rules.classifier import Classifier
from ovs_sriov_proxy.rules.flowparse import format_flow, parse_flow, parse_match
from ovs_sriov_proxy.rules.model import POLICY_ORIGIN
from ovs_sriov_proxy.rules.store import RuleStore

from .test_ovsdb_manager import make, settle

OVSDB = '[ovsdb]\nremote = "unix:/nowhere"\n'
A_MAC, B_MAC = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
WEB_MAC, DB_MAC = "fa:16:3e:00:00:02", "fa:16:3e:00:00:03"


def iface(name: str, ofport: int | None, tags: str = "", mac: str = "") -> InterfaceRow:
    ids = [(key, value) for key, value in (("attached-mac", mac), ("policy-tags", tags)) if value]
    return InterfaceRow(name, ofport, "dummy", tuple(ids))


def host_state(*bridges: BridgeRow) -> OvsState:
    return OvsState({b.name: b for b in bridges})


BR_INT = BridgeRow("br-int", BridgeSettings(), (
    iface("vf1", 1, "pci"),
    iface("vf2", 2, "web", WEB_MAC),
    iface("vf3", 3, "pci, db", DB_MAC.upper()),  # a MAC is compared without case
    iface("vf4", None, "pci"),  # no port number yet: nothing to match on
))
BR_EX = BridgeRow("br-ex", BridgeSettings(), (iface("uplink", 1, "pci"),))


def texts(rules) -> list[str]:
    return [f"{rule.bridge} {format_flow(rule)}" for rule in rules]


# ---- config ----


def test_policies_in_the_config() -> None:
    config = parse_config(OVSDB + """
[[policies]]
name = "pci-to-web"
from_tag = "pci"
to_tag = "web"
match = "tcp"
bridge = "br-int"

[[policies]]
name = "no-smtp"
match = "tcp,tp_dst=25"
""")
    assert config.policies == (
        PolicyConfig("pci-to-web", "pci", "web", parse_match("tcp"), "tcp", "br-int"),
        PolicyConfig("no-smtp", None, None, parse_match("tcp,tp_dst=25"), "tcp,tp_dst=25"),
    )


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    (OVSDB + '[[policies]]\nname = "p"\n', 3, "policies[0]",
     "a policy needs from_tag, to_tag or match (or it would drop everything)"),
    ('[[policies]]\nname = "p"\nfrom_tag = "pci"\n', 1, "policies[0]",
     "tags are read from OVSDB: add an [ovsdb] table"),
    (OVSDB + '[[policies]]\nfrom_tag = "pci"\n', 3, "policies[0].name", "required key is missing"),
    (OVSDB + '[[policies]]\nname = "p"\nfrom_tag = "a b"\n', 5, "policies[0].from_tag",
     "'a b' is not a tag (use letters, digits, '_', '.', '-')"),
    (OVSDB + '[[policies]]\nname = "p"\nfrom_tag = "a"\nmatch = "in_port=3"\n', 6,
     "policies[0].match", "from_tag sets in_port: remove it from the match"),
    (OVSDB + '[[policies]]\nname = "p"\nto_tag = "a"\nmatch = "dl_dst=fa:16:3e:00:00:01"\n', 6,
     "policies[0].match", "to_tag sets eth_dst: remove it from the match"),
    (OVSDB + '[[policies]]\nname = "p"\nmatch = "tcp actions=drop"\n', 5, "policies[0].match",
     "a match takes no actions at column 5"),
    (OVSDB + '[[policies]]\nname = "p"\nmatch = "tcp"\naction = "allow"\n', 6,
     "policies[0].action",
     "unknown key (expected one of: name, from_tag, to_tag, match, bridge)"),
    (OVSDB + '[[policies]]\nname = "p"\nmatch = "tcp"\n[[policies]]\nname = "p"\nmatch = "udp"\n',
     7, "policies[1].name", "duplicate policy name 'p'"),
    (OVSDB + '[[policies]]\nname = "p"\nmatch = ""\n', 5, "policies[0].match",
     "matches every packet: a policy must narrow it"),
    # The second entry's own key and line, though the first one is refused.
    ('[[policies]]\nname = "bad name"\n[[policies]]\nname = "p"\nto_tag = "web"\n', 2,
     "policies[0].name", "'bad name' is not a name (use letters, digits, '_', '.', '-')"),
    ('[[policies]]\nname = "ok"\nmatch = "udp"\n[[policies]]\nname = "p"\nto_tag = "web"\n', 4,
     "policies[1]", "tags are read from OVSDB: add an [ovsdb] table"),
    ('[[policies]]\nname = "v6"\nmatch = "ipv6,ipv6_src=::1"\n', 3, "policies[0].match",
     "OpenFlow 0x01 has no field ipv6_src; a policy must hold on OpenFlow 1.0 bridges too, or "
     "take OpenFlow10 out of [proxy] protocols"),
    ('[[rules]]\nflow = "priority=65535,tcp actions=drop"\n[[policies]]\nname = "p"\nmatch = "udp"\n',
     2, "rules[0].flow", "priority 65535 is reserved for [[policies]]; use 65534 or less"),
])
def test_policy_errors(text: str, line: int, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "proxy.toml")
    assert (caught.value.line, caught.value.key, caught.value.problem) == (line, key, problem)


def test_a_policy_only_13_can_express_is_fine_without_10_bridges() -> None:
    config = parse_config('[proxy]\nprotocols = ["OpenFlow13"]\n'
                          '[[policies]]\nname = "v6"\nmatch = "ipv6,ipv6_src=::1"\n')
    assert config.policies[0].match_text == "ipv6,ipv6_src=::1"


def test_priority_65535_is_free_for_rules_without_policies() -> None:
    config = parse_config('[[rules]]\nflow = "priority=65535,tcp actions=drop"\n')
    assert config.rules[0].priority == 65535


# ---- rules from tags ----


def test_tags_are_separated_by_commas_or_spaces() -> None:
    assert interface_tags(iface("x", 1, "pci, web db,,")) == {"pci", "web", "db"}
    assert interface_tags(iface("x", 1)) == frozenset()


def test_a_policy_becomes_one_drop_per_tagged_port_and_target_mac() -> None:
    policy = PolicyConfig("pci-to-web", "pci", "web", parse_match("tcp"), "tcp")
    rules = policy_rules([policy], host_state(BR_INT, BR_EX))
    assert texts(rules) == [
        "br-ex priority=65535,in_port=1,tcp,dl_dst=fa:16:3e:00:00:02 actions=drop",
        "br-int priority=65535,in_port=1,tcp,dl_dst=fa:16:3e:00:00:02 actions=drop",
        "br-int priority=65535,in_port=3,tcp,dl_dst=fa:16:3e:00:00:02 actions=drop",
    ]
    assert all(r.origin == POLICY_ORIGIN and r.pinned and r.actions == () for r in rules)
    assert rules[0].text.startswith("policy pci-to-web: priority=65535,in_port=1,")


def test_bridge_scope_one_sided_policies_and_policies_without_tags() -> None:
    state = host_state(BR_INT, BR_EX)
    scoped = PolicyConfig("p", "pci", None, bridge="br-int")
    assert texts(policy_rules([scoped], state)) == [
        "br-int priority=65535,in_port=1 actions=drop",
        "br-int priority=65535,in_port=3 actions=drop"]
    to_db = PolicyConfig("to-db", None, "db")
    assert texts(policy_rules([to_db], state)) == [  # the MAC of a port on br-int, on both
        "br-ex priority=65535,dl_dst=fa:16:3e:00:00:03 actions=drop",
        "br-int priority=65535,dl_dst=fa:16:3e:00:00:03 actions=drop"]
    smtp = PolicyConfig("no-smtp", match=parse_match("tcp,tp_dst=25"), match_text="tcp,tp_dst=25")
    expected = ["None priority=65535,tcp,tp_dst=25 actions=drop"]
    assert texts(policy_rules([smtp], state)) == expected
    # Before OVSDB was read only policies without tags can be enforced.
    assert texts(policy_rules([scoped, to_db, smtp], None)) == expected
    # A tag on no port, or targets without a MAC: nothing to drop.
    assert policy_rules([PolicyConfig("p", "pci", "nobody")], state) == []
    assert policy_rules([PolicyConfig("p", "nobody", None)], state) == []


def test_a_mac_on_two_ports_maps_to_both() -> None:
    moving = BridgeRow("br0", BridgeSettings(), (
        iface("old", 3, mac=WEB_MAC), iface("new", 7, mac=WEB_MAC.upper()), iface("x", None, mac=DB_MAC)))
    assert ports_by_mac(host_state(moving)) == {"br0": {0xFA163E000002: (3, 7)}}


def test_the_same_drop_from_two_policies_is_one_rule() -> None:
    a = PolicyConfig("a", "pci", None, bridge="br-ex")
    b = PolicyConfig("b", "pci", None, bridge="br-ex")
    rules = policy_rules([a, b], host_state(BR_EX))
    assert len(rules) == 1 and rules[0].text.startswith("policy a:")


# ---- among the other rules ----


def test_a_pinned_rule_neither_narrows_the_rules_below_it_nor_loses_a_lookup() -> None:
    classifier = Classifier()
    [drop] = policy_rules([PolicyConfig("p", match=parse_match("tcp,tp_dst=25"),
                                        match_text="tcp,tp_dst=25")], None)
    classifier.add(1, drop)
    classifier.add(2, parse_flow("priority=100,tcp actions=output:2"))
    classifier.add(3, parse_flow("priority=65534,tcp,tp_dst=25 actions=output:3"))
    # On the bridge the policy's flow is always present, above: rule 2 needs no narrowing.
    assert classifier.overlapping_above(2) == (classifier.get(3),)
    assert classifier.overlapping_above(3) == ()
    assert classifier.pinned == 1
    store = RuleStore()
    rule_id = store.add(drop)
    assert store.classifier("br0").pinned == 1
    store.remove(rule_id)
    assert store.classifier("br0").pinned == 0


def test_policy_rules_follow_the_tags_in_ovsdb(tmp_path: Path) -> None:
    policy = PolicyConfig("quarantine", "quarantine", None)

    async def scenario() -> None:
        manager, client, host = make(tmp_path, bridges=(), policies=(policy,))
        client.bridges["br0"] = BridgeRow("br0", BridgeSettings(), (iface("vf1", 1), iface("vf2", 2)))

        def policy_texts() -> list[str]:
            return sorted(format_flow(r) for _, r in host.rules() if r.origin == POLICY_ORIGIN)

        await manager.start()
        await settle(lambda: manager.connected, "connected")
        assert policy_texts() == []
        client.bridges["br0"] = BridgeRow("br0", BridgeSettings(),
                                          (iface("vf1", 1), iface("vf2", 2, "quarantine", WEB_MAC)))
        client.publish()  # the operator tags vf2: no port came or went
        await settle(lambda: policy_texts() == ["priority=65535,in_port=2 actions=drop"],
                     "vf2 quarantined")
        assert host.ports_by_mac == {"br0": {0xFA163E000002: (2,)}}  # for checking PACKET_OUTs
        manager.reload((), ())  # the policy leaves the config
        assert policy_texts() == []
        manager.reload((), (policy,))
        assert policy_texts() == ["priority=65535,in_port=2 actions=drop"]
        await manager.stop()

    asyncio.run(scenario())


# ---- on a bridge (the proxy core over a real SwitchSession, no sockets) ----


def _policy(name: str, match: str, bridge: str | None = None) -> PolicyConfig:
    return PolicyConfig(name, match=parse_match(match), match_text=match, bridge=bridge)


def test_policies_are_on_the_bridge_before_anything_asks_and_stay_there() -> None:
    from os_ken.ofproto import ofproto_v1_3 as of13

    from ovs_sriov_proxy.openflow.framing import OFP13, OFPT_FLOW_MOD
    from ovs_sriov_proxy.proxy import Proxy
    from ovs_sriov_proxy.rules.store import PROXY_COOKIE_TAG
    from ovs_sriov_proxy.sessions.switch import FlowRemoved, SessionTiming, SwitchSession

    from .test_proxy_core import DP, flow_mod, sent
    from .test_switch_session import handshake_13

    store = RuleStore()
    store.replace_origin(POLICY_ORIGIN, policy_rules([_policy("smtp", "tcp,tp_dst=25")], None))
    store.replace_origin("config", [parse_flow("priority=100,tcp actions=output:2")])
    proxy = Proxy(store)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    first = sent(session)
    # The policy's drop goes first, before the reconcile's dump and the table-miss flow.
    assert [m.type for m in first[:2]] == [OFPT_FLOW_MOD, 18]  # 18: MULTIPART_REQUEST
    pin = flow_mod(first[0])
    assert (pin.priority, dict(pin.match.items()), pin.instructions) == (
        65535, {"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": 25}, [])
    bridge = next(iter(proxy.bridges.values()))
    [(policy_id, policy)] = bridge.classifier.pinned_rules()
    assert pin.cookie == PROXY_COOKIE_TAG | policy_id

    # A miss answered by the rule below installs its flow. A new policy above it deletes
    # nothing and keeps the rule's cached answer: the policy's flow is on the bridge, above.
    from ovs_sriov_proxy.sandbox import tcp_frame

    from .test_proxy_core import miss
    web = tcp_frame(A_MAC, B_MAC, "10.0.0.1", "10.0.0.2", 1000, 80)
    assert [m.type for m in miss(proxy, session, frame=web)] == [OFPT_FLOW_MOD, 13]
    assert len(bridge.answers) == 1
    change = store.replace_origin(POLICY_ORIGIN, policy_rules(
        [_policy("smtp", "tcp,tp_dst=25"), _policy("web", "tcp,tp_dst=80")], None))
    proxy.apply_rule_change(change)
    [web_pin] = [flow_mod(m) for m in sent(session)]
    assert (web_pin.command, web_pin.priority) == (of13.OFPFC_ADD, 65535)
    assert len(bridge.answers) == 1
    proxy.apply_rule_change(store.replace_origin(POLICY_ORIGIN, policy_rules(
        [_policy("smtp", "tcp,tp_dst=25")], None)))
    [web_unpinned] = [flow_mod(m) for m in sent(session)]
    assert web_unpinned.command == of13.OFPFC_DELETE

    # Deleted behind the proxy's back: put back. Removed with its rule: not.
    removed = of13_removed(DP, pin.cookie, pin.match)
    proxy.handle_events(session, [FlowRemoved(removed)])
    [again] = [flow_mod(m) for m in sent(session)]
    assert (again.command, again.cookie, again.priority) == (of13.OFPFC_ADD, pin.cookie, 65535)

    # A second policy pins the same flow on this bridge only; when it goes, its delete (by
    # cookie) took the shared flow, so the first policy's is put back.
    both = [_policy("smtp", "tcp,tp_dst=25"), _policy("smtp-here", "tcp,tp_dst=25", "br-int")]
    change = store.replace_origin(POLICY_ORIGIN, policy_rules(both, None))
    proxy.apply_rule_change(change)
    [added] = [flow_mod(m) for m in sent(session)]
    assert added.command == of13.OFPFC_ADD and added.priority == 65535
    change = store.replace_origin(POLICY_ORIGIN, policy_rules(both[:1], None))
    proxy.apply_rule_change(change)
    delete, repin = (flow_mod(m) for m in sent(session))
    assert delete.command == of13.OFPFC_DELETE and delete.cookie == added.cookie
    assert (repin.command, repin.cookie) == (of13.OFPFC_ADD, pin.cookie)

    # The rule gone: its FLOW_REMOVED puts nothing back.
    proxy.apply_rule_change(store.replace_origin(POLICY_ORIGIN, []))
    [delete] = [flow_mod(m) for m in sent(session)]
    proxy.handle_events(session, [FlowRemoved(of13_removed(DP, pin.cookie, pin.match))])
    assert sent(session) == []


def of13_removed(dp, cookie: int, match):
    from os_ken.ofproto import ofproto_v1_3_parser

    return ofproto_v1_3_parser.OFPFlowRemoved(dp, cookie=cookie, priority=65535, reason=2,
                                              table_id=0, match=match)


# ---- the daemon and its control socket ----


def _daemon(tmp_path: Path, extra: str = ""):
    from ovs_sriov_proxy.daemon import Daemon

    return Daemon(parse_config(f"""
[proxy]
state_dir = "{tmp_path}"
control_socket = "{tmp_path / 'proxy.ctl'}"
[backup]
enabled = false
[[policies]]
name = "no-smtp"
match = "tcp,tp_dst=25"
{extra}"""))


def test_the_operator_cannot_tie_with_or_delete_a_policy(tmp_path: Path) -> None:
    from ovs_sriov_proxy.control import Dispatcher
    from ovs_sriov_proxy.rules.records import RuleRecord
    from ovs_sriov_proxy.rules.store import RuleMeta

    daemon = _daemon(tmp_path)
    [(policy_id, policy)] = [(i, r) for i, r in daemon.rules() if r.origin == POLICY_ORIGIN]
    assert format_flow(policy) == "priority=65535,tcp,tp_dst=25 actions=drop"
    dispatcher = Dispatcher(daemon)
    reply = dispatcher.dispatch("proxy/add-rule", ["priority=65535,udp actions=output:2"])
    assert (reply.ok, reply.text) == (
        False, "priority 65535 is reserved for [[policies]]; use 65534 or less\n")
    reply = dispatcher.dispatch("proxy/del-rule", [str(policy_id)])
    assert not reply.ok and "enforces a policy" in reply.text
    assert daemon.store.get(policy_id) == policy
    # An import brings neither another host's policies nor a rule that would tie with ours.
    meta = RuleMeta(inserted_at=0.0)
    records = [RuleRecord(7, parse_flow("priority=65535,udp actions=drop", origin=POLICY_ORIGIN), meta),
               RuleRecord(8, parse_flow("priority=65535,udp actions=output:2", origin="cli"), meta),
               RuleRecord(9, parse_flow("priority=65534,udp actions=output:2", origin="cli"), meta)]
    assert daemon.import_records(records) == (1, 2)
    assert not any(r.priority == 65535 and not r.pinned for _, r in daemon.rules())


def test_rules_of_65535_made_before_the_policies_are_reported(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    daemon = _daemon(tmp_path)
    assert "tie with the policies" not in caplog.text
    daemon.store.add(parse_flow("priority=65535,udp actions=drop", origin="import"))
    daemon._enforce_policies_without_tags(daemon.config)  # as at start, with a restored backup
    assert "1 rules of priority 65535 (made before [[policies]] existed) tie with the policies" \
        in caplog.text


# ---- what controllers send (the northbound with real sessions, no sockets) ----


def _add_policy(proxy, match: str) -> None:
    change = proxy.store.replace_origin(POLICY_ORIGIN, policy_rules([_policy("p", match)], None))
    proxy.apply_rule_change(change)


def test_a_packet_out_of_what_a_policy_drops_is_refused_with_eperm() -> None:
    from os_ken.ofproto import ofproto_v1_3 as o13
    from os_ken.ofproto import ofproto_v1_3_parser as p13

    from ovs_sriov_proxy.openflow.framing import OFP13, hello
    from ovs_sriov_proxy.sandbox import tcp_frame

    from .test_idspaces_wiring import seeded, two_controllers_on_a_13_bridge
    from .test_translate_wiring import DP13, bridge_out, build, parse

    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    seeded(northbound, proxy, session)
    links[0].feed(hello(frozenset({OFP13})))
    links[0].received()
    _add_policy(proxy, "tcp,tp_dst=25")
    bridge_out(session)  # the policy's pin

    def packet_out(dport: int, xid: int) -> bytes:
        frame = tcp_frame(A_MAC, B_MAC, "10.0.0.1", "10.0.0.2", 1000, dport)
        return build(p13.OFPPacketOut(DP13, o13.OFP_NO_BUFFER, 1, [p13.OFPActionOutput(2)], frame),
                     xid=xid)

    links[0].feed(packet_out(25, 0x51))
    assert bridge_out(session) == []
    [refusal] = [parse(m.raw) for m in links[0].received()]
    assert (refusal.xid, refusal.type, refusal.code) == (0x51, o13.OFPET_BAD_REQUEST,
                                                         o13.OFPBRC_EPERM)
    links[0].feed(packet_out(80, 0x52))
    [relayed] = bridge_out(session)
    assert relayed.type == o13.OFPT_PACKET_OUT and links[0].received() == []
    bridge = next(iter(proxy.bridges.values()))
    assert bridge.counters["policy_denied_packet_out:a"] == 1

    # A tagged policy: pci VMs never reach web VMs. A PACKET_OUT of a pci VM's frame to a web
    # VM is refused whatever in_port it names, here CONTROLLER: the source MAC tells.
    state = host_state(BridgeRow(bridge.name, BridgeSettings(), (
        iface("vf1", 1, "pci", A_MAC), iface("vf2", 2, "web", B_MAC))))
    change = proxy.store.replace_origin(POLICY_ORIGIN, policy_rules(
        [PolicyConfig("pci-to-web", "pci", "web")], state))
    proxy.apply_rule_change(change)
    proxy.ports_by_mac = ports_by_mac(state)
    assert proxy.ports_by_mac == {bridge.name: {0xA: (1,), 0xB: (2,)}}
    bridge_out(session)

    def from_controller(src: str, xid: int) -> bytes:
        frame = tcp_frame(src, B_MAC, "10.0.0.1", "10.0.0.2", 1000, 80)
        return build(p13.OFPPacketOut(DP13, o13.OFP_NO_BUFFER, o13.OFPP_CONTROLLER,
                                      [p13.OFPActionOutput(2)], frame), xid=xid)

    links[0].feed(from_controller(A_MAC, 0x53))
    assert bridge_out(session) == []
    [refusal] = [parse(m.raw) for m in links[0].received()]
    assert (refusal.xid, refusal.code) == (0x53, o13.OFPBRC_EPERM)
    links[0].feed(from_controller("00:00:00:00:00:0c", 0x54))  # no VM's MAC: the controller's own
    assert [m.type for m in bridge_out(session)] == [o13.OFPT_PACKET_OUT]


def test_on_a_10_bridge_policies_are_put_back_after_a_wide_modify_or_delete_only() -> None:
    from os_ken.ofproto import ofproto_v1_0 as o10
    from os_ken.ofproto import ofproto_v1_3 as o13
    from os_ken.ofproto import ofproto_v1_3_parser as p13

    from .test_translate_wiring import DP13, bridge_out, build, of13_controller_on_of10_bridge

    northbound, session, (link,) = of13_controller_on_of10_bridge()
    link.received()
    _add_policy(northbound.proxy, "tcp,tp_dst=25")
    [pin] = bridge_out(session)
    for command, strict in ((o13.OFPFC_DELETE, False), (o13.OFPFC_MODIFY, False),
                            (o13.OFPFC_DELETE_STRICT, True), (o13.OFPFC_ADD, True)):
        link.feed(build(p13.OFPFlowMod(DP13, command=command, priority=7,
                                       table_id=o13.OFPTT_ALL if command in (
                                           o13.OFPFC_DELETE, o13.OFPFC_DELETE_STRICT) else 0,
                                       out_port=o13.OFPP_ANY, out_group=o13.OFPG_ANY,
                                       match=p13.OFPMatch(in_port=1))))
        sent_now = bridge_out(session)
        assert sent_now[0].type == o10.OFPT_FLOW_MOD
        assert [m.raw[8:] for m in sent_now[1:]] == ([] if strict else [pin.raw[8:]]), command


def test_a_reload_before_ovsdb_was_read_keeps_the_tagged_rules_of_the_last_run(
        tmp_path: Path) -> None:
    quarantine = PolicyConfig("quarantine", "quarantine", None)
    smtp = _policy("no-smtp", "tcp,tp_dst=25")
    manager, _client, host = make(tmp_path, bridges=(), policies=(quarantine,))
    # The rules backup brought the last run's drop of the tagged policy (OVSDB not read yet).
    [restored] = policy_rules([quarantine], host_state(
        BridgeRow("br0", BridgeSettings(), (iface("vf2", 2, "quarantine"),))))
    host.store.add(restored)

    def texts_now() -> list[str]:
        return sorted(r.text for _, r in host.rules() if r.origin == POLICY_ORIGIN)

    manager.reload((), (quarantine, smtp))  # a policy without tags: enforced at once
    assert texts_now() == ["policy no-smtp: priority=65535,tcp,tp_dst=25 actions=drop",
                           "policy quarantine: priority=65535,in_port=2 actions=drop"]
    manager.reload((), (smtp,))  # the tagged policy left the config: its rule goes
    assert texts_now() == ["policy no-smtp: priority=65535,tcp,tp_dst=25 actions=drop"]


def test_on_10_a_stale_drop_of_a_policy_is_replaced_not_deleted_with_the_current_one() -> None:
    """1.0 deletes cannot name a cookie: a strict delete of a policy's drop left under an older
    id (a policy renamed while the bridge was away) would also take the current one."""
    from os_ken.ofproto import ofproto_v1_0 as o10
    from os_ken.ofproto import ofproto_v1_0_parser as p10

    from ovs_sriov_proxy.openflow.framing import OFP10, OFPT_FLOW_MOD
    from ovs_sriov_proxy.rules.store import PROXY_COOKIE_TAG

    from .test_proxy_core import connect_10, sent

    store = RuleStore()
    store.replace_origin(POLICY_ORIGIN, policy_rules([_policy("p", "in_port=2")], None))
    proxy, session = connect_10(store)
    pin, dump = sent(session)
    assert (pin.type, dump.type) == (OFPT_FLOW_MOD, 16)
    dp = ofproto_protocol.ProtocolDesc(OFP10)
    buf = bytearray()
    p10.OFPMatch(wildcards=o10.OFPFW_ALL & ~o10.OFPFW_IN_PORT, in_port=2).serialize(buf, 0)
    stale = struct.pack("!HBx40sIIHHHxxxxxxQQQ", 88, 0, bytes(buf), 0, 0, 65535, 0, 0,
                        PROXY_COOKIE_TAG | 99, 0, 0)
    reply_body = struct.pack("!HH", 1, 0) + stale
    reply = struct.pack("!BBHI", OFP10, 17, 8 + len(reply_body), dump.xid) + reply_body
    proxy.handle_events(session, session.receive_data(reply, 1))
    [again] = sent(session)
    mod = p10.OFPFlowMod.parser(dp, OFP10, OFPT_FLOW_MOD, len(again.raw), again.xid, again.raw)
    assert (mod.command, mod.priority, mod.cookie) == (o10.OFPFC_ADD, 65535,
                                                      flow_mod_cookie(pin.raw))


def flow_mod_cookie(raw: bytes) -> int:
    return struct.unpack_from("!Q", raw, 48)[0]  # OpenFlow 1.0: after the header and the match
