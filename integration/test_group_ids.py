"""Two controllers that both use group 1 and meter 1 on one bridge, and both delete every group
and meter when they connect (as Faucet does): each keeps its own, through a controller's
reconnect and a restart of the proxy (ovs_sriov_proxy/idspaces.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from test_core import add_bridge, proxy_config  # integration/ is on sys.path
from test_northbound import controllers_toml
from test_osken_app import APP

from ovs_sriov_proxy.idspaces import group_slices, meter_slices
from ovs_sriov_proxy.sandbox import OvsSandbox, free_port, tcp_listening, udp_frame, wait_until

MAX_METER = 262144  # what OVS's userspace datapath reports
HIGH_GROUP = group_slices(2)[1].to_bridge(1)  # "high" is the second controller in the config
HIGH_METER = meter_slices(2, MAX_METER)[1].to_bridge(1)
APPS: dict[str, subprocess.Popen[bytes]] = {}


def start_app(ovs: OvsSandbox, name: str, port: int, group_flow: str) -> Path:
    APPS[name] = ovs.spawn(name, [sys.executable, str(APP), "--listen", str(port), "--group-flow", group_flow],
              ready=lambda: tcp_listening("127.0.0.1", port),
              allowed_log_lines=[r"^switch [0-9a-f]{16} connected$", r"^groups ", r"^meters ",
                                 r"^flow ", r"^flood "],
              timeout=20)
    return ovs.directory / f"{name}.stderr"


def lines(log: Path, prefix: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(prefix)]


def bridge_ids(ovs: OvsSandbox, what: str) -> list[int]:
    dump = ovs.ofctl("-O", "OpenFlow13", f"dump-{what}", "br0")
    key = "group_id" if what == "groups" else "meter"
    return sorted(int(n) for n in re.findall(rf"\b{key}=(\d+)", dump))


def test_each_controller_keeps_its_own_groups_and_meters(ovs, proxy_factory, tmp_path) -> None:
    low_port, high_port = free_port(), free_port()
    # low: in_port 1 -> meter 1, group 1 -> port 2; high: in_port 2 -> meter 1, group 1 -> port 3
    low_log = start_app(ovs, "low", low_port, "1:1:1:2")
    high_log = start_app(ovs, "high", high_port, "2:1:1:3")
    port = free_port()
    config = (proxy_config(port, tmp_path / "state", [])
              + controllers_toml([("low", low_port, 10, ""), ("high", high_port, 50, "")]))
    proxy = proxy_factory(config)
    add_bridge(ovs, "br0", "OpenFlow13", port)
    for log in (low_log, high_log):  # each sees its own group 1 and meter 1, and only those
        wait_until(lambda log=log: lines(log, "meters"), 15, f"{log.name} to list its meters")
        assert lines(log, "groups") == ["groups [1]"] and lines(log, "meters") == ["meters [1]"]
    assert bridge_ids(ovs, "groups") == [1, HIGH_GROUP]
    assert bridge_ids(ovs, "meters") == [1, HIGH_METER]

    def forwarded(in_port: int, out_port: int) -> None:
        capture = ovs.capture(f"br0-p{out_port}")
        frame = udp_frame("00:00:00:00:00:0a", "00:00:00:00:00:0b", "10.0.0.1", "10.0.0.2",
                          1000 + in_port, 2000, b"x")
        ovs.inject(f"br0-p{in_port}", frame)
        assert capture.wait_frames(1) == [frame]
        capture.close()

    forwarded(1, 2)  # each flow through its own controller's group
    forwarded(2, 3)

    # low reconnects and deletes "every" group and meter again: high's stay, with its flow.
    ovs.stop_process(APPS["low"])
    low_again = start_app(ovs, "low-again", low_port, "1:1:1:2")
    wait_until(lambda: lines(low_again, "meters"), 30, "low to reconnect and list its meters")
    assert bridge_ids(ovs, "groups") == [1, HIGH_GROUP]
    assert bridge_ids(ovs, "meters") == [1, HIGH_METER]
    forwarded(2, 3)
    forwarded(1, 2)

    # A new proxy finds the groups and meters on the bridge and knows whose they are: both
    # controllers' delete-all clear their own, so that their adds do not fail as duplicates.
    proxy.stop()
    proxy = proxy_factory(config)
    proxy.wait_log("2 groups and 2 meters on the bridge, meter limit 262144", timeout=20)
    for log in (low_again, high_log):
        wait_until(lambda log=log: len(lines(log, "meters")) == 2, 30,
                   f"{log.name} to list its meters again")
        assert lines(log, "groups") == ["groups [1]"] * 2
        assert lines(log, "error") == []
    assert lines(low_log, "error") == []
    assert bridge_ids(ovs, "groups") == [1, HIGH_GROUP]
    forwarded(1, 2)
    forwarded(2, 3)
    proxy.stop()
    assert "ids_refused" not in proxy.log_text()


def test_two_openflow15_controllers_keep_their_own_group_3(ovs, proxy_factory, tmp_path) -> None:
    """OpenFlow 1.5 group-mods (bucket ids, watch as a bucket property) are remapped too: two
    controllers both delete-all and add group 3 on a 1.5 bridge, and both groups stand."""
    script = Path(__file__).resolve().parent / "group15_controller.py"
    ports, logs = [], []
    for name in ("first", "second"):
        port = free_port()
        ovs.spawn(name, [sys.executable, str(script), "--listen", str(port)],
                  ready=lambda port=port: tcp_listening("127.0.0.1", port),
                  allowed_log_lines=[r"^barrier$"], timeout=20)
        ports.append(port)
        logs.append(ovs.directory / f"{name}.stderr")
    port = free_port()
    controllers = "".join(
        f'[[controllers]]\nname = "{name}"\ntarget = "tcp:127.0.0.1:{p}"\n'
        'protocols = ["OpenFlow15"]\n' for name, p in zip(("first", "second"), ports, strict=True))
    proxy_factory(proxy_config(port, tmp_path / "state", []) + controllers)
    add_bridge(ovs, "br0", "OpenFlow15", port)
    for log in logs:
        wait_until(lambda log=log: lines(log, "barrier"), 15, f"{log.name}: its barrier reply")
        assert lines(log, "error") == []
    dump = ovs.ofctl("-O", "OpenFlow15", "dump-groups", "br0")
    assert sorted(int(n) for n in re.findall(r"\bgroup_id=(\d+)", dump)) == [3, HIGH_GROUP + 2]
    assert dump.count("watch_port:1") == 2
