"""The running daemon: config in, listeners up, signals handled, clean shutdown.

SIGHUP re-reads the config file; a bad file is reported and the running config stays as it is
(the proxy never runs half-configured). Rules and miss_fallback apply at once, protocols and
timers to sessions that connect afterwards, listen targets, TLS and control_socket only on restart.
SIGTERM/SIGINT and the control socket's `exit` stop it. The control socket (control.py) runs its
commands on this loop; rule changes made there take the same path as a reload's. So does the
Prometheus exporter (metrics.py, when [metrics] is configured): it reads the proxy's counters at
scrape time, on this loop. With [ovsdb], the OVSDB manager (ovsdb/manager.py) attaches bridges
once the proxy listens; its IDL runs in a thread of its own and hands states to this loop, and
the rule changes it makes (purges, VM rules) take the same path as the control socket's.

The rules backup (rules/backup.py) is read before anything listens, so bridges that connect
find every rule of the previous run under its old id (and the proxy recognises the flows that
run left on them, see Proxy's reconcile). Expiry of rules with a lifetime (learned rules' hard
timeouts, retain policies) is the daemon's: a once-a-tick sweep of the store, in wall-clock
time because expiries are stored and outlive the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import ssl
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import POLICY_PRIORITY, Config, ConfigError, TlsConfig, load_config
from .control import ControlServer, Dispatcher
from .metrics import MetricsServer, metrics_registry
from .northbound import Northbound
from .openflow.framing import VERSIONS_BY_NAME
from .policies import policy_rules
from .proxy import Proxy
from .rules import clock
from .rules.backup import RuleBackup, SqliteBackup
from .rules.model import POLICY_ORIGIN, FlowRule
from .rules.records import RuleRecord
from .rules.store import RuleChange, RuleStore, is_learned
from .sessions.controller import State as ControllerState
from .sessions.keepalive import SessionTiming
from .sessions.transport import SwitchServer

if TYPE_CHECKING:
    from .ovsdb.manager import OvsdbManager

log = logging.getLogger(__name__)

EXPIRY_TICK = 0.25  # seconds between sweeps for expired rules (timeouts are whole seconds)
BACKUP_CLOSE_TIMEOUT = 10.0


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
        self.backup: RuleBackup | None = None
        if config.backup.enabled:
            self.backup = SqliteBackup(config.backup_path,
                                       flush_interval=config.backup.flush_interval_ms / 1000)
            self._restore(self.backup)
        self.store.replace_origin("config", config.rules)
        self._enforce_policies_without_tags(config)
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
                                      timing=_timing(config), flush_bridges=self.server.flush_all,
                                      priority_bands=settings.priority_bands)
                           if config.controllers else None)
        if self.northbound is not None:
            self.server.after_read = self.northbound.flush_links
        self.ovsdb: OvsdbManager | None = None
        if config.ovsdb is not None:
            from .ovsdb.manager import OvsdbManager  # ovsdbapp only when [ovsdb] is configured

            self.ovsdb = OvsdbManager(config.ovsdb, config.proxy, config.vm_rules, self,
                                      policies=config.policies)
        metrics = config.metrics
        self.metrics = (MetricsServer(metrics.host, metrics.port,
                                      metrics_registry(self.proxy, self.northbound, self.ovsdb,
                                                       self.backup))
                        if metrics is not None else None)
        self._stopping = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None

    def _enforce_policies_without_tags(self, config: Config) -> None:
        """Policies that need no tags hold from the start. With [ovsdb], the manager makes the
        policy rules match the tags once it has read them; until then the backup's stand."""
        if config.policies:
            tied = sum(1 for _, rule in self.store.items()
                       if rule.priority == POLICY_PRIORITY and not rule.pinned)
            if tied:
                log.warning("%d rules of priority %d (made before [[policies]] existed) tie with "
                            "the policies: delete them (rules list shows them)", tied,
                            POLICY_PRIORITY)
        untagged = policy_rules(config.policies, None)
        if self.config.ovsdb is None:
            self.store.replace_origin(POLICY_ORIGIN, untagged)
            return
        for rule in untagged:
            if self.store.find(rule) is None:
                self.store.add(rule)

    def _restore(self, backup: RuleBackup) -> None:
        path = self.config.backup_path
        # A million restored rules are millions of objects: the cyclic GC would scan them over
        # and over while they are built (it tripled the time), and later in every full
        # collection on the miss path. None of them is garbage, so: off, then frozen.
        gc.disable()
        try:
            result = backup.load()  # BackupError: unusable (e.g. a newer schema); cli says so
            self.store.restore_many(result.records)
            self.store.reserve_ids(result.next_id)
        finally:
            gc.enable()
            gc.freeze()
        if result.problem is not None:
            log.error("rules backup %s was unreadable (%s); the file is kept as %s; %d rules "
                      "recovered from it%s, starting with those and the configured rules",
                      path, result.problem, result.set_aside, len(result.records),
                      f", {result.unreadable_rows} rows were damaged" if result.unreadable_rows
                      else "")
        elif result.unreadable_rows:
            log.error("rules backup %s: %d rules could not be read back and were skipped "
                      "(the rows stay in the file)", path, result.unreadable_rows)
        self.store.listener = backup  # from here on every change is backed up
        configured = {c.name for c in self.config.controllers}
        orphans = Counter(rule.origin for _, rule in self.store.items()
                          if is_learned(rule) and rule.origin not in configured)
        for origin, count in sorted(orphans.items()):
            log.warning("%d restored rules were learned from %r, which is no longer configured: "
                        "they answer until their own timeouts (rules del ID removes one)",
                        count, origin)
        expired = self.store.expire(clock.now())
        log.info("rules backup %s: %d rules restored (%d had expired while the proxy was down)",
                 path, len(result.records) - len(expired.removed), len(expired.removed))

    def _follow_clock_step(self) -> None:
        """The system clock was stepped (NTP, date -s): lifetimes move with it (rules/clock.py)."""
        if abs(clock.drift()) <= clock.STEP_SECONDS:
            return
        step = clock.reanchor()
        moved = self.store.shift_times(step)
        log.warning("the system clock stepped by %+.1f s; the %d rules with a lifetime keep the "
                    "time they had left", step, moved)

    async def _expire_rules(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK)
            try:
                self._follow_clock_step()
                next_expiry = self.store.next_expiry()
                now = clock.now()
                if next_expiry is not None and next_expiry <= now:
                    change = self.store.expire(now)
                    if change.removed:
                        log.debug("%d rules expired", len(change.removed))
                        self._apply(change)
            except Exception:  # one bad sweep must not end every later expiry
                log.exception("internal error while expiring rules")

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
        if self.backup is not None:
            self.backup.start()
        northbound_task = (loop.create_task(self.northbound.run(), name="northbound")
                           if self.northbound is not None else None)
        expiry_task = loop.create_task(self._expire_rules(), name="rule-expiry")
        try:
            if self.ovsdb is not None:
                await self.ovsdb.start()  # bridges are attached once the proxy listens
            log.info("ready: %d rules, %d controllers, listening on %s", len(self.store),
                     len(self.config.controllers),
                     ", ".join(str(t) for t in self.config.proxy.listen))
            await self._stopping.wait()
        finally:
            expiry_task.cancel()
            if self.ovsdb is not None:
                await self.ovsdb.stop()  # attached bridges stay attached (fail_mode keeps flows)
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
            if self.backup is not None:
                await asyncio.to_thread(self.backup.close, BACKUP_CLOSE_TIMEOUT)
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
        if new.backup_path != self.config.backup_path or new.backup != self.config.backup:
            log.warning("[backup] changes take effect on restart only")
        if new.ovsdb != self.config.ovsdb:
            log.warning("[ovsdb] changes take effect on restart only (attach and detach work at "
                        "run time)")
        if self.ovsdb is not None:
            self.ovsdb.reload(new.vm_rules, new.policies)
        else:
            self.replace_rules(POLICY_ORIGIN, policy_rules(new.policies, None))
        if (new.controllers != self.config.controllers or new.proxy.miss_timeout_ms != old.miss_timeout_ms
                or new.proxy.priority_bands != old.priority_bands):
            log.warning("[[controllers]], miss_timeout_ms and priority_bands take effect on restart only")
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
        snapshot = self.proxy.snapshot()
        backup = self.backup
        if backup is not None:
            snapshot["backup"] = {"path": str(self.config.backup_path), "pending": backup.pending(),
                                  "failures": backup.failures, "last_error": backup.last_error}
        if self.ovsdb is not None:
            snapshot["ovsdb"] = self.ovsdb.report()
        return snapshot

    def rules(self) -> list[tuple[int, FlowRule]]:
        return list(self.store.items())

    def replace_rules(self, origin: str, rules: Iterable[FlowRule]) -> RuleChange:
        """Make one origin's rules exactly `rules` (the VM-scoped rules, from OVSDB)."""
        change = self.store.replace_origin(origin, rules)
        if change.added or change.removed:
            self._apply(change)
        return change

    def set_ports_by_mac(self, ports: dict[str, dict[int, tuple[int, ...]]]) -> None:
        self.proxy.ports_by_mac = ports

    def attach(self, bridge: str) -> str:
        """Attach a bridge through OVSDB; its status ("attached", "attaching", "waiting")."""
        if self.ovsdb is None:
            raise LookupError("no [ovsdb] table in the config: the proxy does not manage bridges")
        return self.ovsdb.attach(bridge)

    def detach(self, bridge: str) -> str | None:
        """Detach a bridge, restoring its settings; None if it was not attached."""
        if self.ovsdb is None:
            raise LookupError("no [ovsdb] table in the config: the proxy does not manage bridges")
        return self.ovsdb.detach(bridge)

    def controllers(self) -> dict[str, object]:
        """The upstream controllers and, per bridge, the state of the link to each."""
        return _controller_links(self.config, self.northbound)

    def records(self, after: int = 0, limit: int | None = None) -> list[RuleRecord]:
        """Rules with ids above `after`, in id order, at most `limit` of them."""
        ids = self.store.ids_after(after, limit)
        return [RuleRecord(rule_id, rule, self.store.meta(rule_id))
                for rule_id in ids if (rule := self.store.get(rule_id)) is not None]

    def is_backed_up(self, rule_id: int) -> bool | None:
        """Whether the backup has committed the rule's current state (None: no backup)."""
        return None if self.backup is None else self.backup.is_acknowledged(rule_id)

    def import_records(self, records: list[RuleRecord]) -> tuple[int, int]:
        """Add imported rules under new ids; (added, already present). Expired ones are skipped."""
        now = clock.now()
        added: list[tuple[int, FlowRule]] = []
        present = 0
        for record in records:
            rule = record.rule
            if rule.origin == POLICY_ORIGIN or (rule.priority == POLICY_PRIORITY
                                                and self.config.policies):
                present += 1  # this host's own policies and tags decide: never imported
                continue
            if rule.origin == "config":  # this host's config file owns origin "config"
                rule = dataclasses.replace(rule, origin="import")
            expires_at = record.meta.expires_at
            if self.store.find(rule) is not None or self.store.find(record.rule) is not None or (
                    expires_at is not None and expires_at <= now):
                present += 1
                continue
            rule_id = self.store.add(rule, now=record.meta.inserted_at, expires_at=expires_at)
            added.append((rule_id, rule))
        if added:
            self._apply(RuleChange(added=tuple(added), removed=()))
            log.info("imported %d rules (%d skipped: present or expired)", len(added), present)
        return len(added), present

    def add_rule(self, rule: FlowRule) -> int:
        if rule.priority == POLICY_PRIORITY and self.config.policies:
            raise PermissionError(f"priority {POLICY_PRIORITY} is reserved for [[policies]]; "
                                  f"use {POLICY_PRIORITY - 1} or less")
        rule_id = self.store.add(rule)
        self._apply(RuleChange(added=((rule_id, rule),), removed=()))
        log.info("rule %d added (origin %s%s): %s", rule_id, rule.origin,
                 f", bridge {rule.bridge}" if rule.bridge else "", rule.text)
        return rule_id

    def remove_rule(self, rule_id: int) -> FlowRule:
        existing = self.store.get(rule_id)
        if existing is not None and existing.pinned:
            raise PermissionError(f"rule {rule_id} enforces a policy: change [[policies]] or the "
                                  "ports' policy-tags instead")
        rule = self.store.remove(rule_id)  # KeyError for an unknown id
        self._apply(RuleChange(added=(), removed=((rule_id, rule),)))
        log.info("rule %d deleted (origin %s): %s", rule_id, rule.origin, rule.text)
        return rule


