"""The asyncio side of OVSDB management: states in from the IDL thread, decisions carried out.

Threads: the IDL (ovsdb/idl.py) runs in ovsdbapp's connection thread and hands each new
`OvsState` to the loop with loop.call_soon_threadsafe; `_on_state` then runs on the loop, like
every other method here, so the proxy's state is only ever touched by the loop thread.
Transactions block until OVSDB answers, so they run in the default executor
(asyncio.to_thread), where ovsdbapp queues them to its connection thread.

On each state: ports that went away purge the rules that reference them (ovsdb/plan.py), the
VM-scoped rules are made to match the interfaces that exist, and the attachments plan the
transactions to run. Connecting retries with backoff until the server answers; after that the
IDL reconnects by itself and hands in the whole state again, which repeats no work because every
decision compares states.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..config import VM_ORIGIN, OvsdbConfig, PolicyConfig, ProxyConfig, VmRule
from ..policies import policy_name, policy_rules, ports_by_mac
from ..rules.model import POLICY_ORIGIN, FlowRule
from ..rules.store import RuleChange
from . import memory, offload
from .idl import BridgeNotFound, OvsdbClient, OvsdbUnavailable, configure_tls, tls_failure
from .model import BridgeSettings, OvsState
from .plan import Apply, Attachments, desired_settings, interface_changes, rules_to_purge, vm_rules

log = logging.getLogger(__name__)

CONNECT_BACKOFF = (0.5, 8.0)  # first and longest wait between attempts to reach the server
RETRY_AFTER_FAILURE = 2.0  # seconds before a failed transaction's bridge is looked at again
OFFLOAD_INTERVAL = 10.0  # seconds between offloaded-flow counts while hw-offload is on


class RuleHost(Protocol):
    """What the manager changes in the proxy: its rules (implemented by the Daemon)."""

    def rules(self) -> Iterable[tuple[int, FlowRule]]: ...

    def remove_rule(self, rule_id: int) -> FlowRule: ...

    def replace_rules(self, origin: str, rules: Iterable[FlowRule]) -> RuleChange: ...

    def set_ports_by_mac(self, ports: dict[str, dict[int, tuple[int, ...]]]) -> None:
        """Per bridge, the port of each VM's MAC (for checking PACKET_OUTs against policies)."""


