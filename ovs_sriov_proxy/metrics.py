"""Prometheus metrics: the proxy's own counters, read when Prometheus scrapes, served over HTTP.

Nothing is counted here. The proxy already counts what matters where it happens: per-miss events
as plain ints on the Bridge (`packet_ins`, `hits`), rarer events by name in `Bridge.counters`,
controller connections in `ControllerLink.connects`. `ProxyCollector` turns that state into metric
families at scrape time, so the exporter adds no work at all to the miss path and costs nothing
between scrapes.

`/metrics` is served by a page of asyncio (`MetricsServer`) on the daemon's own event loop rather
than by prometheus_client's threaded HTTP server. `collect()` therefore runs on the loop thread,
between OpenFlow messages, like the control socket's commands: it reads the proxy's dicts
directly, with no lock, no snapshot handed across threads, and no "dict changed size during
iteration" from a miss arriving mid-scrape. The price is that a scrape holds the loop for its
duration, O(bridges x controllers + rules): measured at 0.5 ms with 1,000 rules and 2 ms with
10,000 (one bridge), most of the former being the process metrics read from /proc; once per
scrape interval. prometheus_client's server would instead need every read handed to the loop
(call_soon_threadsafe and a future with a timeout) for the same numbers.

Per-bridge series carry `bridge` and `datapath_id` labels; they appear when a bridge connects
and end when its session does (Prometheus treats the next session's counters, starting again
from 0, as a counter reset).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from .config import MISS_FALLBACKS
from .sessions.controller import State

if TYPE_CHECKING:
    from .northbound import Northbound
    from .ovsdb.manager import OvsdbManager
    from .proxy import Bridge, Proxy
    from .rules.backup import RuleBackup

__all__ = ["PREFIX", "MetricsServer", "ProxyCollector", "metrics_registry", "respond"]

log = logging.getLogger(__name__)

PREFIX = "ovs_sriov_proxy_"
BRIDGE_LABELS = ["bridge", "datapath_id"]
WON_BY = "won_by:"
# Bridge.counters names with a metric of their own; every other name goes to bridge_events_total.
_OWN_METRIC = {f"fallback_{kind}" for kind in MISS_FALLBACKS} | {
    "asked_controllers", "controllers_silent", "learned", "not_learned"}

MAX_REQUEST_HEAD = 16 * 1024
REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request and take the answer


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, labels=labels)


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=labels or [])


class ProxyCollector:
    """The proxy's state as Prometheus metric families; call `collect` on the loop thread only."""

    def __init__(self, proxy: Proxy, northbound: Northbound | None = None,
                 ovsdb: OvsdbManager | None = None, backup: RuleBackup | None = None) -> None:
        self.ovsdb = ovsdb
        self.backup = backup
        self.proxy = proxy
        self.northbound = northbound

    def collect(self) -> Iterator[Metric]:
        proxy, northbound = self.proxy, self.northbound
        controllers = [c.name for c in northbound.controllers] if northbound is not None else []

        sessions = _gauge("sessions", "Bridges connected (OpenFlow sessions past the handshake).")
        sessions.add_metric([], len(proxy.bridges))
        yield sessions
        opened = _counter("sessions_opened", "Bridge sessions that completed the handshake.", [])
        opened.add_metric([], proxy.counters["bridges_connected"])
        yield opened

        packet_ins = _counter("packet_ins", "PACKET_INs received from the bridge.", BRIDGE_LABELS)
        hits = _counter("cache_hits", "Misses answered from the proxy's rules.", BRIDGE_LABELS)
        fallbacks = _counter("miss_fallbacks", "Misses nobody answered, by the miss_fallback "
                             "applied (drop, flood, normal).", [*BRIDGE_LABELS, "kind"])
        asked = _counter("asked_controllers", "Misses sent to the upstream controllers.",
                         BRIDGE_LABELS)
        wins = _counter("controller_wins", "Misses decided by this controller's answer.",
                        [*BRIDGE_LABELS, "controller"])
        silent = _counter("controllers_silent", "Misses sent up that no controller answered "
                          "within miss_timeout_ms.", BRIDGE_LABELS)
        learned = _counter("learned_rules", "Winning FLOW_MODs learned as rules of the proxy.",
                           BRIDGE_LABELS)
        not_learned = _counter("not_learned_flows", "Winning FLOW_MODs installed but not learned "
                               "(multi-table or not apply-actions).", BRIDGE_LABELS)
        events = _counter("bridge_events", "Other per-bridge events, by the name the logs and "
                          "proxy/show use (errors, narrowed_flows, flows_removed, ...).",
                          [*BRIDGE_LABELS, "event"])
        installed = _gauge("installed_flows", "Flows the proxy has installed on the bridge from "
                           "its rules.", BRIDGE_LABELS)
        for bridge in proxy.bridges.values():
            labels = [bridge.name, f"{bridge.datapath_id:016x}"]
            counted = bridge.counters
            packet_ins.add_metric(labels, bridge.packet_ins)
            hits.add_metric(labels, bridge.hits)
            for kind in MISS_FALLBACKS:
                fallbacks.add_metric([*labels, kind], counted[f"fallback_{kind}"])
            installed.add_metric(labels, sum(len(f) for f in bridge.installed.values()))
            if northbound is not None:
                asked.add_metric(labels, counted["asked_controllers"])
                silent.add_metric(labels, counted["controllers_silent"])
                learned.add_metric(labels, counted["learned"])
                not_learned.add_metric(labels, counted["not_learned"])
            for controller, won in _wins(bridge, controllers).items():
                wins.add_metric([*labels, controller], won)
            for name, value in sorted(counted.items()):
                if name not in _OWN_METRIC and not name.startswith(WON_BY):
                    events.add_metric([*labels, name], value)
        yield from (packet_ins, hits, fallbacks, installed, events)
        if northbound is not None:
            yield from (asked, wins, silent, learned, not_learned)

        rules = _gauge("rules", "Rules in the proxy's store, by origin (config, cli, or the "
                       "controller a rule was learned from).", ["origin"])
        by_origin = Counter(rule.origin for _, rule in proxy.store.items())
        for origin, count in sorted(by_origin.items()):
            rules.add_metric([origin], count)
        yield rules

        if northbound is not None:
            yield from _controller_links(northbound, controllers)

        if self.ovsdb is not None:
            yield from _ovsdb(self.ovsdb)

        if self.backup is not None:
            pending = _gauge("backup_pending_changes", "Rule changes not yet committed to the "
                             "rules backup (acknowledged once committed).")
            pending.add_metric([], self.backup.pending())
            failures = _counter("backup_commit_failures", "Commits of the rules backup that "
                                "failed (the changes are kept and retried).", [])
            failures.add_metric([], self.backup.failures)
            yield from (pending, failures)


