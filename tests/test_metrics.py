"""Prometheus metrics: the collector over a real Proxy (no sockets), the [metrics] config table,
the HTTP answers, and one exchange with the exporter on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ovs_sriov_proxy.config import ConfigError, ControllerConfig, MetricsConfig, parse_config
from ovs_sriov_proxy.metrics import MetricsServer, ProxyCollector, metrics_registry, respond
from ovs_sriov_proxy.northbound import Northbound
from ovs_sriov_proxy.openflow.framing import OFP13
from ovs_sriov_proxy.proxy import Bridge, Proxy
from ovs_sriov_proxy.rules.flowparse import parse_flow
from ovs_sriov_proxy.rules.store import RuleStore
from ovs_sriov_proxy.sessions.controller import State
from ovs_sriov_proxy.sessions.switch import SessionTiming, SwitchSession
from ovs_sriov_proxy.targets import parse_active

from .test_proxy_core import connected, miss
from .test_switch_session import handshake_13

P = "ovs_sriov_proxy_"
BR = {"bridge": "br-int", "datapath_id": "00000000000000ab"}  # what handshake_13 connects


def registry_of(proxy: Proxy, northbound: Northbound | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ProxyCollector(proxy, northbound))
    return registry


def only_bridge(proxy: Proxy) -> Bridge:
    (bridge,) = proxy.bridges.values()
    return bridge


# ---- the collector


def test_hits_misses_and_fallbacks_of_a_bridge() -> None:
    proxy, session = connected(["priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"])
    registry = registry_of(proxy)
    assert registry.get_sample_value(P + "packet_ins_total", BR) == 0
    miss(proxy, session)  # a hit: answered by the general path, the flow recorded
    miss(proxy, session)  # a hit on the fast path
    miss(proxy, session, in_port=7)  # no rule, no controllers: fallback drop
    value = registry.get_sample_value
    assert value(P + "packet_ins_total", BR) == 3
    assert value(P + "cache_hits_total", BR) == 2
    assert value(P + "miss_fallbacks_total", {**BR, "kind": "drop"}) == 1
    assert value(P + "miss_fallbacks_total", {**BR, "kind": "flood"}) == 0
    assert value(P + "installed_flows", BR) == 1
    assert value(P + "sessions") == 1
    assert value(P + "sessions_opened_total") == 1
    assert value(P + "rules", {"origin": "config"}) == 1
    # Without controllers, no controller metrics at all.
    assert value(P + "asked_controllers_total", BR) is None
    assert value(P + "controller_links_connected", {"controller": "c1"}) is None


def test_other_bridge_counters_are_events_by_name() -> None:
    proxy, _ = connected([])
    bridge = only_bridge(proxy)
    bridge.counters["errors"] += 2
    bridge.counters["narrowed_flows"] += 1
    events = {s.labels["event"]: s.value for s in samples(registry_of(proxy), P + "bridge_events")}
    assert events == {"errors": 2, "narrowed_flows": 1}


def test_a_closed_session_takes_its_series_with_it() -> None:
    proxy, session = connected([])
    proxy.handle_events(session, session.close("test"))
    registry = registry_of(proxy)
    assert registry.get_sample_value(P + "sessions") == 0
    assert registry.get_sample_value(P + "packet_ins_total", BR) is None


class FakeLink:
    """What Northbound makes per (bridge, controller): here never connecting by itself."""

    def __init__(self, name: str, *args: object, **kwargs: object) -> None:
        self.name = name
        self.session: SimpleNamespace | None = None
        self.connects = 0

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def flush(self) -> None:
        pass


def with_controllers(names: list[str]) -> tuple[Proxy, Northbound, Bridge]:
    store = RuleStore()
    store.replace_origin("config", [parse_flow("priority=1,udp actions=output:2")])
    proxy = Proxy(store)
    controllers = [ControllerConfig(n, parse_active(f"tcp:127.0.0.1:{6653 + i}"))
                   for i, n in enumerate(names)]
    northbound = Northbound(proxy, controllers, miss_timeout=0.2, timing=SessionTiming(),
                            link_factory=FakeLink)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    return proxy, northbound, only_bridge(proxy)


def test_controller_wins_silences_learning_links_and_reconnects() -> None:
    proxy, northbound, bridge = with_controllers(["c1", "c2"])
    counters = bridge.counters
    counters["asked_controllers"] += 5
    counters["won_by:c2"] += 3
    counters["controllers_silent"] += 2
    counters["learned"] += 1
    counters["not_learned"] += 1
    proxy.store.add(parse_flow("priority=5,tcp actions=output:1", bridge="br-int", origin="c2"))
    links = northbound.links[bridge.session]
    links["c1"].session = SimpleNamespace(state=State.READY)
    links["c1"].connects = 3
    links["c2"].session = SimpleNamespace(state=State.CLOSED)  # lost, reconnecting
    links["c2"].connects = 1

    value = registry_of(proxy, northbound).get_sample_value
    assert value(P + "asked_controllers_total", BR) == 5
    assert value(P + "controller_wins_total", {**BR, "controller": "c2"}) == 3
    assert value(P + "controller_wins_total", {**BR, "controller": "c1"}) == 0
    assert value(P + "controllers_silent_total", BR) == 2
    assert value(P + "learned_rules_total", BR) == 1
    assert value(P + "not_learned_flows_total", BR) == 1
    assert value(P + "controller_links_connected", {"controller": "c1"}) == 1
    assert value(P + "controller_links_connected", {"controller": "c2"}) == 0
    assert value(P + "controller_reconnects_total", {**BR, "controller": "c1"}) == 2
    assert value(P + "controller_reconnects_total", {**BR, "controller": "c2"}) == 0
    assert value(P + "rules", {"origin": "c2"}) == 1
    assert value(P + "rules", {"origin": "config"}) == 1
    assert value(P + "pending_misses") == 0
    # won_by:NAME never leaks into the generic events.
    assert samples(registry_of(proxy, northbound), P + "bridge_events") == []


def test_each_controllers_answer_latency_is_a_histogram() -> None:
    proxy, northbound, _ = with_controllers(["c1", "c2"])
    for seconds in (0.0002, 0.0002, 0.003, 7.0):
        northbound.answer_latency["c1"].observe(seconds)
    value = registry_of(proxy, northbound).get_sample_value
    name = P + "controller_answer_seconds"
    assert value(name + "_bucket", {"controller": "c1", "le": "0.0001"}) == 0
    assert value(name + "_bucket", {"controller": "c1", "le": "0.00025"}) == 2
    assert value(name + "_bucket", {"controller": "c1", "le": "0.005"}) == 3
    assert value(name + "_bucket", {"controller": "c1", "le": "2.5"}) == 3
    assert value(name + "_bucket", {"controller": "c1", "le": "+Inf"}) == 4
    assert value(name + "_count", {"controller": "c1"}) == 4
    assert abs(value(name + "_sum", {"controller": "c1"}) - 7.0034) < 1e-9
    assert value(name + "_count", {"controller": "c2"}) == 0  # a series from the start


def test_the_default_registry_also_has_process_metrics_and_a_scrape_is_cheap() -> None:
    proxy, session = connected([f"priority={i},udp,tp_dst={i} actions=output:2"
                                for i in range(1, 2001)])
    miss(proxy, session)
    registry = metrics_registry(proxy)
    text = respond(registry, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").split(b"\r\n\r\n", 1)[1]
    names = {family.name for family in text_string_to_metric_families(text.decode())}
    assert {P + "packet_ins", P + "cache_hits", P + "rules", "process_cpu_seconds"} <= names
    started = time.perf_counter()
    for _ in range(20):
        respond(registry, b"GET /metrics HTTP/1.1\r\n\r\n")
    per_scrape = (time.perf_counter() - started) / 20
    assert per_scrape < 0.05  # it holds the loop: must stay far below an echo interval


def samples(registry: CollectorRegistry, family: str) -> list:
    return [s for m in registry.collect() if m.name == family for s in m.samples]


# ---- the [metrics] table


@pytest.mark.parametrize("listen, expected", [
    ("127.0.0.1:9410", MetricsConfig("127.0.0.1", 9410)),
    ("0.0.0.0:1", MetricsConfig("0.0.0.0", 1)),
    ("[::1]:9410", MetricsConfig("::1", 9410)),
    ("[::]:65535", MetricsConfig("::", 65535)),
])
def test_metrics_listen_forms(listen: str, expected: MetricsConfig) -> None:
    config = parse_config(f'[metrics]\nlisten = "{listen}"\n')
    assert config.metrics == expected
    assert str(config.metrics) == listen


def test_metrics_are_off_without_the_table() -> None:
    assert parse_config("[proxy]\n").metrics is None


@pytest.mark.parametrize("text, message", [
    ('listen = "localhost:9410"', "'localhost' is not an IP address"),
    ('listen = "::1:9410"', "brackets go around IPv6 addresses, and only those"),
    ('listen = "[127.0.0.1]:9410"', "brackets go around IPv6 addresses, and only those"),
    ('listen = "[::1]9410"', "is not HOST:PORT"),
    ('listen = "127.0.0.1"', "is not HOST:PORT"),
    ('listen = "127.0.0.1:0"', "port '0' is not in 1..65535"),
    ('listen = "127.0.0.1:65536"', "port '65536' is not in 1..65535"),
    ('listen = "127.0.0.1:http"', "port 'http' is not in 1..65535"),
    ("listen = 9410", 'expected a string "HOST:PORT", got integer 9410'),
])
def test_bad_metrics_listen_is_located(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[proxy]\n\n[metrics]\n{text}\n", "proxy.toml")
    assert str(caught.value).startswith("proxy.toml:4: metrics.listen: ")
    assert message in str(caught.value)


def test_metrics_table_rejects_unknown_keys_and_needs_listen() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[metrics]\nlisten = "127.0.0.1:9410"\npath = "/m"\n', "p.toml")
    assert str(caught.value) == "p.toml:3: metrics.path: unknown key (expected one of: listen)"
    with pytest.raises(ConfigError) as caught:
        parse_config("[metrics]\n", "p.toml")
    assert str(caught.value) == "p.toml:1: metrics.listen: required key is missing"


# ---- HTTP


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize("head, status", [
    (b"GET /metrics HTTP/1.1\r\n\r\n", 200),
    (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", 200),
    (b"HEAD /metrics HTTP/1.1\r\n\r\n", 200),
    (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
    (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"GET /metrics\r\n\r\n", 400),
    (b"\x16\x03\x01garbage\r\n\r\n", 400),
])
def test_http_answers(head: bytes, status: int) -> None:
    proxy, _ = connected([])
    response = respond(registry_of(proxy), head)
    assert status_of(response) == status
    assert b"\r\nConnection: close\r\n" in response
    header, _, body = response.partition(b"\r\n\r\n")
    if head.startswith(b"HEAD"):
        assert body == b"" and b"Content-Length: 0" not in header
    elif status == 200:
        assert P.encode() + b"sessions 1.0" in body


def test_openmetrics_is_negotiated() -> None:
    proxy, _ = connected([])
    response = respond(registry_of(proxy), b"GET /metrics HTTP/1.1\r\n"
                       b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    assert b"Content-Type: application/openmetrics-text" in response
    assert response.endswith(b"# EOF\n")


def test_a_collector_bug_is_a_500_not_a_dead_exporter(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def collect(self) -> list:
            raise RuntimeError("boom")

    registry = CollectorRegistry()
    registry.register(Broken())
    assert status_of(respond(registry, b"GET /metrics HTTP/1.1\r\n\r\n")) == 500
    assert "internal error while collecting" in caplog.text


def test_exporter_on_loopback_serves_and_survives_bad_clients() -> None:
    async def scenario() -> None:
        proxy, _ = connected([])
        server = MetricsServer("127.0.0.1", 0, registry_of(proxy))
        await server.start()
        try:
            # A client that sends garbage with no end of head, then goes away.
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"x" * 100)
            writer.close()
            # A head larger than the limit is refused with 400.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
            assert status_of(await reader.read()) == 400
            writer.close()
            # A scraper still gets its answer.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = await reader.read()
            writer.close()
            assert status_of(response) == 200 and P.encode() + b"sessions 1.0" in response
            # One that hangs on without sending does not delay stop().
            _, idle = await asyncio.open_connection("127.0.0.1", server.port)
        finally:
            await asyncio.wait_for(server.stop(), 2)
        idle.close()

    asyncio.run(scenario())


def test_the_rules_backup_reports_what_is_not_committed_yet(tmp_path) -> None:
    from ovs_sriov_proxy.rules.backup import SqliteBackup

    backup = SqliteBackup(tmp_path / "rules.db", flush_interval=3600)  # commits only on flush
    backup.load()
    store = RuleStore(listener=backup)
    store.add(parse_flow("priority=1 actions=drop"))
    store.add(parse_flow("priority=2 actions=drop"))
    registry = CollectorRegistry()
    registry.register(ProxyCollector(Proxy(store), backup=backup))
    assert registry.get_sample_value(P + "backup_pending_changes") == 2
    assert registry.get_sample_value(P + "backup_commit_failures_total") == 0
    backup.start()
    assert backup.flush(5)
    assert registry.get_sample_value(P + "backup_pending_changes") == 0
    backup.close(5)