class OvsdbManager:
    def __init__(self, config: OvsdbConfig, proxy: ProxyConfig, vm_templates: Sequence[VmRule],
                 host: RuleHost, *, client_factory: Any = OvsdbClient,
                 policies: Sequence[PolicyConfig] = ()) -> None:
        self.config = config
        self.host = host
        self.vm_templates = tuple(vm_templates)
        self.policies = tuple(policies)
        # What the last sync made the policy rules (None: none yet, and a restored backup may
        # hold an earlier config's). Only this manager changes them, so an unchanged list
        # needs no pass over the whole store.
        self._policy_rules: list[FlowRule] | None = None
        self.memory_path = Path(proxy.state_dir) / memory.FILE_NAME
        self.desired = desired_settings(config, proxy.listen[0], proxy.protocols)
        self.client = client_factory(config.remote, self._from_idl_thread)
        self.attachments: Attachments | None = None
        self.state: OvsState | None = None  # the last state seen; kept while disconnected
        self.connected = False
        self.connects = 0  # times the IDL got a whole copy of the database (1 + reconnects)
        self.offloaded: dict[str, int] | None = None  # per bridge, from the last count
        self.offload_error: str | None = None
        self.offload_checked: float | None = None  # time.time() of the last count
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._offload_wakeup = asyncio.Event()
        self._stopping = False

    # ---- life

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            saved = memory.load(self.memory_path)
        except memory.BadMemoryFile as exc:
            log.error("ovsdb: ignoring the memory of attached bridges: %s", exc)
            saved = {}
        self.attachments = Attachments(self.desired, self.config.bridges, saved)
        if self.config.tls is not None:
            configure_tls(self.config.tls)
        self._spawn(self._connect(), "ovsdb-connect")
        if self.config.vswitchd_ctl:
            self._spawn(self._count_offloads(self.config.vswitchd_ctl), "ovsdb-offload")

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.client.stop)

    def _spawn(self, coroutine: Any, name: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        delay = CONNECT_BACKOFF[0]
        while True:
            try:
                await asyncio.to_thread(self.client.connect)
            except OvsdbUnavailable as exc:
                problem = None
                if self.config.tls is not None:  # python-ovs hides TLS errors: ask again
                    problem = await asyncio.to_thread(tls_failure, self.config.remote,
                                                      self.config.tls)
                if problem:
                    log.error("ovsdb: %s (check [ovsdb.tls]: the server must trust the CA that "
                              "signed certificate, and ca_cert must have signed the server's "
                              "certificate); trying again in %g s", problem, delay)
                else:
                    log.warning("ovsdb: cannot reach %s (%s); trying again in %g s",
                                self.config.remote, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_BACKOFF[1])
                continue
            return

    # ---- states from the IDL thread

    def _from_idl_thread(self, state: OvsState | None) -> None:
        """Called on the IDL's thread: only hands the value over."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_state, state)
        except RuntimeError:  # the loop closed: the daemon is gone, and so is interest in OVSDB
            pass

    def _on_state(self, state: OvsState | None) -> None:
        if self._stopping:
            return
        if state is None:
            if self.connected:
                log.warning("ovsdb: lost the connection to %s; reconnecting", self.config.remote)
            self.connected = False
            return
        if not self.connected:
            self.connects += 1
            log.info("ovsdb: %s %s: %d bridges, hw-offload %s",
                     "connected to" if self.connects == 1 else "reconnected to",
                     self.config.remote, len(state.bridges), "on" if state.hw_offload else "off")
        before, self.state, self.connected = self.state, state, True
        if state.hw_offload and (before is None or not before.hw_offload):
            self._offload_wakeup.set()
        self._ports_changed(before, state)
        self._plan()

    def _ports_changed(self, before: OvsState | None, after: OvsState) -> None:
        removed, added = interface_changes(before, after)
        for bridge, name, ofport in removed:
            purged = [self.host.remove_rule(rule_id)
                      for rule_id in rules_to_purge(self.host.rules(), bridge, ofport)]
            log.info("%s: port %s (ofport %d) is gone%s", bridge, name, ofport,
                     f"; deleted {len(purged)} rules that referenced it" if purged else "")
        if before is not None:
            for bridge, name, ofport in added:
                log.info("%s: port %s (ofport %d) appeared", bridge, name, ofport)
        self._sync_vm_rules()
        self._sync_policies()  # on every change: tags change without a port coming or going

    def _sync_vm_rules(self) -> None:
        if self.state is None or (not self.vm_templates and not self._has_vm_rules()):
            return
        change = self.host.replace_rules(VM_ORIGIN, vm_rules(self.vm_templates, self.state))
        for _, rule in change.added:
            log.info("%s: VM rule active: %s", rule.bridge, rule.text)
        for _, rule in change.removed:
            log.info("%s: VM rule inactive: %s", rule.bridge, rule.text)

    def _has_vm_rules(self) -> bool:
        return any(rule.origin == VM_ORIGIN for _, rule in self.host.rules())

    def _sync_policies(self) -> None:
        if self.state is None:
            self._sync_policies_before_ovsdb()
            return
        self.host.set_ports_by_mac(ports_by_mac(self.state) if self.policies else {})
        wanted = policy_rules(self.policies, self.state)
        if wanted == self._policy_rules:
            return
        self._policy_rules = wanted
        change = self.host.replace_rules(POLICY_ORIGIN, wanted)
        for _, rule in change.added:
            log.info("%s: %s", rule.bridge or "every bridge", rule.text)
        for _, rule in change.removed:
            log.info("%s: no longer enforced: %s", rule.bridge or "every bridge", rule.text)

    def _sync_policies_before_ovsdb(self) -> None:
        """A reload before OVSDB was read: the tags are unknown, so the tagged policies that
        are still configured keep the rules of the last run (from the backup); the others are
        as the new config says. The first read of OVSDB then recomputes everything."""
        tagged = {policy.name for policy in self.policies if policy.uses_tags}
        kept = [rule for _, rule in self.host.rules()
                if rule.origin == POLICY_ORIGIN and policy_name(rule) in tagged]
        self.host.replace_rules(POLICY_ORIGIN, kept + policy_rules(self.policies, None))

    def reload(self, vm_templates: Sequence[VmRule],
               policies: Sequence[PolicyConfig] = ()) -> None:
        """New VM-scoped rules and policies from a reloaded config file."""
        self.vm_templates = tuple(vm_templates)
        self.policies = tuple(policies)
        self._sync_vm_rules()
        self._sync_policies()

    # ---- attachments

    def _plan(self) -> None:
        attachments, state = self.attachments, self.state
        if attachments is None or state is None or not self.connected:
            return
        for action in attachments.plan(state):
            self._spawn(self._run(action), f"ovsdb-{action.reason}-{action.bridge}")
        self._persist()

    def _persist(self) -> None:
        attachments = self.attachments
        if attachments is None or not attachments.dirty:
            return
        try:
            memory.save(self.memory_path, attachments.saved)
        except OSError as exc:
            log.error("ovsdb: cannot write %s: %s", self.memory_path, exc)
            return
        attachments.dirty = False

    async def _run(self, action: Apply) -> None:
        assert self.attachments is not None
        if action.reason == "repair":
            log.warning("%s: its control settings were changed by someone else (%s); restoring the "
                        "proxy's (%s)", action.bridge, action.before.describe(),
                        action.settings.describe())
        else:
            log.info("%s: %s: %s (was: %s)", action.bridge,
                     "attaching" if action.reason == "attach" else "detaching, restoring",
                     action.settings.describe(), action.before.describe())
        ok = False
        try:
            await asyncio.to_thread(self.client.apply, action.bridge, action.settings)
            ok = True
        except BridgeNotFound:
            log.info("%s: left OVSDB before it could be %sed", action.bridge, action.reason)
        except (OvsdbUnavailable, RuntimeError) as exc:
            log.error("%s: %s failed: %s", action.bridge, action.reason, exc)
        except Exception:  # a bug: it costs this transaction, which is tried again
            log.exception("%s: internal error in the %s transaction", action.bridge, action.reason)
        self.attachments.done(action, ok)
        if ok:
            if action.reason == "detach":
                log.info("%s: detached", action.bridge)
            self._persist()
            self._plan()
        else:
            await asyncio.sleep(RETRY_AFTER_FAILURE)
            self._plan()

    def attach(self, bridge: str) -> str:
        """Attach a bridge (control socket); returns its status afterwards."""
        if self.attachments is None:
            raise RuntimeError("the OVSDB manager has not started")
        self.attachments.attach(bridge)
        self._plan()
        return self.attachments.status(bridge, self.state if self.connected else None)

    def detach(self, bridge: str) -> str | None:
        """Detach a bridge; None if it was not attached."""
        if self.attachments is None:
            raise RuntimeError("the OVSDB manager has not started")
        if not self.attachments.detach(bridge):
            return None
        self._plan()
        return self.attachments.status(bridge, self.state)

    # ---- hardware offload

    async def _count_offloads(self, target: str) -> None:
        while True:
            state = self.state
            if state is not None and state.hw_offload:
                bridge_of_port = {i.name: b.name for b in state.bridges.values() for i in b.interfaces}
                try:
                    dump = await offload.dump_offloaded(target)
                except offload.OffloadQueryFailed as exc:
                    if self.offload_error != str(exc):
                        log.warning("ovsdb: cannot count offloaded flows: %s", exc)
                    self.offload_error, self.offloaded = str(exc), None
                else:
                    counts = offload.count_offloaded(dump, bridge_of_port)
                    self.offloaded = {name: counts[name] for name in state.bridges}
                    self.offload_error = None
                self.offload_checked = time.time()
            self._offload_wakeup.clear()
            try:
                await asyncio.wait_for(self._offload_wakeup.wait(), OFFLOAD_INTERVAL)
            except TimeoutError:
                pass

    # ---- reports (control socket, metrics)

    def report(self) -> dict[str, Any]:
        """The `ovsdb` part of proxy/show --json."""
        state, attachments = self.state, self.attachments
        names = set(state.bridges if state is not None else ())
        if attachments is not None:
            names |= attachments.wanted | attachments.detaching
        bridges = []
        for name in sorted(names):
            row = state.bridges.get(name) if state is not None else None
            settings = row.settings if row is not None else BridgeSettings()
            bridges.append({
                "name": name,
                "status": (attachments.status(name, state) if attachments is not None
                           else "detached"),
                "present": row is not None,
                "controllers": list(settings.targets),
                "connected_controllers": list(row.connected) if row is not None else [],
                "fail_mode": settings.fail_mode,
                "protocols": list(settings.protocols),
                "ports": sum(1 for i in row.interfaces if i.ofport is not None) if row else 0,
                "hw_offload": state.hw_offload if state is not None else None,
                "tc_policy": state.tc_policy if state is not None else None,
                "offloaded_flows": (self.offloaded or {}).get(name) if self.offloaded is not None
                                   else None,
            })
        return {
            "remote": self.config.remote,
            "connected": self.connected,
            "connects": self.connects,
            "controller_target": self.desired.targets[0],
            "hw_offload": state.hw_offload if state is not None else None,
            "tc_policy": state.tc_policy if state is not None else None,
            "offload_checked": self.offload_checked,
            "offload_error": self.offload_error,
            "bridges": bridges,
        }
