"""The proxy core: answer bridges' misses from the rule store, keep their flow tables honest.

No I/O here: transports hand in session events; the answers are queued on the sessions as bytes.
For each bridge the proxy knows which flows it installed for which rule (`InstalledFlows`), so
that a rule change can remove exactly the stale flows, and FLOW_REMOVED keeps that view true.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .openflow import codec, flows
from .openflow.framing import (
    OFP10,
    OFPT10_STATS_REPLY,
    OFPT13_MULTIPART_REPLY,
    Message,
    RemoteProtocolError,
)
from .openflow.packet import NO_BUFFER, OFPR_NO_MATCH, PacketIn, decode_packet_in, packet_key
from .rules import clock
from .rules.classifier import Classifier
from .rules.model import (
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_NORMAL,
    FlowRule,
    Match,
    Output,
    canonical_actions,
)
from .rules.store import (
    COOKIE_TAG_MASK,
    PROXY_COOKIE_TAG,
    RuleChange,
    RuleStore,
    cookie_for,
    is_learned,
    rule_id_from_cookie,
)
from .sessions.switch import (
    Closed,
    FlowRemoved,
    PortStatus,
    SwitchError,
    SwitchReady,
    SwitchSession,
    Unhandled,
)

log = logging.getLogger(__name__)

# A narrowed flow covers one slice of its rule's traffic; without a timeout of its own every slice
# ever seen would stay on the bridge (and in Bridge.installed) for good.
NARROWED_IDLE_TIMEOUT = 60
# Cover flows (see `cover_rules`) carry a tag of their own ("PC") and their rule's id: they are
# not the rule's flows (reconciliation and FLOW_REMOVED leave them alone), and their packet-ins
# are recognised by the tag.
COVER_TAG = 0x5043 << 48
OFPST_FLOW = 1  # OpenFlow 1.0 flow statistics

FALLBACK_ACTIONS = {
    "drop": (),
    "flood": (Output(OFPP_FLOOD),),
    "normal": (Output(OFPP_NORMAL),),
}


@dataclass(slots=True)
class _Answer:
    """How to answer a hit on one rule on one bridge without re-encoding anything."""

    flow: flows.FlowAddTemplate | None  # None: the flow depends on the packet (or can't be cached)
    packet_out: flows.PacketOutTemplate
    installed_as: tuple[int, Match]  # the bridge's flow, as the proxy records it
    recorded: bool = False  # installed_as is in Bridge.installed (reset by FLOW_REMOVED)


@dataclass(slots=True)
class Bridge:
    """One connected bridge, as the proxy sees it."""

    session: SwitchSession
    name: str
    datapath_id: int
    version: int
    classifier: Classifier
    ports: dict[int, str]
    installed: dict[int, set[tuple[int, Match]]] = field(default_factory=dict)  # rule id -> flows
    answers: dict[int, _Answer] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)  # rare events, by name
    packet_ins: int = 0  # the two per-miss counters are plain ints: a Counter costs 0.4 µs each
    hits: int = 0
    reconcile_xid: int | None = None  # the flow dump that finds an earlier session's flows
    # What that dump found in table 0 under any cookie: (priority, match) of each flow.
    reconcile_present: set[tuple[int, Match]] = field(default_factory=set)
    covered: bool = False  # a controller owns table 0's misses: the proxy's rules have covers
    # Learned rules whose controller came back after an outage: their next hit asks it again.
    unconfirmed: set[int] = field(default_factory=set)

    def all_counters(self) -> dict[str, int]:
        counted = {"packet_ins": self.packet_ins, "hits": self.hits, **self.counters}
        return {name: value for name, value in sorted(counted.items()) if value}

    @property
    def label(self) -> str:
        return f"{self.name} (dpid {self.datapath_id:016x})"


class Upstream(Protocol):
    """What the proxy asks of its upstream controllers (implemented by northbound.Northbound)."""

    def bridge_ready(self, bridge: Bridge, ready: SwitchReady) -> None: ...
    def bridge_gone(self, bridge: Bridge) -> None: ...
    def miss(self, bridge: Bridge, buffer_id: int, total_len: int, in_port: int, reason: int,
             data: bytes, key: int) -> bool: ...
    def action_packet_in(self, bridge: Bridge, packet_in: PacketIn) -> None: ...
    def bridge_message(self, bridge: Bridge, message: Message) -> None: ...
    def bridge_error(self, bridge: Bridge, event: SwitchError, version: int) -> None: ...
    def port_status(self, bridge: Bridge, event: PortStatus) -> None: ...
    def flow_removed(self, bridge: Bridge, event: FlowRemoved) -> None: ...
    def revalidate(self, bridge: Bridge, rule_id: int, buffer_id: int, total_len: int,
                   in_port: int, data: bytes, key: int) -> bool: ...


class Proxy:
    def __init__(self, store: RuleStore, *, miss_fallback: str = "drop") -> None:
        if miss_fallback not in FALLBACK_ACTIONS:
            raise ValueError(f"unknown miss fallback {miss_fallback!r}")
        self.store = store
        self.miss_fallback = miss_fallback
        self.bridges: dict[SwitchSession, Bridge] = {}
        self.counters: Counter[str] = Counter()
        # The upstream controllers (northbound.Northbound), when any are configured.
        self.upstream: Upstream | None = None
        # Origins of rules learned from controllers (their names): such rules need no cover.
        self.learned_origins: frozenset[str] = frozenset()
        # Per bridge name, the OpenFlow port of each VM's MAC (Interface attached-mac, from
        # OVSDB): a controller's PACKET_OUT of a VM's frame is checked as coming from its port.
        self.ports_by_mac: dict[str, dict[int, tuple[int, ...]]] = {}
        self._fallback_templates: dict[tuple[int, str], flows.PacketOutTemplate] = {}

    # ---- session events ----

    def handle_events(self, session: SwitchSession, events: Iterable[object]) -> None:
        for event in events:
            bridge = self.bridges.get(session)
            if isinstance(event, PacketIn):  # held before READY; later ones take the fast path
                if bridge is not None:
                    self._answer_miss(bridge, event.buffer_id, event.total_len, event.in_port,
                                      event.reason, event.data, None, event.table_id, event.cookie)
            elif isinstance(event, SwitchReady):
                self._on_ready(session, event)
            elif isinstance(event, FlowRemoved):
                if bridge is not None:
                    self._on_flow_removed(bridge, event)
            elif isinstance(event, Closed):
                self._on_closed(session, bridge, event)
            elif isinstance(event, SwitchError):
                if bridge is not None and event.xid == bridge.reconcile_xid:
                    self._reconcile_failed(bridge, f"error type {event.err_type} code {event.code}")
                elif bridge is not None:
                    bridge.counters["errors"] += 1
                    log.warning("%s: switch reported error type %d code %d (xid %d)",
                                bridge.label, event.err_type, event.code, event.xid)
                    if self.upstream is not None:
                        self.upstream.bridge_error(bridge, event, bridge.version)
            elif isinstance(event, PortStatus):
                if bridge is not None:
                    self._on_port_status(bridge, event)
                    if self.upstream is not None:
                        self.upstream.port_status(bridge, event)
            elif isinstance(event, Unhandled):
                message = event.message
                if (bridge is not None and message.xid == bridge.reconcile_xid
                        and message.type in (OFPT10_STATS_REPLY, OFPT13_MULTIPART_REPLY)):
                    self._on_reconcile_dump(bridge, message)
                elif bridge is not None and self.upstream is not None:
                    self.upstream.bridge_message(bridge, message)  # a reply for a controller

    def _on_ready(self, session: SwitchSession, ready: SwitchReady) -> None:
        for other_session, other in list(self.bridges.items()):
            if other.datapath_id == ready.datapath_id:
                # Its flows and callbacks would act on rules it no longer learns about.
                log.warning("%s: reconnected; closing its previous session", other.label)
                self.handle_events(other_session,
                                   other_session.close("replaced by a newer session of its datapath"))
        bridge = Bridge(
            session=session,
            name=ready.bridge_name,
            datapath_id=ready.datapath_id,
            version=ready.version,
            classifier=self.store.classifier(ready.bridge_name),
            ports={p.port_no: p.name for p in ready.ports.values()},
        )
        self.bridges[session] = bridge
        session.on_packet_in = self._packet_in_handler(bridge)
        self.counters["bridges_connected"] += 1
        log.info("%s: connected with OpenFlow 0x%02x, %d ports, %d rules apply", bridge.label,
                 ready.version, len(ready.ports), len(bridge.classifier))
        # Policies first, before any controller is connected to this bridge: the dump that
        # follows then finds them and keeps them.
        self.repin(bridge)
        # Flows of an earlier session (or run) may no longer agree with the rules.
        self._start_reconcile(bridge)
        miss = flows.table_miss_flow(bridge.version, xid=session.next_xid())
        if miss:
            session.send(miss)
        if self.upstream is not None:
            self.upstream.bridge_ready(bridge, ready)

    def _on_closed(self, session: SwitchSession, bridge: Bridge | None, closed: Closed) -> None:
        if bridge is None:
            log.info("session closed before the handshake finished: %s", closed.reason)
            return
        session.on_packet_in = None
        if self.bridges.get(session) is bridge:
            del self.bridges[session]
            if self.upstream is not None:
                self.upstream.bridge_gone(bridge)
        log.info("%s: disconnected: %s; %s", bridge.label, closed.reason,
                 " ".join(f"{k}={v}" for k, v in bridge.all_counters().items()) or "no traffic")

    def _on_port_status(self, bridge: Bridge, event: PortStatus) -> None:
        if event.reason == 1:  # OFPPR_DELETE
            bridge.ports.pop(event.port.port_no, None)
        else:
            bridge.ports[event.port.port_no] = event.port.name

    # ---- the miss path ----

    def _packet_in_handler(self, bridge: Bridge) -> Callable[[bytes], None]:
        """The session's direct PACKET_IN callback for this bridge (see SwitchSession).

        The common case, a hit on a rule whose flow is a ready template, is answered here with
        everything bound to locals (attribute lookups are a measurable share of a ~8 µs miss on
        our machines); anything else goes to the general `_answer_miss`.
        """
        version = bridge.version
        lookup = bridge.classifier.lookup
        answers = bridge.answers
        send = bridge.session.send
        next_xid = bridge.session.next_xid
        answer_miss = self._answer_miss
        miss_upstream = self._miss_upstream

        def on_packet_in(raw: bytes) -> None:
            buffer_id, total_len, in_port, reason, table_id, cookie, data = decode_packet_in(
                version, raw)
            if reason == OFPR_NO_MATCH or cookie & COOKIE_TAG_MASK == COVER_TAG:
                # A cover's packet-in (reason ACTION) is a miss of table 0 like any other.
                key = packet_key(in_port, data)
                hit = lookup(key)
                if hit is not None:
                    answer = answers.get(hit[0])
                    if (answer is not None and answer.recorded and answer.flow is not None
                            and (buffer_id != NO_BUFFER or total_len <= len(data))):
                        bridge.packet_ins += 1
                        bridge.hits += 1
                        send(answer.flow.render(next_xid(), buffer_id))
                        if buffer_id == NO_BUFFER:
                            send(answer.packet_out.render(next_xid(), in_port, NO_BUFFER, data))
                        return
                if hit is None:  # straight to the controllers: no second lookup
                    bridge.packet_ins += 1
                    miss_upstream(bridge, buffer_id, total_len, in_port, data, key)
                    return
                answer_miss(bridge, buffer_id, total_len, in_port, OFPR_NO_MATCH, data, key)
                return
            answer_miss(bridge, buffer_id, total_len, in_port, reason, data, None, table_id, cookie)

        return on_packet_in

    def _miss_upstream(self, bridge: Bridge, buffer_id: int, total_len: int, in_port: int,
                       data: bytes, key: int) -> None:
        """No rule answers this miss: the controllers, or else the fallback."""
        upstream = self.upstream
        if upstream is None or not upstream.miss(bridge, buffer_id, total_len, in_port,
                                                 OFPR_NO_MATCH, data, key):
            self.fallback(bridge, buffer_id, in_port, data)

    def _answer_miss(self, bridge: Bridge, buffer_id: int, total_len: int, in_port: int,
                     reason: int, data: bytes, key: int | None = None, table_id: int = 0,
                     cookie: int = 0, *, revalidate: bool = True) -> None:
        counters = bridge.counters
        bridge.packet_ins += 1
        upstream = self.upstream
        if reason != OFPR_NO_MATCH:
            # Sent by an explicit output:CONTROLLER action; answering it from the same rules
            # would loop. It is for upstream controllers: the flow's cookie says whose.
            counters["action_packet_ins"] += 1
            if upstream is not None:
                upstream.action_packet_in(bridge, PacketIn(buffer_id, total_len, in_port, reason,
                                                           table_id, cookie, data))
            return
        if key is None:
            key = packet_key(in_port, data)
        hit = bridge.classifier.lookup(key)
        if hit is None:
            self._miss_upstream(bridge, buffer_id, total_len, in_port, data, key)
            return
        rule_id, rule = hit
        if (revalidate and bridge.unconfirmed and rule_id in bridge.unconfirmed and upstream is not None
                and upstream.revalidate(bridge, rule_id, buffer_id, total_len, in_port, data, key)):
            counters["revalidations"] += 1
            return
        bridge.hits += 1
        answer = bridge.answers.get(rule_id)
        if answer is None:
            answer = bridge.answers[rule_id] = self._prepare_answer(bridge, rule_id, rule)
        session = bridge.session
        buffered = buffer_id != NO_BUFFER
        if answer.flow is not None:
            session.send(answer.flow.render(session.next_xid(), buffer_id))
            if not answer.recorded:  # hashing the record on every miss costs more than the rest
                bridge.installed.setdefault(rule_id, set()).add(answer.installed_as)
                answer.recorded = True
        else:
            buffered = self._install_narrowed(bridge, rule_id, rule, key, buffer_id) and buffered
        if not buffered:
            if total_len > len(data):
                counters["truncated"] += 1
                log.warning("%s: cannot release a truncated unbuffered packet (%d of %d bytes)",
                            bridge.label, len(data), total_len)
                return
            session.send(answer.packet_out.render(session.next_xid(), in_port, NO_BUFFER, data))

    def _prepare_answer(self, bridge: Bridge, rule_id: int, rule: FlowRule) -> _Answer:
        flow: flows.FlowAddTemplate | None = None
        if not bridge.classifier.overlapping_above(rule_id):
            try:
                flow = flows.FlowAddTemplate(
                    bridge.version, rule.match, rule.actions, priority=rule.priority,
                    cookie=cookie_for(rule_id), idle_timeout=rule.idle_timeout,
                    hard_timeout=rule.hard_timeout)
            except flows.Unrepresentable as exc:
                log.debug("%s: rule %d needs a per-packet flow: %s", bridge.label, rule_id, exc)
        return _Answer(flow, self._packet_out_template(bridge, rule.actions),
                       (rule.priority, rule.match))

    def _packet_out_template(self, bridge: Bridge, actions: tuple) -> flows.PacketOutTemplate:
        try:
            return flows.PacketOutTemplate(actions, bridge.version)
        except flows.Unrepresentable:
            log.warning("%s: actions %r cannot be expressed in OpenFlow 0x%02x; dropping",
                        bridge.label, actions, bridge.version)
            return flows.PacketOutTemplate((), bridge.version)

    def _install_narrowed(self, bridge: Bridge, rule_id: int, rule: FlowRule, key: int,
                          buffer_id: int) -> bool:
        """Install the dependency-safe flow for this packet; False if none can be installed."""
        match = bridge.classifier.cache_match(rule_id, key)
        session = bridge.session
        try:
            message = flows.flow_add(
                bridge.version, match, rule.actions, priority=rule.priority,
                cookie=cookie_for(rule_id),
                idle_timeout=rule.idle_timeout or NARROWED_IDLE_TIMEOUT,
                hard_timeout=rule.hard_timeout, buffer_id=buffer_id, key=key,
                xid=session.next_xid())
            if bridge.version == OFP10:
                # What a 1.0 bridge holds may be narrower than `match` (exact where 1.0 has no masks).
                match = flows.decode_match(flows.encode_match(match, OFP10, key), OFP10)
        except flows.Unrepresentable as exc:
            bridge.counters["uncacheable"] += 1
            log.debug("%s: no flow for rule %d on this version: %s", bridge.label, rule_id, exc)
            return False
        session.send(message)
        bridge.counters["narrowed_flows"] += 1
        bridge.installed.setdefault(rule_id, set()).add((rule.priority, match))
        return True

    def answer_from_rule(self, bridge: Bridge, buffer_id: int, in_port: int, data: bytes,
                         key: int) -> None:
        """Answer a miss from the rules after all (a revalidation nobody answered), without
        asking again; an unbuffered miss handed upstream always carried the whole packet."""
        self._answer_miss(bridge, buffer_id, len(data), in_port, OFPR_NO_MATCH, data, key,
                          revalidate=False)

    def withdraw(self, bridge: Bridge, rule_ids: Iterable[int]) -> None:
        """Remove rules' flows and cached answers from one bridge, keeping the rules: their next
        hit is a miss again."""
        for rule_id in rule_ids:
            bridge.answers.pop(rule_id, None)
            self._delete_rule_flows(bridge, rule_id)

    def fallback(self, bridge: Bridge, buffer_id: int, in_port: int, data: bytes) -> None:
        """Apply miss_fallback to a packet nobody answers."""
        bridge.counters[f"fallback_{self.miss_fallback}"] += 1
        template = self._fallback_templates.get((bridge.version, self.miss_fallback))
        if template is None:
            template = flows.PacketOutTemplate(FALLBACK_ACTIONS[self.miss_fallback], bridge.version)
            self._fallback_templates[(bridge.version, self.miss_fallback)] = template
        if buffer_id == NO_BUFFER and not template.actions:
            return  # dropping an unbuffered packet needs no message at all
        session = bridge.session
        session.send(template.render(session.next_xid(), in_port, buffer_id,
                                     data if buffer_id == NO_BUFFER else b""))

    def _on_flow_removed(self, bridge: Bridge, event: FlowRemoved) -> None:
        msg = event.msg
        rule_id = rule_id_from_cookie(msg.cookie)
        if rule_id is None:
            if self.upstream is not None:
                self.upstream.flow_removed(bridge, event)  # perhaps a controller's flow
            return
        bridge.counters["flows_removed"] += 1
        try:
            removed = (msg.priority, flows.decode_match(msg.match, bridge.version))
        except flows.Unrepresentable:
            return  # not a flow the proxy could have installed on this bridge
        installed = bridge.installed.get(rule_id)
        if installed is not None:
            installed.discard(removed)
            if not installed:
                del bridge.installed[rule_id]
        rule = bridge.classifier.get(rule_id)
        if rule is not None and rule.pinned and removed == (rule.priority, rule.match):
            # Deleted behind the proxy's back (ovs-ofctl del-flows): a policy stands regardless.
            log.warning("%s: the flow of %s was removed from the bridge; putting it back",
                        bridge.label, rule.text)
            self._pin(bridge, rule_id, rule)
            return
        answer = bridge.answers.get(rule_id)
        if answer is not None and answer.installed_as == removed:
            answer.recorded = False
        if bridge.covered:
            rule = bridge.classifier.get(rule_id)
            if rule is not None and removed == (rule.priority, rule.match):
                self._send_cover(bridge, rule_id, rule)  # the rule's flow had taken its place

    # ---- covers: the proxy's rules while a controller owns the misses of table 0 ----

    def cover_rules(self, bridge: Bridge, covered: bool) -> None:
        """Turn covers on while a controller's catch-all owns table 0 of the bridge, off after.

        Such a catch-all takes every packet that no higher flow matches through the controller's
        pipeline, so nothing misses to the proxy and its rules would never be asked. A cover is
        one flow per rule of the proxy, at the rule's priority and with its match, that sends
        the packet to the proxy (reason ACTION, with the cover's cookie); the proxy answers it
        like a miss, and the rule's own flow then takes the cover's place (same match, same
        priority) until it expires, when the cover is put back. So the proxy's rules rank with
        the controllers' flows by priority, as flows of table 0 do. Learned rules need none:
        their controller's own flow is on the bridge. OpenFlow 1.0 packet-ins carry no cookie,
        so there are no covers there."""
        if bridge.version == OFP10 or covered == bridge.covered:
            return
        bridge.covered = covered
        session = bridge.session
        # Off: every cover goes. On: so do covers an earlier session may have left (a cover
        # only sends its packets to the proxy, which answers them as misses, so until then
        # they are harmless).
        session.send(flows.flow_delete(bridge.version, cookie=COVER_TAG,
                                       cookie_mask=COOKIE_TAG_MASK, xid=session.next_xid()))
        if not covered:
            log.info("%s: table 0's misses are the proxy's again; covers removed", bridge.label)
            return
        log.info("%s: a controller owns table 0's misses; covering the proxy's rules",
                 bridge.label)
        for rule_id, rule in bridge.classifier.rules():
            if (rule.priority, rule.match) not in bridge.installed.get(rule_id, ()):
                self._send_cover(bridge, rule_id, rule)

    def _send_cover(self, bridge: Bridge, rule_id: int, rule: FlowRule) -> None:
        if rule.origin in self.learned_origins or rule.pinned:
            return  # on the bridge already: its controller's flow, or pinned
        session = bridge.session
        try:
            message = flows.flow_add(
                bridge.version, rule.match, (Output(OFPP_CONTROLLER),), priority=rule.priority,
                cookie=COVER_TAG | rule_id, send_flow_removed=False,
                xid=session.next_xid())
        except flows.Unrepresentable as exc:
            bridge.counters["uncoverable"] += 1
            log.warning("%s: rule %d cannot be covered on this version: %s", bridge.label,
                        rule_id, exc)
            return
        session.send(message)
        bridge.counters["covers_installed"] += 1

    def _delete_cover(self, bridge: Bridge, rule_id: int) -> None:
        session = bridge.session
        session.send(flows.flow_delete(bridge.version, cookie=COVER_TAG | rule_id,
                                       cookie_mask=0xFFFFFFFFFFFFFFFF, xid=session.next_xid()))

    # ---- rule changes ----

    def apply_rule_change(self, change: RuleChange) -> None:
        """Bring every connected bridge in line with a change of the store."""
        unpinned = {(rule.priority, rule.match) for _, rule in change.removed if rule.pinned}
        for bridge in self.bridges.values():
            for rule_id, _ in change.removed:
                bridge.answers.pop(rule_id, None)
                bridge.unconfirmed.discard(rule_id)
                self._delete_rule_flows(bridge, rule_id)
                if bridge.covered:
                    self._delete_cover(bridge, rule_id)
            if unpinned:
                # Two policies may pin the same flow (one per bridge, one for all): deleting
                # one's by its cookie took the other's flow too.
                for rule_id, rule in bridge.classifier.pinned_rules():
                    if (rule.priority, rule.match) in unpinned:
                        self._pin(bridge, rule_id, rule)
            if any(not rule.pinned for _, rule in change.added):
                # Cached answers of rules that now have a new rule above them are stale (a
                # pinned rule hides no answer: its flow is always above, on the bridge).
                bridge.answers.clear()
            for rule_id, rule in change.added:
                if not rule.applies_to(bridge.name):
                    continue
                if rule.pinned:
                    self._pin(bridge, rule_id, rule)
                    continue
                self._delete_shadowing_flows(bridge, rule)
                if bridge.covered:
                    self._send_cover(bridge, rule_id, rule)

    def _delete_rule_flows(self, bridge: Bridge, rule_id: int) -> None:
        installed = bridge.installed.pop(rule_id, set())
        session = bridge.session
        if bridge.version != OFP10:
            session.send(flows.flow_delete(bridge.version, cookie=cookie_for(rule_id),
                                           cookie_mask=0xFFFFFFFFFFFFFFFF, xid=session.next_xid()))
            return
        for priority, match in installed:
            self._delete_strict(bridge, priority, match, rule_id)

    def _delete_shadowing_flows(self, bridge: Bridge, new_rule: FlowRule) -> None:
        """Flows of lower-priority rules that overlap a new rule would hide it: remove them."""
        for rule_id, flows_of_rule in list(bridge.installed.items()):
            stale = {(p, m) for p, m in flows_of_rule if p < new_rule.priority
                     and m.overlaps(new_rule.match)}
            for priority, match in stale:
                self._delete_strict(bridge, priority, match, rule_id)
            flows_of_rule -= stale
            if not flows_of_rule:
                del bridge.installed[rule_id]

    def _delete_strict(self, bridge: Bridge, priority: int, match: Match,
                       rule_id: int | None) -> None:
        """Delete one flow. On 1.3+ the cookie makes sure a foreign flow with the same match and
        priority survives; 1.0 has no cookie filter on deletes."""
        session = bridge.session
        scoped = bridge.version != OFP10 and rule_id is not None
        try:
            session.send(flows.flow_delete(
                bridge.version, match=match, strict=True, priority=priority,
                cookie=cookie_for(rule_id) if scoped and rule_id is not None else 0,
                cookie_mask=0xFFFFFFFFFFFFFFFF if scoped else 0, xid=session.next_xid()))
        except flows.Unrepresentable as exc:  # pragma: no cover - it was installed, so it encodes
            log.error("%s: cannot delete flow %s: %s", bridge.label, match, exc)
        bridge.counters["flows_deleted"] += 1

    # ---- reconciling a bridge that connects with the store ----

    def _start_reconcile(self, bridge: Bridge) -> None:
        """Dump every flow of the bridge; _on_reconcile_dump keeps the proxy's flows that agree
        with the store and removes the rest, so a restart or reconnect neither loses
        forwarding state nor leaves stale flows. Every flow, not only the proxy's cookies: a
        learned rule usually stands on the bridge as its controller's flow, which must be seen
        (and left alone) rather than overwritten by a reinstall."""
        session = bridge.session
        bridge.reconcile_xid = session.next_xid()
        bridge.reconcile_present = set()
        session.send(flows.flow_stats_request_all(bridge.version, xid=bridge.reconcile_xid))

    def _reconcile_failed(self, bridge: Bridge, why: str) -> None:
        """The dump was refused: fall back to removing every proxy flow (by cookie where the
        version can) and reinstalling the learned rules."""
        log.warning("%s: flow dump for reconciling failed (%s); removing the proxy's flows",
                    bridge.label, why)
        bridge.reconcile_xid = None
        session = bridge.session
        if bridge.version != OFP10:
            session.send(flows.flow_delete(bridge.version, cookie=PROXY_COOKIE_TAG,
                                           cookie_mask=COOKIE_TAG_MASK, xid=session.next_xid()))
        bridge.installed.clear()
        self._reinstall_learned(bridge)

    def _on_reconcile_dump(self, bridge: Bridge, message: Message) -> None:
        try:
            reply = codec.decode(message)
        except RemoteProtocolError as exc:
            self.handle_events(bridge.session, bridge.session.close(f"bad flow dump: {exc}"))
            return
        if reply.type != OFPST_FLOW:
            self.handle_events(bridge.session, bridge.session.close(
                f"stats reply of type {reply.type} to a flow dump request"))
            return
        for stat in reply.body:
            rule_id = rule_id_from_cookie(stat.cookie)
            if rule_id is None:  # not the proxy's: never touched, only noted
                if getattr(stat, "table_id", 0) == 0:
                    try:
                        bridge.reconcile_present.add(
                            (stat.priority, flows.decode_match(stat.match, bridge.version)))
                    except flows.Unrepresentable:
                        pass
                continue
            try:
                match = flows.decode_match(stat.match, bridge.version)
            except flows.Unrepresentable:
                log.warning("%s: cannot decode stale flow %r to delete it", bridge.label, stat.match)
                continue
            if self._agrees_with_store(bridge, rule_id, stat, match):
                bridge.installed.setdefault(rule_id, set()).add((stat.priority, match))
                bridge.counters["flows_kept"] += 1
            elif (twin := self._pinned_twin(bridge, stat.priority, match)) is not None:
                # A policy's drop under an older id: 1.0's strict delete has no cookie and
                # would take the current one too. Adding it again replaces the flow's cookie.
                self._pin(bridge, *twin)
            else:
                self._delete_strict(bridge, stat.priority, match, rule_id)
                bridge.counters["stale_flows_deleted"] += 1
        if not reply.flags & 1:  # OFPSF_REPLY_MORE / OFPMPF_REPLY_MORE
            bridge.reconcile_xid = None
            self._reinstall_learned(bridge)
            bridge.reconcile_present = set()

    @staticmethod
    def _pinned_twin(bridge: Bridge, priority: int, match: Match) -> tuple[int, FlowRule] | None:
        """On 1.0, the pinned rule whose flow has exactly this priority and match."""
        if bridge.version != OFP10 or not bridge.classifier.pinned:
            return None
        for rule_id, rule in bridge.classifier.pinned_rules():
            if (rule.priority, rule.match) == (priority, match):
                return rule_id, rule
        return None

    def _agrees_with_store(self, bridge: Bridge, rule_id: int, stat: Any, match: Match) -> bool:
        """Whether a proxy flow found on the bridge (os-ken flow stats) is one the proxy would
        install now."""
        rule = bridge.classifier.get(rule_id)
        if rule is None or getattr(stat, "table_id", 0) != 0 or stat.priority != rule.priority:
            return False
        if not rule.match.covers(match):
            return False
        try:
            actions = flows.decode_actions(
                stat.actions if bridge.version == OFP10 else stat.instructions,
                bridge.version, match)
        except flows.Unrepresentable:
            return False
        if canonical_actions(actions) != canonical_actions(rule.actions):
            return False
        # A flow must not hide a higher rule: narrowed flows may overlap none of them.
        return not any(above.match.overlaps(match) for above in
                       bridge.classifier.overlapping_above(rule_id))

    def repin(self, bridge: Bridge) -> None:
        """Install every pinned rule's flow on the bridge (again): on connect, and on OpenFlow
        1.0 after a controller's modify or delete, which 1.0 cannot keep off the proxy's
        flows by cookie."""
        for rule_id, rule in bridge.classifier.pinned_rules():
            self._pin(bridge, rule_id, rule)

    def _pin(self, bridge: Bridge, rule_id: int, rule: FlowRule) -> None:
        """Install a pinned rule's flow (a policy's drop) now, not when a miss asks for it."""
        session = bridge.session
        try:
            message = flows.flow_add(bridge.version, rule.match, rule.actions,
                                     priority=rule.priority, cookie=cookie_for(rule_id),
                                     xid=session.next_xid())
        except flows.Unrepresentable as exc:
            bridge.counters["unpinnable"] += 1
            log.error("%s: %s cannot be installed in OpenFlow 0x%02x: %s", bridge.label,
                      rule.text, bridge.version, exc)
            return
        session.send(message)
        bridge.installed.setdefault(rule_id, set()).add((rule.priority, rule.match))
        bridge.counters["pinned_flows"] += 1

    def _reinstall_learned(self, bridge: Bridge) -> None:
        """Learned rules stood on the bridge as the controller's flows: put back those missing
        (after an OVS restart, all), with what is left of their hard timeouts. Local rules are
        installed on demand, as always (pinned ones went in when the bridge connected)."""
        now = clock.now()
        session = bridge.session
        present = bridge.reconcile_present
        for rule_id, rule in bridge.classifier.rules():
            if (not is_learned(rule) or rule_id in bridge.installed
                    or rule_id in bridge.unconfirmed or (rule.priority, rule.match) in present):
                continue  # on the bridge already (perhaps as its controller's flow), or in doubt
            if bridge.classifier.overlapping_above(rule_id):
                continue  # would need narrowing per packet: left to misses
            expires_at = self.store.meta(rule_id).expires_at
            hard_timeout = rule.hard_timeout
            if expires_at is not None:
                hard_timeout = math.ceil(expires_at - now)
                if hard_timeout <= 0:
                    continue  # the expiry sweep removes it
            try:
                message = flows.flow_add(
                    bridge.version, rule.match, rule.actions, priority=rule.priority,
                    cookie=cookie_for(rule_id), idle_timeout=rule.idle_timeout,
                    hard_timeout=min(hard_timeout, 0xFFFF), xid=session.next_xid())
            except flows.Unrepresentable:
                continue
            session.send(message)
            bridge.installed.setdefault(rule_id, set()).add((rule.priority, rule.match))
            bridge.counters["learned_reinstalled"] += 1

    # ---- introspection ----

    def snapshot(self) -> dict[str, object]:
        return {
            "rules": len(self.store),
            "bridges": [
                {
                    "name": b.name,
                    "datapath_id": f"{b.datapath_id:016x}",
                    "version": b.version,
                    "ports": len(b.ports),
                    "installed_flows": sum(len(v) for v in b.installed.values()),
                    "counters": b.all_counters(),
                }
                for b in self.bridges.values()
            ],
        }
