"""The running daemon: config in, listeners up, signals handled, clean shutdown.

SIGHUP re-reads the config file; a bad file is reported and the running config stays as it is
(the proxy never runs half-configured). Rules and miss_fallback apply at once, protocols and
timers to sessions that connect afterwards, listen targets, TLS and control_socket only on restart.
SIGTERM/SIGINT and the control socket's `exit` stop it. The control socket (control.py) runs its
commands on this loop; rule changes made there take the same path as a reload's. So does the
Prometheus exporter (metrics.py, when [metrics] is configured): it reads the proxy's counters at
scrape time, on this loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path

from .config import Config, ConfigError, TlsConfig, load_config
from .control import ControlServer, Dispatcher
from .metrics import MetricsServer, metrics_registry
from .northbound import Northbound
from .openflow.framing import VERSIONS_BY_NAME
from .proxy import Proxy
from .rules.model import FlowRule
from .rules.store import RuleChange, RuleStore
from .sessions.keepalive import SessionTiming
from .sessions.transport import SwitchServer

log = logging.getLogger(__name__)


def server_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS for bridges: our own key and certificate; bridges must present one signed by ca_cert."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.certificate, tls.private_key)
    context.load_verify_locations(tls.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = RuleStore()
        self.store.replace_origin("config", config.rules)
        self.proxy = Proxy(self.store, miss_fallback=config.proxy.miss_fallback)
        settings = config.proxy
        self.server = SwitchServer(
            list(settings.listen), _versions(config), _timing(config), self.proxy.handle_events,
            tls=server_tls_context(settings.tls) if settings.tls else None,
        )
        self.control = (ControlServer(settings.control_socket, Dispatcher(self))
                        if settings.control_socket else None)
        self.northbound = (Northbound(self.proxy, config.controllers,
                                      miss_timeout=settings.miss_timeout_ms / 1000,
                                      timing=_timing(config), flush_bridges=self.server.flush_all)
                           if config.controllers else None)
        if self.northbound is not None:
            self.server.after_read = self.northbound.flush_links
        metrics = config.metrics
        self.metrics = (MetricsServer(metrics.host, metrics.port,
                                      metrics_registry(self.proxy, self.northbound))
                        if metrics is not None else None)
        self._stopping = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Handlers first: a SIGHUP (systemctl reload) while starting must not kill the process.
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        Path(self.config.proxy.state_dir).mkdir(parents=True, exist_ok=True)
        if self.control is not None:
            # First: a busy control socket means another proxy runs here; fail before any
            # bridge connects to this one.
            await self.control.start()
        try:
            if self.metrics is not None:
                await self.metrics.start()  # a taken port, too, fails before bridges connect
            await self.server.start()
        except BaseException:
            if self.metrics is not None:
                await self.metrics.stop()
            if self.control is not None:
                await self.control.stop()
            raise
        northbound_task = (loop.create_task(self.northbound.run(), name="northbound")
                           if self.northbound is not None else None)
        log.info("ready: %d rules, %d controllers, listening on %s", len(self.store),
                 len(self.config.controllers), ", ".join(str(t) for t in self.config.proxy.listen))
        try:
            await self._stopping.wait()
        finally:
            if northbound_task is not None and self.northbound is not None:
                northbound_task.cancel()
                await self.northbound.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self.control is not None:
                await self.control.stop()
            if self.metrics is not None:
                await self.metrics.stop()
            await self.server.stop()
            log.info("stopped")

    def stop(self) -> None:
        log.info("stopping")
        self._stopping.set()

    def reload(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            log.warning("reload already in progress; ignoring SIGHUP")
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload(), name="reload")

    async def _reload(self) -> None:
        path = self.config.source_path
        try:
            # Parsing thousands of rules takes a while: keep the sessions' loop running meanwhile.
            new = await asyncio.to_thread(load_config, path)
        except (ConfigError, OSError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        old = self.config.proxy
        if (new.proxy.listen != old.listen or new.proxy.tls != old.tls
                or new.proxy.control_socket != old.control_socket):
            log.warning("listen targets, TLS settings and control_socket take effect on restart only")
        if new.metrics != self.config.metrics:
            log.warning("[metrics] changes take effect on restart only")
        if new.controllers != self.config.controllers or new.proxy.miss_timeout_ms != old.miss_timeout_ms:
            log.warning("[[controllers]] and miss_timeout_ms take effect on restart only")
        self.server.versions = _versions(new)
        self.server.timing = _timing(new)  # both for sessions that connect from now on
        change = self.store.replace_origin("config", new.rules)
        self.proxy.miss_fallback = new.proxy.miss_fallback
        self._apply(change)
        self.config = new
        log.info("reloaded %s: %d rules added, %d removed", path, len(change.added), len(change.removed))

    def _apply(self, change: RuleChange) -> None:
        """Bring the bridges' flow tables in line with a change already made to the store."""
        self.proxy.apply_rule_change(change)
        self.server.flush_all()

    # ---- what the control socket acts on (control.ControlTarget), on the loop thread

    def snapshot(self) -> dict[str, object]:
        return self.proxy.snapshot()

    def rules(self) -> list[tuple[int, FlowRule]]:
        return list(self.store.items())

    def add_rule(self, rule: FlowRule) -> int:
        rule_id = self.store.add(rule)
        self._apply(RuleChange(added=((rule_id, rule),), removed=()))
        log.info("rule %d added (origin %s%s): %s", rule_id, rule.origin,
                 f", bridge {rule.bridge}" if rule.bridge else "", rule.text)
        return rule_id

    def remove_rule(self, rule_id: int) -> FlowRule:
        rule = self.store.remove(rule_id)  # KeyError for an unknown id
        self._apply(RuleChange(added=(), removed=((rule_id, rule),)))
        log.info("rule %d deleted (origin %s): %s", rule_id, rule.origin, rule.text)
        return rule


def _versions(config: Config) -> frozenset[int]:
    return frozenset(VERSIONS_BY_NAME[name] for name in config.proxy.protocols)


def _timing(config: Config) -> SessionTiming:
    settings = config.proxy
    return SessionTiming(settings.hello_timeout, settings.echo_interval, settings.dead_interval)


async def run_daemon(config: Config) -> None:
    await Daemon(config).run()