def _controller_links(config: Config, northbound: Northbound | None) -> dict[str, object]:
    """proxy/controllers: each configured controller with its link from every connected bridge.

    A link is "connected" past the OpenFlow handshake, "handshake" while it is under way, and
    "connecting" while the link waits to connect again (the controller is away).
    """
    bridges = {} if northbound is None else {b.session: b for b in northbound.proxy.bridges.values()}
    controllers = []
    for controller in config.controllers:
        links = []
        for session, by_name in (northbound.links.items() if northbound is not None else ()):
            bridge, link = bridges.get(session), by_name.get(controller.name)
            if bridge is None or link is None:
                continue
            upstream = link.session
            state = ("connecting" if upstream is None or upstream.state is ControllerState.CLOSED
                     else "connected" if upstream.state is ControllerState.READY else "handshake")
            links.append({"bridge": bridge.name, "datapath_id": f"{bridge.datapath_id:016x}",
                          "state": state, "version": bridge.version,
                          "connects": link.connects})
        controllers.append({"name": controller.name, "target": str(controller.target),
                            "priority": controller.priority,
                            "links": sorted(links, key=lambda link: str(link["bridge"]))})
    return {"controllers": controllers}


def _versions(config: Config) -> frozenset[int]:
    return frozenset(VERSIONS_BY_NAME[name] for name in config.proxy.protocols)


def _timing(config: Config) -> SessionTiming:
    settings = config.proxy
    return SessionTiming(settings.hello_timeout, settings.echo_interval, settings.dead_interval)


async def run_daemon(config: Config) -> None:
    await Daemon(config).run()