def _ovsdb(manager: OvsdbManager) -> Iterator[Metric]:
    """[ovsdb]: the connection, the attached bridges, hardware offload and offloaded flows."""
    connected = _gauge("ovsdb_connected", "1 while the proxy holds a copy of OVSDB that is up "
                       "to date (connected and monitoring), else 0.")
    connected.add_metric([], int(manager.connected))
    connects = _counter("ovsdb_connects", "Times the proxy got a whole copy of OVSDB "
                        "(the first connection and every reconnection).", [])
    connects.add_metric([], manager.connects)
    attached = _gauge("bridge_attached", "1 while the bridge is in the proxy's settings "
                      "(controller, fail_mode, protocols), 0 while it is being attached or "
                      "waited for.", ["bridge"])
    offload = _gauge("hw_offload", "1 when other_config:hw-offload is true for the bridge's "
                     "Open vSwitch; tc_policy as set (empty if unset).", ["bridge", "tc_policy"])
    offloaded = _gauge("offloaded_flows", "Datapath flows offloaded, by the bridge of their "
                       "input port (ovs-appctl dpctl/dump-flows type=offloaded).", ["bridge"])
    for bridge in manager.report()["bridges"]:
        if bridge["status"] in ("attached", "attaching", "waiting"):
            attached.add_metric([bridge["name"]], int(bridge["status"] == "attached"))
        if bridge["present"] and bridge["hw_offload"] is not None:
            offload.add_metric([bridge["name"], bridge["tc_policy"] or ""], int(bridge["hw_offload"]))
        if bridge["offloaded_flows"] is not None:
            offloaded.add_metric([bridge["name"]], bridge["offloaded_flows"])
    yield from (connected, connects, attached, offload, offloaded)


