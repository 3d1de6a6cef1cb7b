"""Prometheus metrics of a real proxy process, scraped over HTTP while it serves a real bridge."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from test_core import add_bridge, proxy_config, sip  # integration/ is on sys.path

from ovs_sriov_proxy.sandbox import free_port, udp_frame, wait_until

P = "ovs_sriov_proxy_"
BR0 = {"bridge": "br0", "datapath_id": "0000000000000001"}  # add_bridge's default dpid


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return samples.get((P + name, frozenset(labels.items())))


def metrics_config(port: int, metrics_port: int, tmp_path, rules: list[str]) -> str:
    return (proxy_config(port, tmp_path / "state", rules)
            + f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')


def test_scraped_counters_follow_a_rule_hit(ovs, proxy_factory, tmp_path) -> None:
    port, metrics_port = free_port(), free_port()
    proxy_factory(metrics_config(port, metrics_port, tmp_path,
                                 ["priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"]))
    before = wait_until(lambda: scrape(metrics_port), 10, "the exporter to answer")
    assert value(before, "sessions") == 0
    assert value(before, "rules", origin="config") == 1
    add_bridge(ovs, "br0", "OpenFlow13", port)
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", sip(5060))
    out2.wait_frames(1)
    after = wait_until(lambda: (s := scrape(metrics_port))
                       and (value(s, "installed_flows", **BR0) or 0) >= 1 and s, 5,
                       "the hit and its flow in the metrics")
    assert value(after, "sessions") == 1
    assert value(after, "packet_ins_total", **BR0) >= 1
    assert value(after, "cache_hits_total", **BR0) >= 1
    assert value(after, "miss_fallbacks_total", **BR0, kind="drop") == 0
    assert value(after, "rules", origin="config") == 1
    assert ("process_cpu_seconds_total", frozenset()) in after  # the process's own metrics
    # Anything but GET /metrics is refused, and the exporter keeps serving.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/", timeout=5)
        raise AssertionError("/ answered")
    except urllib.error.HTTPError as error:
        assert error.code == 404
    assert value(scrape(metrics_port), "sessions") == 1


def test_controller_links_and_wins_are_scraped(ovs, proxy_factory, tmp_path) -> None:
    controller_port = free_port()
    ovs.start_testcontroller(controller_port, protocols=("OpenFlow13",))
    port, metrics_port = free_port(), free_port()
    config = metrics_config(port, metrics_port, tmp_path, [])
    config += f'[[controllers]]\nname = "tc"\ntarget = "tcp:127.0.0.1:{controller_port}"\n'
    proxy = proxy_factory(config)
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller tc connected")
    linked = scrape(metrics_port)
    assert value(linked, "controller_links_connected", controller="tc") == 1
    assert value(linked, "controller_reconnects_total", **BR0, controller="tc") == 0
    out2 = ovs.capture("br0-p2")
    # No rule: asked of the learning switch, which floods it (a PACKET_OUT: it wins the miss).
    frame = udp_frame("00:00:00:00:00:0a", "00:00:00:00:00:0b", "10.0.0.1", "10.0.0.2", 1, 2)
    ovs.inject("br0-p1", frame)
    out2.wait_frames(1)
    won = wait_until(lambda: (s := scrape(metrics_port))
                     and value(s, "controller_wins_total", **BR0, controller="tc") and s, 5,
                     "the controller's win in the metrics")
    assert value(won, "asked_controllers_total", **BR0) >= 1
    assert value(won, "cache_hits_total", **BR0) == 0
    assert value(won, "controllers_silent_total", **BR0) == 0
    # The real controller's answer was timed: at least one answer, under the miss timeout.
    assert value(won, "controller_answer_seconds_count", controller="tc") >= 1
    assert 0 < value(won, "controller_answer_seconds_sum", controller="tc") < 1.0


def test_a_taken_metrics_port_stops_the_proxy_before_bridges_connect(proxy_factory,
                                                                     tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        port = free_port()
        proxy = proxy_factory(metrics_config(port, metrics_port, tmp_path, []), wait=False)
        wait_until(lambda: proxy.returncode is not None, 20, "the proxy to exit")
    assert proxy.returncode == 1
    assert "error:" in proxy.log_text() and "address already in use" in proxy.log_text()
