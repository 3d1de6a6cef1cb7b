"""Faucet, unmodified, programs a bridge through the proxy: its multi-table pipeline lands on the
bridge, its L2 learning forwards, and its delete-all on connect removes only its own flows.

Faucet pins an older os-ken than ours, so it runs from its own venv, `.venv-faucet`, which
scripts/bootstrap.sh creates. Without it the tests are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_core import PROXY_COOKIE_TAG, add_bridge, proxy_config  # integration/ is on sys.path
from test_northbound import controllers_toml, start_tiny

from ovs_sriov_proxy.sandbox import OvsSandbox, free_port, tcp_listening, udp_frame, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
FAUCET_VENV = REPO_ROOT / ".venv-faucet"
FAUCET_COOKIE = 0x5ADC15C0  # Faucet's own cookie, which it checks on every packet-in
A, B = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
# What Faucet 1.10.12 (os-ken 3.1, eventlet) prints on stderr when it starts.
FAUCET_STDERR = [
    r"EventletDeprecationWarning", r"^Eventlet is deprecated", r"^we strongly recommend against",
    r"^If you are already using Eventlet", r"^framework\.  For more detail see",
    r"^https://eventlet\.readthedocs\.io/", r"^\s+import eventlet$",
    r"^\d+ RLock\(s\) were not greened", r"^loading app ", r"^instantiating app ",
    r"^creating context ", r"^\(\d+\) wsgi starting up on http://127\.0\.0\.1:\d+$",
    # dnspython importing DSA from cryptography >= 51 (its deps are not pinned; the warning and
    # the source line Python prints under it).
    r"/dns/dnssecalgs/dsa\.py:\d+: CryptographyDeprecationWarning: DSA is deprecated",
    r"^\s+key(_cls)?: dsa\.DSA(Public|Private)Key$", r"^\s+key_cls = dsa\.DSA(Public|Private)Key$",
]
# Faucet logs this once per start, before the switch's port description arrives; it also does
# so connected to a bridge directly.
FAUCET_BENIGN_ERRORS = ("send_flow_msgs: DP not up",)
DNS_RULE = "priority=5000,udp,tp_dst=53 actions=output:3"


@pytest.fixture
def faucet_venv() -> Path:
    if not (FAUCET_VENV / "bin" / "faucet").exists():
        reason = f"Faucet is not installed in {FAUCET_VENV}; run scripts/bootstrap.sh"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return FAUCET_VENV


class Faucet:
    def __init__(self, ovs: OvsSandbox, venv: Path, directory: Path, ports: list[int],
                 port: int | None = None, group_table: bool = False) -> None:
        self.port = port or free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "faucet.yaml"
        self.log = directory / "faucet-run.log"  # not NAME.log: its format is not OVS's
        self.exceptions = directory / "faucet-exceptions.log"
        interfaces = "".join(f"      {p}: {{native_vlan: office}}\n" for p in ports)
        # ignore_learn_ins: 0, or Faucet ignores about one learning packet-in in ten, at random.
        self.config.write_text(
            "vlans:\n  office:\n    vid: 100\n"
            "dps:\n  sw1:\n    dp_id: 0x1\n    hardware: \"Open vSwitch\"\n"
            "    ignore_learn_ins: 0\n"
            + ("    group_table: true\n" if group_table else "")
            + f"    interfaces:\n{interfaces}")
        environment = {
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",  # for osken-manager
            "FAUCET_CONFIG": str(self.config), "FAUCET_LOG": str(self.log),
            "FAUCET_EXCEPTION_LOG": str(self.exceptions),
            "FAUCET_PROMETHEUS_ADDR": "127.0.0.1", "FAUCET_PROMETHEUS_PORT": str(free_port()),
        }
        self.process = ovs.spawn(
            "faucet",
            ["env", *(f"{k}={v}" for k, v in environment.items()), str(venv / "bin" / "faucet"),
             f"--ryu-ofp-tcp-listen-port={self.port}", "--ryu-ofp-listen-host=127.0.0.1"],
            ready=lambda: tcp_listening("127.0.0.1", self.port), allowed_log_lines=FAUCET_STDERR,
            timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def check_logs(self) -> None:
        """No traceback, and no ERROR but the benign one."""
        exceptions = self.exceptions.read_text() if self.exceptions.exists() else ""
        assert not exceptions.strip(), exceptions
        errors = [line for line in self.log_text().splitlines()
                  if " ERROR " in line and not any(e in line for e in FAUCET_BENIGN_ERRORS)]
        assert not errors, "\n".join(errors)


@dataclass(frozen=True)
class Flow:
    """One line of ovs-ofctl dump-flows, reduced to what these tests compare (ovs.flow cannot
    parse every line OVS prints, e.g. flags before the priority)."""

    cookie: int
    table: int
    priority: int
    rule: str  # match and actions, without the counters that change

    @property
    def tag(self) -> int:
        return self.cookie >> 48


_FLOW_LINE = re.compile(r"cookie=(?P<cookie>0x[0-9a-f]+),.*?table=(?P<table>\d+),.*?"
                        r"(?:priority=(?P<priority>\d+))?,?(?P<rest>[^ ]* actions=.*)$")


def dump(ovs: OvsSandbox, spec: str = "") -> list[Flow]:
    found = []
    for line in ovs.ofctl("-O", "OpenFlow13", "dump-flows", "br0", *([spec] if spec else []))\
            .splitlines():
        match = _FLOW_LINE.search(line)
        if match:
            found.append(Flow(int(match["cookie"], 16), int(match["table"]),
                              int(match["priority"] or 32768), match["rest"]))
    return found


def flows_of(ovs: OvsSandbox, tag: int, spec: str = "") -> list[Flow]:
    return [f for f in dump(ovs, spec) if f.tag == tag]


def faucet_pipeline(ovs: OvsSandbox, tag: int, floor: int = 0) -> list[Flow] | None:
    """Faucet's flows once it has programmed its four tables (vlan, eth_src, eth_dst, flood).

    Faucet sends its flows highest table and priority first, so the last of the burst is table
    0's catch-all, at ``floor`` (0 moved up by the controller's band).
    """
    flows = flows_of(ovs, tag)
    complete = ({f.table for f in flows} >= {0, 1, 2, 3}
                and any(f.table == 0 and f.priority == floor for f in flows))
    return flows if complete else None


def learned_destination(ovs: OvsSandbox, tag: int, mac: str) -> list[Flow]:
    return flows_of(ovs, tag, f"table=2,dl_dst={mac}")


def test_faucet_programs_the_bridge_through_the_proxy_and_its_learning_forwards(
        ovs, proxy_factory, tmp_path, faucet_venv) -> None:
    faucet = Faucet(ovs, faucet_venv, tmp_path / "faucet", [1, 2, 3])
    port = free_port()
    # A rule of the proxy's own, ranking above Faucet's VLAN flows (priority 4096) in table 0.
    proxy = proxy_factory(proxy_config(port, tmp_path / "state", [DNS_RULE])
                          + controllers_toml([("faucet", faucet.port, 0, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller faucet connected")
    tag = 0x4300  # the only controller: its band is the whole range, so priorities are Faucet's
    pipeline = wait_until(lambda: faucet_pipeline(ovs, tag), 15, "Faucet's four tables")
    assert all(f.cookie == tag << 48 | FAUCET_COOKIE for f in pipeline)
    priorities = {f.priority for f in pipeline}
    assert {0, 4096, 8192} <= priorities  # unchanged: a single controller is not remapped
    # Faucet's table-0 catch-all (drop) took the proxy's table-miss flow's place.
    floor = [f for f in dump(ovs, "table=0") if f.priority == 0]
    assert len(floor) == 1 and floor[0].tag == tag and floor[0].rule.endswith("actions=drop")

    out1, out2, out3 = (ovs.capture(f"br0-p{i}") for i in (1, 2, 3))
    a_to_b = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"ab")
    b_to_a = udp_frame(B, A, "10.0.0.2", "10.0.0.1", 2000, 1000, b"ba")
    ovs.inject("br0-p1", a_to_b)  # B unknown: flooded by Faucet's flood table; A learned
    assert out2.wait_frames(1) == [a_to_b] and out3.wait_frames(1) == [a_to_b]
    wait_until(lambda: learned_destination(ovs, tag, A), 5, "Faucet's eth_dst flow for A")
    ovs.inject("br0-p2", b_to_a)  # A known: to p1 only; B learned
    assert out1.wait_frames(1) == [b_to_a]
    wait_until(lambda: learned_destination(ovs, tag, B), 5, "Faucet's eth_dst flow for B")
    ovs.inject("br0-p1", a_to_b)  # B known now: to p2 only
    assert out2.wait_frames(2) == [a_to_b, a_to_b]
    assert out3.frames() == [a_to_b] and out1.frames() == [b_to_a]
    assert "L2 learned on Port 2 00:00:00:00:00:0b" in faucet.log_text()

    # Faucet's catch-all owns table 0's misses, yet the proxy's rule still answers: its cover
    # (same match and priority, output CONTROLLER) brings the packet to the proxy.
    dns = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 53, b"dns")
    ovs.inject("br0-p1", dns)
    assert out3.wait_frames(2) == [a_to_b, dns]
    rule_flow = wait_until(lambda: [f for f in flows_of(ovs, PROXY_COOKIE_TAG)
                                    if f.rule.endswith("actions=output:3")], 5, "the rule's flow")
    assert rule_flow[0].priority == 5000  # the rule's own flow (its cover has the tag 0x5043)
    ovs.inject("br0-p1", dns)  # now forwarded by the rule's flow on the bridge
    assert out3.wait_frames(3) == [a_to_b, dns, dns]
    assert out2.frames() == [a_to_b, a_to_b]

    # Faucet restarts: its delete-all on connect takes its catch-all away, the proxy's
    # table-miss flow comes back at once, and Faucet's new catch-all replaces it again.
    ovs.stop_process(faucet.process)
    proxy.wait_log("controller faucet disconnected")
    faucet = Faucet(ovs, faucet_venv, tmp_path / "faucet", [1, 2, 3], port=faucet.port)
    proxy.wait_log("the proxy's table-miss flow is back", timeout=20)
    wait_until(lambda: [f for f in dump(ovs, "table=0") if f.priority == 0 and f.tag == tag],
               10, "Faucet's catch-all again")
    assert flows_of(ovs, PROXY_COOKIE_TAG) == rule_flow  # Faucet's deletes are its own
    ovs.inject("br0-p2", b_to_a)  # Faucet forgot A: flooded again, and still learned
    assert out1.wait_frames(2) == [b_to_a, b_to_a] and out3.wait_frames(4)[-1] == b_to_a
    proxy.stop()
    log = proxy.log_text()
    assert "controller faucet installed a catch-all in table 0" in log
    assert "covering the proxy's rules" in log and "table_miss_reinstalled=1" in log
    assert "action_packet_ins_unheard" not in log
    faucet.check_logs()


def test_faucets_delete_all_spares_the_proxys_and_another_controllers_flows(
        ovs, proxy_factory, tmp_path, faucet_venv) -> None:
    """Faucet connects late, to a bridge that already has a flow of the proxy's own rule and a
    flow another controller installed; its delete-all on connect leaves both."""
    other, _ = start_tiny(ovs, "other", "--answer", "flow-mod", "--output", "2")
    faucet_port = free_port()  # Faucet is not up yet: the proxy keeps trying it
    port = free_port()
    proxy = proxy_factory(
        proxy_config(port, tmp_path / "state", ["priority=300,udp,tp_dst=53 actions=output:3"])
        + controllers_toml([("other", other, 10, ""), ("faucet", faucet_port, 50, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller other connected")
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    dns = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 53, b"dns")
    web = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 80, b"web")
    ovs.inject("br0-p1", dns)  # the proxy's own rule
    assert out3.wait_frames(1) == [dns]
    ovs.inject("br0-p1", web)  # a miss "other" answers with a flow
    assert out2.wait_frames(1) == [web]
    other_tag, faucet_tag = 0x4300, 0x4301
    before_proxy = wait_until(lambda: flows_of(ovs, PROXY_COOKIE_TAG), 5, "the proxy's flow")
    before_other = wait_until(lambda: flows_of(ovs, other_tag), 5, "the other controller's flow")

    faucet = Faucet(ovs, faucet_venv, tmp_path / "faucet", [1, 2, 3], port=faucet_port)
    proxy.wait_log("controller faucet connected", timeout=20)
    pipeline = wait_until(lambda: faucet_pipeline(ovs, faucet_tag, floor=32768), 15,
                          "Faucet's four tables")
    # Faucet ranks first (priority 50): its band is the upper half, its flows are moved up by
    # 32768, and the other controller's band is the lower half.
    assert {f.priority for f in pipeline} >= {32768, 32768 + 4096}
    assert flows_of(ovs, PROXY_COOKIE_TAG) == before_proxy
    assert flows_of(ovs, other_tag) == before_other
    proxy.stop()
    log = proxy.log_text()
    assert "won_by:other=1" in log
    faucet.check_logs()


def test_faucets_groups_and_delete_all_groups_leave_another_controllers_group(
        ovs, proxy_factory, tmp_path, faucet_venv) -> None:
    """Faucet with `group_table` floods through groups and deletes every group when it
    connects. Next to an os-ken app that uses group 1 and meter 1, both keep their own: each
    controller has its own slice of the bridge's group ids (idspaces.py)."""
    import sys

    from test_group_ids import HIGH_GROUP, bridge_ids, lines
    from test_osken_app import APP

    app_port = free_port()
    ovs.spawn("app", [sys.executable, str(APP), "--listen", str(app_port),
                      "--group-flow", "3:1:1:2"],
              ready=lambda: tcp_listening("127.0.0.1", app_port),
              allowed_log_lines=[r"^switch [0-9a-f]{16} connected$", r"^groups ", r"^meters ",
                                 r"^flow ", r"^flood "], timeout=20)
    app_log = ovs.directory / "app.stderr"
    faucet_port = free_port()  # Faucet comes second, after the app has made its group
    port = free_port()
    proxy = proxy_factory(proxy_config(port, tmp_path / "state", [])
                          + controllers_toml([("app", app_port, 10, ""),
                                              ("faucet", faucet_port, 50, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    wait_until(lambda: lines(app_log, "groups"), 15, "the app to list its groups")
    assert bridge_ids(ovs, "groups") == [1]
    faucet = Faucet(ovs, faucet_venv, tmp_path / "faucet", [1, 2], port=faucet_port,
                    group_table=True)
    proxy.wait_log("controller faucet connected", timeout=20)
    wait_until(lambda: faucet_pipeline(ovs, 0x4301, floor=32768), 15, "Faucet's four tables")
    def two_owners() -> list[int] | None:
        found = bridge_ids(ovs, "groups")
        return found if len(found) > 1 else None

    groups = wait_until(two_owners, 15, "Faucet's flood group")
    assert groups[0] == 1  # the app's group 1 is still there
    assert all(group >= HIGH_GROUP - 1 for group in groups[1:])  # Faucet's, in its own slice
    assert bridge_ids(ovs, "meters") == [1]
    assert lines(app_log, "error") == []
    proxy.stop()
    faucet.check_logs()