def _wins(bridge: Bridge, controllers: list[str]) -> dict[str, int]:
    """Wins by controller: every configured one (0 until it wins), and any other name counted."""
    wins = dict.fromkeys(controllers, 0)
    for name, value in bridge.counters.items():
        if name.startswith(WON_BY):
            wins[name[len(WON_BY):]] = value
    return wins


def _controller_links(northbound: Northbound, controllers: list[str]) -> Iterator[Metric]:
    connected = _gauge("controller_links_connected", "Links to this controller past the "
                       "OpenFlow handshake (one link per connected bridge).", ["controller"])
    reconnects = _counter("controller_reconnects", "Times the link from this bridge to this "
                          "controller connected again after its first connection.",
                          [*BRIDGE_LABELS, "controller"])
    up = dict.fromkeys(controllers, 0)
    bridges = {bridge.session: bridge for bridge in northbound.proxy.bridges.values()}
    for session, links in northbound.links.items():
        bridge = bridges.get(session)
        for name, link in links.items():
            controller_session = link.session
            if controller_session is not None and controller_session.state is State.READY:
                up[name] = up.get(name, 0) + 1
            if bridge is not None:
                reconnects.add_metric([bridge.name, f"{bridge.datapath_id:016x}", name],
                                      max(link.connects - 1, 0))
    for name, count in up.items():
        connected.add_metric([name], count)
    pending = _gauge("pending_misses", "Misses sent to controllers and not decided yet.")
    pending.add_metric([], len(northbound.resolver))
    latency = HistogramMetricFamily(
        PREFIX + "controller_answer_seconds", "Time from a miss's PACKET_IN sent to this "
        "controller to its answer reaching the proxy (answers after the decision count too).",
        labels=["controller"])
    for name, histogram in northbound.answer_latency.items():
        cumulative, buckets = 0, []
        for bound, count in zip((*histogram.BOUNDS, math.inf), histogram.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        latency.add_metric([name], buckets, histogram.total)
    yield from (connected, reconnects, pending, latency)


def metrics_registry(proxy: Proxy, northbound: Northbound | None = None,
                     ovsdb: OvsdbManager | None = None,
                     backup: RuleBackup | None = None) -> CollectorRegistry:
    """A private registry (not prometheus_client's global one): the proxy's metrics and the
    process's own (CPU seconds, memory, open files)."""
    registry = CollectorRegistry()
    registry.register(ProxyCollector(proxy, northbound, ovsdb, backup))
    ProcessCollector(registry=registry)
    return registry


# --------------------------------------------------------------------------------------------
# HTTP


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error"}


def respond(registry: CollectorRegistry, head: bytes) -> bytes:
    """The whole HTTP response to one request head (request line and headers, up to the blank
    line). Only `GET /metrics` (and HEAD) is served; the query string is ignored."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response(400, b"bad request line\n")
    method, target, _ = parts
    if target.partition("?")[0] != "/metrics":
        return _response(404, b"the metrics are at /metrics\n")
    if method not in ("GET", "HEAD"):
        return _response(405, b"only GET and HEAD\n", [("Allow", "GET, HEAD")])
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    encoder, content_type = choose_encoder(accept)
    try:
        body = encoder(registry)
    except Exception:  # a bug in a collector: answer 500, keep serving, and say so loudly
        log.exception("metrics: internal error while collecting")
        return _response(500, b"internal error while collecting metrics\n")
    return _response(200, body, [("Content-Type", content_type)], with_body=method == "GET")


def _response(status: int, body: bytes, headers: list[tuple[str, str]] | None = None, *,
              with_body: bool = True) -> bytes:
    fields = headers or [("Content-Type", "text/plain; charset=utf-8")]
    head = [f"HTTP/1.1 {status} {_REASONS[status]}", *(f"{k}: {v}" for k, v in fields),
            f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(head).encode("latin-1") + (body if with_body else b"")


class MetricsServer:
    """HTTP/1.x on the daemon's loop, one request per connection (Connection: close)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.host = host
        self.port = port  # 0 picks a free port; the bound one is here after start()
        self.registry = registry
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=MAX_REQUEST_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics: serving %s", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):  # a scraper that hangs on must not delay shutdown
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            writer.write(respond(self.registry, head))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            writer.write(_response(400, b"request head too large\n"))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            # The client's problem (gone, or too slow): it costs that connection only.
            log.debug("metrics: client %s: %r", writer.get_extra_info("peername"), exc)
        finally:
            self._writers.discard(writer)
            writer.close()
