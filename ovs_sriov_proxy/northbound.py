"""Northbound: the upstream controllers of every connected bridge, and misses resolved through them.

For each connected bridge the proxy keeps one ControllerLink per configured controller; each
controller sees the bridge as a switch (its datapath id, ports and OpenFlow version). For now a
link offers only the bridge's own version, so nothing needs translating (version translation is
a separate issue).

A miss that no rule of the proxy answers is opened in the MissResolver under a buffer id the proxy
owns and offered to the eligible controllers that want it (scope, role, async masks). Every buffer
id a controller sends back is therefore one of ours: its PACKET_OUT or FLOW_MOD is an answer to
that miss. When the miss is decided, only the winner's answer reaches the bridge: a PACKET_OUT
is applied to the saved packet; a FLOW_MOD is installed and the packet released with the flow's
actions, and the flow is learned as a rule of the proxy (with its hard timeout), so that the
proxy answers the next miss for it itself. Nobody answering in time means the miss fallback.

Everything else a controller sends for the bridge is relayed with the xid mapped to one of the
bridge session's own; replies and errors go back to the controller that asked. Each controller's
flows carry its own cookie tag (CONTROLLER_COOKIE_TAG_BASE + its position in the config) in the
top 16 bits, so its deletes are scoped to its own flows (OpenFlow 1.3+) and its FLOW_REMOVEDs
find their way back; the tag is stripped again on the way up.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime
import logging
import ssl
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .arbiter import Arbiter
from .bands import (
    WHOLE_RANGE,
    Band,
    TableFloor,
    assign_bands,
    remap_flow_mod,
    scope_learns,
    unmap_flow_removed,
    unmap_flow_stats_entry,
    view_flow_mod,
)
from .bundle_relay import BundleRelay
from .config import RETAIN_DROP, RETAIN_KEEP, ControllerConfig, TlsConfig
from .id_listing import IdListing
from .idspaces import BridgeIds, IdRefused
from .openflow import bundles, codec, flows, switch_side, translate, wellformed
from .openflow.framing import (
    OFP10,
    OFPBRC_BAD_LEN,
    OFPET_BAD_REQUEST,
    OFPT10_STATS_REPLY,
    OFPT13_MULTIPART_REPLY,
    OFPT_FLOW_MOD,
    OFPT_PACKET_OUT,
    VERSION_NAMES,
    VERSIONS_BY_NAME,
    Message,
    RemoteProtocolError,
    error,
)
from .openflow.packet import NO_BUFFER, OFPR_NO_MATCH, PacketIn, packet_key
from .proxy import Bridge, Proxy
from .resolver import MissResolver, Resolution, UnknownBuffer
from .rules import clock
from .rules.model import OFPP_TABLE, FlowRule, Output, canonical_actions
from .rules.store import RuleChange
from .sessions.controller import (
    ControllerClosed,
    ControllerReady,
    DatapathView,
    Event,
    Relay,
    State,
)
from .sessions.keepalive import SessionTiming
from .sessions.switch import FlowRemoved, PortStatus, SwitchError, SwitchReady
from .sessions.upstream import ControllerLink

log = logging.getLogger(__name__)

CONTROLLER_COOKIE_TAG_BASE = 0x4300  # "C": tag of the first controller; the next gets +1 ...
TAG_SHIFT = 48
LOW_COOKIE = (1 << TAG_SHIFT) - 1
TAG_MASK = 0xFFFF << TAG_SHIFT
_MAY_LEARN = frozenset({13, 14, 15})  # PACKET_OUT, FLOW_MOD, GROUP_MOD (1.0: PORT_MOD, no actions)
OFPBRC_BUFFER_UNKNOWN = 8  # the same code in 1.0 and 1.3+
OFPBRC_EPERM = 5  # the same code in 1.0 and 1.3+
_WIDE_COMMANDS = (1, 3)  # OFPFC_MODIFY, OFPFC_DELETE: not strict
OFPFC_ADD = 0
RETAIN_GRACE = 10.0  # seconds a bridge's link may take to reach a controller before it is "away"
LISTING_TIMEOUT = 5.0  # seconds the bridge may take to list its groups and meters
MAX_MAPPED_XIDS = 65536  # per bridge; relayed requests whose replies never come age out
_U64 = struct.Struct("!Q")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Answer:
    message: Message
    packet_out: switch_side.PacketOut | None


BridgeMiss = tuple[Bridge, int]  # the bridge and its own buffer id for the packet


def client_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS towards a controller: our key and certificate; the controller's must chain to ca_cert.
    Controllers are addressed by IP, and ovs-pki certificates carry no IP names: no hostname check."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.load_cert_chain(tls.certificate, tls.private_key)
    context.load_verify_locations(tls.ca_cert)
    return context


def local_time_now() -> datetime.time:
    return datetime.datetime.now().time()


LinkFactory = Callable[..., ControllerLink]


class Northbound:
    def __init__(self, proxy: Proxy, controllers: Sequence[ControllerConfig], *,
                 miss_timeout: float, timing: SessionTiming,
                 flush_bridges: Callable[[], None] = lambda: None,
                 clock: Callable[[], datetime.time] = local_time_now,
                 link_factory: LinkFactory = ControllerLink,
                 priority_bands: str = "auto") -> None:
        self.proxy = proxy
        self.controllers = list(controllers)
        self.tags = {c.name: CONTROLLER_COOKIE_TAG_BASE + i for i, c in enumerate(controllers)}
        self._owner_of_tag = {tag: name for name, tag in self.tags.items()}
        self._won_by = {c.name: f"won_by:{c.name}" for c in controllers}  # no f-string per miss
        # How long each controller takes to answer a miss (from the PACKET_IN sent up).
        self.answer_latency = {c.name: LatencyHistogram() for c in controllers}
        ranked = sorted(range(len(self.controllers)),
                        key=lambda i: (-self.controllers[i].priority, i))  # by static primacy
        self.bands = assign_bands([self.controllers[i].name for i in ranked], priority_bands)
        self.floors: dict[Any, TableFloor] = {}  # by bridge session: who owns table 0's misses
        self.ids: dict[Any, BridgeIds] = {}  # by bridge session: group and meter ids
        self._listings: dict[Any, IdListing] = {}  # by bridge session: under way (id_listing.py)
        self.bundle_relay = BundleRelay(self)
        self._uses_hours = any(c.primacy is not None and c.primacy.hours for c in controllers)
        proxy.learned_origins = frozenset(self.tags)
        self.arbiter = Arbiter.from_config(controllers)
        self.resolver: MissResolver[BridgeMiss, Answer] = MissResolver(self.arbiter, miss_timeout)
        self.timing = timing
        self.flush_bridges = flush_bridges
        self.clock = clock
        self.link_factory = link_factory
        self._retain = {c.name: c.retain for c in controllers}
        self._revalidating: dict[int, int] = {}  # proxy buffer id -> the unconfirmed rule's id
        self._retaining: set[tuple[str, str]] = set()  # (bridge name, controller): clock runs
        self._stopping = False
        self._tls = {c.name: client_tls_context(c.tls) for c in controllers if c.tls is not None}
        self.links: dict[Any, dict[str, ControllerLink]] = {}  # by bridge session
        self._bridge_of: dict[ControllerLink, Bridge] = {}
        self._xids: dict[Any, OrderedDict[int, tuple[str, int]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._unflushed: set[ControllerLink] = set()
        self._release = {v: flows.PacketOutTemplate((Output(OFPP_TABLE),), v)
                         for v in (0x01, 0x04, 0x05, 0x06)}
        proxy.upstream = self

    def _local_time(self) -> datetime.time:
        """The local time, for primacy hours; without any `hours` it decides nothing, so the
        clock is not read (twice per miss, it was a measurable share of the miss path)."""
        return self.clock() if self._uses_hours else datetime.time()

    # ---- bridges come and go ----

    def bridge_ready(self, bridge: Bridge, ready: SwitchReady) -> None:
        ports = tuple(switch_side.PortDesc(p.port_no, p.name[:15], p.hw_addr)
                      for p in ready.ports.values())
        view = DatapathView(ready.datapath_id, ready.n_tables, ready.n_buffers, 0, ports)
        links = self.links[bridge.session] = {}
        self._xids[bridge.session] = OrderedDict()
        self.floors[bridge.session] = TableFloor()
        ids = self.ids[bridge.session] = BridgeIds([c.name for c in self.controllers])
        for controller in self.controllers:
            versions = offered_versions(controller, bridge.version)
            if not versions:
                log.warning("%s: controller %s speaks none of the versions the proxy can offer "
                            "for this %s bridge (its protocols: %s): not connected", bridge.label,
                            controller.name, VERSION_NAMES.get(bridge.version, "?"),
                            ", ".join(controller.protocols))
                continue
            # With a choice, the bridge's own version wins: nothing to translate.
            prefer = bridge.version if len(versions) > 1 and bridge.version in versions else None
            link = self.link_factory(controller.name, controller.target, versions, view,
                                     self.timing, self._on_link_events,
                                     tls=self._tls.get(controller.name), prefer=prefer)
            links[controller.name] = link
            self._bridge_of[link] = bridge
        if ids.shared and bridge.version != OFP10:
            self._start_listing(bridge)  # the links start when the bridge has listed its ids
        else:
            self._start_links(bridge)

    def _start_links(self, bridge: Bridge) -> None:
        for name, link in self.links.get(bridge.session, {}).items():
            link.start()
            # A controller that cannot be reached from the start (a proxy restarted during its
            # outage) is away as much as one whose link broke: its retain clock starts too.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # driven without a loop (the sans-IO tests): no timers
                continue
            loop.call_later(RETAIN_GRACE, self._retain_if_unreachable, bridge, name)

    def _start_listing(self, bridge: Bridge) -> None:
        """Ask the bridge for its groups, meters and meter limit before any controller connects
        (id_listing.py)."""
        session = bridge.session
        listing = self._listings[session] = IdListing(bridge.version, session.next_xid)
        for request in listing.requests():
            session.send(request)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without a loop (the sans-IO tests): they answer or not
            return
        loop.call_later(LISTING_TIMEOUT, self._listed, bridge,
                        "the bridge did not list them in time")

    def _listed(self, bridge: Bridge, problem: str | None) -> None:
        listing = self._listings.pop(bridge.session, None)
        ids = self.ids.get(bridge.session)
        if listing is None or ids is None:
            return  # done already, or the bridge went away
        ids.set_max_meter(listing.max_meter)
        ids.seed(listing.groups, listing.meters)
        if problem is not None:
            log.warning("%s: listing groups and meters failed (%s); controllers connect anyway, "
                        "and a delete-all of theirs reaches only what they add from now on",
                        bridge.label, problem)
        log.info("%s: %d groups and %d meters on the bridge, meter limit %d, split between "
                 "%d controllers", bridge.label, len(listing.groups), len(listing.meters),
                 listing.max_meter, len(ids.names))
        self._start_links(bridge)

    def _retain_if_unreachable(self, bridge: Bridge, controller: str) -> None:
        link = self.links.get(bridge.session, {}).get(controller)
        if link is None or self._stopping:
            return  # the bridge went away meanwhile
        if link.session is None or link.session.state is not State.READY:
            self._retain_learned(bridge, controller)

    def bridge_gone(self, bridge: Bridge) -> None:
        links = self.links.pop(bridge.session, {})
        self._xids.pop(bridge.session, None)
        self.floors.pop(bridge.session, None)
        self.ids.pop(bridge.session, None)
        self._listings.pop(bridge.session, None)
        self.bundle_relay.bridge_gone(bridge.session)
        for link in links.values():
            self._bridge_of.pop(link, None)
            asyncio.get_running_loop().create_task(link.stop())

    async def stop(self) -> None:
        # The proxy going down is not the controllers going away: no retain clocks start.
        self._stopping = True
        for links in list(self.links.values()):
            for link in links.values():
                await link.stop()
        self.links.clear()

    # ---- the miss path (called by the proxy when no rule answers) ----

    def miss(self, bridge: Bridge, buffer_id: int, total_len: int, in_port: int, reason: int,
             data: bytes, key: int) -> bool:
        """Ask the controllers; False if none can be asked (the proxy then falls back)."""
        return self._ask(bridge, buffer_id, total_len, in_port, reason, data, key) is not None

    def revalidate(self, bridge: Bridge, rule_id: int, buffer_id: int, total_len: int,
                   in_port: int, data: bytes, key: int) -> bool:
        """A hit on an unconfirmed learned rule: ask the controllers as for a miss; if none
        answers in time, the rule answers (and stands confirmed), see _apply."""
        proxy_buffer = self._ask(bridge, buffer_id, total_len, in_port, OFPR_NO_MATCH, data, key)
        if proxy_buffer is None:
            return False
        self._revalidating[proxy_buffer] = rule_id
        return True

    def _ask(self, bridge: Bridge, buffer_id: int, total_len: int, in_port: int, reason: int,
             data: bytes, key: int) -> int | None:
        """Open a miss and send it to the eligible controllers; its proxy buffer id, or None if
        nobody can be asked."""
        links = self.links.get(bridge.session, {})
        if buffer_id == NO_BUFFER and total_len > len(data):
            return None  # we could not release the whole packet ourselves
        wanting = [name for name, link in links.items()
                   if link.session is not None and link.session.wants_packet_in(reason)
                   and link.session.may_answer()]
        asked = self.arbiter.eligible(key, wanting)
        if not asked:
            return None
        now, local_time = time.monotonic(), self._local_time()
        proxy_buffer, evicted = self.resolver.open((bridge, buffer_id), in_port, data, key,
                                                   tuple(asked), now, local_time)
        for resolution in evicted:
            self._apply(resolution)
        for name in asked:
            link = links[name]
            session = link.session
            assert session is not None
            session.send_packet_in(buffer_id=proxy_buffer, total_len=total_len, in_port=in_port,
                                   reason=reason, data=data)
            self.arbiter.record_packet_in(name, now)
            self._unflushed.add(link)  # written once per bridge read, by flush_links
        bridge.counters["asked_controllers"] += 1
        if len(self.resolver) == 1:
            self._schedule()  # deadlines come in opening order: only the first one moves the timer
        return proxy_buffer

    def flush_links(self) -> None:
        """Write what misses queued for the controllers (after each batch read from a bridge)."""
        for link in self._unflushed:
            link.flush()
        self._unflushed.clear()

    def action_packet_in(self, bridge: Bridge, packet_in: PacketIn) -> None:
        """A packet an explicit output:CONTROLLER sent, not a miss, so not resolved: to the
        controller whose flow sent it, known by the cookie's tag, with the tag taken off (Faucet
        ignores packet-ins whose cookie is not its own). A flow nobody tagged (not a
        controller's) has its packets sent to every controller."""
        links = self.links.get(bridge.session, {})
        owner = self._owner_of_tag.get(packet_in.cookie >> TAG_SHIFT)
        if owner is not None:
            targets = [links[owner]] if owner in links else []
            cookie = packet_in.cookie & LOW_COOKIE
        else:
            targets, cookie = list(links.values()), packet_in.cookie
        heard = False
        for link in targets:
            session = link.session
            if session is not None and session.send_packet_in(
                    buffer_id=packet_in.buffer_id, total_len=packet_in.total_len,
                    in_port=packet_in.in_port, reason=packet_in.reason, data=packet_in.data,
                    table_id=packet_in.table_id, cookie=cookie):
                self._unflushed.add(link)  # written once per bridge read, by flush_links
                heard = True
        if not heard:
            bridge.counters["action_packet_ins_unheard"] += 1

    # ---- what controllers send ----

    def _on_link_events(self, link: ControllerLink, events: list[Event]) -> None:
        bridge = self._bridge_of.get(link)
        if bridge is None:
            return
        for event in events:
            if isinstance(event, Relay):
                self._on_relay(bridge, link, event)
            elif isinstance(event, ControllerReady):
                log.info("%s: controller %s connected (OpenFlow 0x%02x)", bridge.label,
                         link.name, event.version)
                self._on_controller_back(bridge, link.name)
            elif isinstance(event, ControllerClosed):
                log.info("%s: controller %s disconnected: %s", bridge.label, link.name, event.reason)
                if self._stopping:
                    continue
                self._retain_learned(bridge, link.name)
                self.bundle_relay.controller_gone(bridge, link.name)
                for resolution in self.resolver.forget_controller(link.name, time.monotonic(),
                                                                   self._local_time()):
                    self._apply(resolution)
        self.flush_bridges()

    # ---- learned rules while their controller is away (its `retain` policy) ----

    def _learned_from(self, bridge: Bridge, controller: str) -> list[int]:
        return [rule_id for rule_id, rule in bridge.classifier.rules()
                if rule.origin == controller and rule.bridge == bridge.name]

    def _retain_learned(self, bridge: Bridge, controller: str) -> None:
        retain = self._retain.get(controller, RETAIN_KEEP)
        key = (bridge.name, controller)
        if retain == RETAIN_KEEP or key in self._retaining:
            return  # a link that failed again while reconnecting: the clock already runs
        store = self.proxy.store
        ids = self._learned_from(bridge, controller)
        if retain == RETAIN_DROP:
            removed = tuple((rule_id, store.remove(rule_id)) for rule_id in ids)
            if removed:
                log.info("%s: %d rules learned from %s dropped (retain = drop)", bridge.label,
                         len(removed), controller)
                self.proxy.apply_rule_change(RuleChange(added=(), removed=removed))
            return
        assert isinstance(retain, float)
        self._retaining.add(key)
        deadline = clock.now() + retain
        for rule_id in ids:
            expires_at = store.meta(rule_id).expires_at
            if expires_at is None or expires_at > deadline:
                store.set_expiry(rule_id, deadline)
        if ids:
            log.info("%s: %d rules learned from %s kept for %g s while it is away", bridge.label,
                     len(ids), controller, retain)

    def _on_controller_back(self, bridge: Bridge, controller: str) -> None:
        """The controller is (again) reachable from this bridge. Its rules get their own
        lifetimes back (a retain deadline, persisted, may have shortened them, in this run or
        before a restart), and what it taught before may be outdated: the next hit on each of
        its rules asks it again (see revalidate). Rules learned on this link are none yet."""
        self._retaining.discard((bridge.name, controller))
        store = self.proxy.store
        ids = self._learned_from(bridge, controller)
        for rule_id in ids:
            rule, meta = store.get(rule_id), store.meta(rule_id)
            assert rule is not None
            own = meta.inserted_at + rule.hard_timeout if rule.hard_timeout else None
            if meta.expires_at != own:
                store.set_expiry(rule_id, own)  # a past one: the expiry sweep removes it
        if ids:
            bridge.unconfirmed.update(ids)
            self.proxy.withdraw(bridge, ids)
            log.info("%s: %d rules learned from %s before this connection will be revalidated",
                     bridge.label, len(ids), controller)

    def _on_relay(self, bridge: Bridge, link: ControllerLink, event: Relay) -> None:
        message, packet_out = event.message, event.packet_out
        if message.version != bridge.version:
            translated = self._translate_down(bridge, link, message)
            if translated is None:
                return
            message = translated
            if packet_out is not None:
                packet_out = switch_side.decode_packet_out(bridge.version, message.raw)
        buffer_id = NO_BUFFER
        if packet_out is not None:
            buffer_id = packet_out.buffer_id
        elif message.type == OFPT_FLOW_MOD:
            buffer_id = _flow_mod_buffer_id(message)
        if buffer_id == NO_BUFFER:
            self._relay_to_bridge(bridge, link.name, message)
            return
        now = time.monotonic()
        asked_at = self.resolver.asked_at(buffer_id)
        try:
            resolution = self.resolver.answer(link.name, buffer_id, Answer(message, packet_out),
                                              now, self._local_time())
        except UnknownBuffer:
            sent = event.message  # in the controller's own version
            self._to_controller(link, error(sent.version, sent.xid, OFPET_BAD_REQUEST,
                                            OFPBRC_BUFFER_UNKNOWN, sent.raw))
            return
        if asked_at is not None:
            self.answer_latency[link.name].observe(now - asked_at)
        if resolution is not None:
            self._apply(resolution)

    def _relay_to_bridge(self, bridge: Bridge, controller: str, message: Message) -> bool:
        """Send a controller's message to the bridge; False if it was not sent (kept back or
        refused)."""
        if message.type in bundles.BUNDLE_TYPES:
            try:
                bundle = bundles.parse(message.raw)
            except RemoteProtocolError as exc:
                self._refuse_malformed(bridge, controller, message, str(exc))
                return False
            if bundle is not None:
                return self.bundle_relay.relay(bridge, controller, message, bundle)
        prepared = self.for_bridge(bridge, controller, message)
        if prepared is None:
            return False
        to_send, put_back_table_miss = prepared
        session = bridge.session
        for i, one in enumerate(to_send):
            # A delete-all of groups or meters may become many deletes: only the last is mapped
            # (deleting what exists does not fail), so that they cannot crowd out the xids of
            # other requests.
            xid = self.bridge_xid(bridge, controller, message.xid, mapped=i == len(to_send) - 1)
            session.send(switch_side.rewrite_xid(one, xid))
        if put_back_table_miss:
            self.put_back_table_miss(bridge, controller)
        if (bridge.version == OFP10 and message.type == OFPT_FLOW_MOD and bridge.classifier.pinned
                and len(message.raw) >= 58 and message.raw[57] in _WIDE_COMMANDS):
            # 1.0 has no cookie mask: a non-strict modify or delete may have reached a policy's
            # flow. (A strict one names a priority below 65535: it cannot.)
            self.proxy.repin(bridge)
        return True

    def put_back_table_miss(self, bridge: Bridge, controller: str) -> None:
        session = bridge.session
        table_miss = flows.table_miss_flow(bridge.version, xid=session.next_xid())
        if table_miss:  # OpenFlow 1.0 sends misses without a flow: nothing to put back
            session.send(table_miss)
            bridge.counters["table_miss_reinstalled"] += 1
            log.info("%s: controller %s removed its catch-all from table 0; the proxy's "
                     "table-miss flow is back", bridge.label, controller)

    def bridge_xid(self, bridge: Bridge, controller: str, controller_xid: int,
                    mapped: bool = True) -> int:
        """A fresh xid on the bridge session; mapped: its reply or error goes back to
        `controller` with `controller_xid`."""
        session = bridge.session
        xid = session.next_xid()
        if mapped:
            xids = self._xids.setdefault(session, OrderedDict())
            xids[xid] = (controller, controller_xid)
            if len(xids) > MAX_MAPPED_XIDS:
                xids.popitem(last=False)
        return xid

    def for_bridge(self, bridge: Bridge, controller: str, message: Message,
                    floor_mods: list[bytes] | None = None) -> tuple[list[bytes], bool] | None:
        """A controller's message as the bridge must get it (cookie tag, priority band, group
        and meter ids), and whether the proxy's table-miss flow must then be put back; None if
        nothing is to be sent (kept back, or refused with an error to the controller).
        `floor_mods`: a FLOW_MOD's effect on table 0's floor waits there (for a bundle's commit)
        instead of being followed now."""
        raw = message.raw
        put_back_table_miss = False
        if message.type == OFPT_PACKET_OUT and bridge.classifier.pinned:
            if self._denied_by_policy(bridge, controller, message):
                return None
        elif message.type == OFPT_FLOW_MOD:
            if _is_table_miss_to_controller(message):
                # The proxy's own table-miss flow already sends every miss up, whole; the
                # controller's (ovs-testcontroller's has max_len 128) would replace it and cut
                # the packets the proxy must be able to release.
                bridge.counters["controller_table_miss_kept_ours"] += 1
                return None
            raw = self._tag_flow_mod(bridge.version, controller, raw)
            raw, clamped = remap_flow_mod(bridge.version, raw, self.bands[controller])
            if clamped:
                bridge.counters[f"priority_clamped:{controller}"] += 1
        elif message.type == (OFPT10_PORT_MOD if message.version == OFP10 else OFPT13_PORT_MOD):
            raw, kept = keep_port_packet_ins(message.version, raw)
            if kept:
                bridge.counters[f"port_no_packet_in_ignored:{controller}"] += 1
        if message.type in _MAY_LEARN:
            raw = self._scope_learns(controller, raw)
        ids = self.ids.get(bridge.session)
        if ids is not None and ids.shared:
            try:
                to_send = ids.down(controller, raw)
            except IdRefused as exc:
                self._refuse_ids(bridge, controller, message, exc)
                return None
        else:
            to_send = [raw]
        if message.type == OFPT_FLOW_MOD:
            if floor_mods is not None:
                floor_mods.append(raw)
            else:
                put_back_table_miss = self.track_table_floor(bridge, controller, raw)
        return to_send, put_back_table_miss

    def _denied_by_policy(self, bridge: Bridge, controller: str, message: Message) -> bool:
        """Whether a controller's PACKET_OUT carries a frame that a policy drops where it says
        the frame came in (then it is refused): a controller may not send what the bridge
        itself would not let through."""
        try:
            packet_out = switch_side.decode_packet_out(bridge.version, message.raw)
        except RemoteProtocolError:
            return False  # the bridge refuses it with its own error
        data = packet_out.data
        if not data:
            return False  # a buffered packet came in through the policies already
        policy = bridge.classifier.pinned_match(packet_key(packet_out.in_port, data))
        if policy is None and len(data) >= 12:
            # A frame with a VM's source MAC is checked as coming from that VM's port too,
            # whatever in_port the controller names.
            ports = self.proxy.ports_by_mac.get(bridge.name, {}).get(
                int.from_bytes(data[6:12], "big"), ())
            for port in ports:
                if port != packet_out.in_port and policy is None:
                    policy = bridge.classifier.pinned_match(packet_key(port, data))
        if policy is None:
            return False
        bridge.counters[f"policy_denied_packet_out:{controller}"] += 1
        log.warning("%s: controller %s sent a PACKET_OUT (xid %d) of a frame that %s drops; "
                    "refused", bridge.label, controller, message.xid, policy.text)
        link = self.links.get(bridge.session, {}).get(controller)
        if link is not None and link.session is not None and link.session.version:
            self._to_controller(link, error(link.session.version, message.xid, OFPET_BAD_REQUEST,
                                            OFPBRC_EPERM, message.raw))
        return True

    def _scope_learns(self, controller: str, raw: bytes, actions_only: bool = False) -> bytes:
        return scope_learns(raw, self.tags[controller] << TAG_SHIFT, TAG_MASK,
                            self.bands[controller], actions_only)

    def refuse(self, bridge: Bridge, controller: str, message: Message, err_type: int,
               code: int) -> None:
        """Answer a controller's message with an OpenFlow error, in its version and xid."""
        link = self.links.get(bridge.session, {}).get(controller)
        if link is not None:
            self._to_controller(link, error(message.version, message.xid, err_type, code,
                                            message.raw))

    def _refuse_malformed(self, bridge: Bridge, controller: str, message: Message,
                          reason: str) -> None:
        bridge.counters[f"untranslatable:{controller}"] += 1
        log.warning("%s: controller %s sent a malformed %s (xid %d): %s", bridge.label,
                    controller, translate.message_name(message.version, message.type),
                    message.xid, reason)
        link = self.links.get(bridge.session, {}).get(controller)
        if link is not None:
            self._to_controller(link, error(message.version, message.xid, OFPET_BAD_REQUEST,
                                            OFPBRC_BAD_LEN, message.raw))

    def _refuse_ids(self, bridge: Bridge, controller: str, message: Message,
                    refused: IdRefused) -> None:
        """A controller's message naming a group or meter outside its slice: its error, and
        nothing reaches the bridge."""
        bridge.counters[f"ids_refused:{controller}"] += 1
        log.warning("%s: controller %s sent %s (xid %d) refused: %s", bridge.label, controller,
                    translate.message_name(message.version, message.type), message.xid,
                    refused.reason)
        link = self.links.get(bridge.session, {}).get(controller)
        if link is not None and link.session is not None and link.session.version:
            version = link.session.version
            self._to_controller(link, error(version, message.xid, refused.err_type, refused.code,
                                            message.raw))

    def track_table_floor(self, bridge: Bridge, controller: str, raw: bytes) -> bool:
        """Follow who owns table 0's misses (see bands.py); True when the proxy's table-miss
        flow must be put back after this FLOW_MOD."""
        floor = self.floors.get(bridge.session)
        view = view_flow_mod(bridge.version, raw)
        if floor is None or view is None:
            return False
        was_owner = controller in floor.owners
        put_back = floor.relayed(controller, view, self.bands[controller])
        if controller in floor.owners and not was_owner:
            bridge.counters[f"table0_catch_all:{controller}"] += 1
            log.info("%s: controller %s installed a catch-all in table 0 (priority %d): packets "
                     "no higher flow matches go through its pipeline, not to the proxy",
                     bridge.label, controller, view.priority)
        self.proxy.cover_rules(bridge, floor.owned)
        return put_back

    def _tag_flow_mod(self, version: int, controller: str, raw: bytes) -> bytes:
        """Put the controller's tag in the cookie; on 1.3+ also in the cookie mask of a
        modify/delete, so that they only reach this controller's flows."""
        tag = self.tags[controller] << TAG_SHIFT
        out = bytearray(raw)
        cookie_at = 48 if version == OFP10 else 8
        (cookie,) = _U64.unpack_from(out, cookie_at)
        _U64.pack_into(out, cookie_at, tag | cookie & LOW_COOKIE)
        if version != OFP10 and out[25] != OFPFC_ADD:
            (mask,) = _U64.unpack_from(out, 16)
            _U64.pack_into(out, 16, mask | (0xFFFF << TAG_SHIFT))
        return bytes(out)

    # ---- deciding a miss ----

    def _apply(self, resolution: Resolution[BridgeMiss, Answer]) -> None:
        bridge, bridge_buffer = resolution.miss.bridge
        miss = resolution.miss
        stale = self._revalidating.pop(miss.buffer_id, None)
        if self.proxy.bridges.get(bridge.session) is not bridge:
            return  # the bridge went away meanwhile
        if resolution.answer is None or resolution.winner is None:
            bridge.counters["controllers_silent"] += 1
            if stale is not None and self.proxy.store.get(stale) is not None:
                if resolution.timed_out:  # asked, and nobody objected: the rule stands
                    bridge.unconfirmed.discard(stale)
                    self.proxy.store.renew(stale, clock.now())
                    bridge.counters["revalidated_unchanged"] += 1
                # (given up unasked, e.g. its controller left: still in doubt, but the packet
                # is answered by the rule all the same)
                self.proxy.answer_from_rule(bridge, bridge_buffer, miss.in_port, miss.data,
                                            miss.key)
                return
            self.proxy.fallback(bridge, bridge_buffer, miss.in_port, miss.data)
            return
        if stale is not None:
            self._settle_revalidation(bridge, stale, resolution.winner, resolution.answer)
        winner, answer = resolution.winner, resolution.answer
        bridge.counters[self._won_by[winner]] += 1
        session = bridge.session
        data = miss.data if bridge_buffer == NO_BUFFER else b""
        if answer.packet_out is not None:
            actions = self._scope_learns(winner, answer.packet_out.actions_raw, actions_only=True)
            ids = self.ids.get(bridge.session)
            if ids is not None:
                try:
                    actions = ids.map_actions(winner, bridge.version, actions)
                except IdRefused as exc:
                    self._refuse_ids(bridge, winner, answer.message, exc)
                    self.proxy.fallback(bridge, bridge_buffer, miss.in_port, miss.data)
                    return
            session.send(_packet_out(bridge.version, bridge_buffer, miss.in_port, actions,
                                     data, session.next_xid()))
            return
        flow_mod = bytearray(self._tag_flow_mod(bridge.version, winner, answer.message.raw))
        _set_flow_mod_buffer_id(flow_mod, bridge.version, bridge_buffer)
        if not self._relay_to_bridge(bridge, winner, Message(
                answer.message.version, OFPT_FLOW_MOD, answer.message.xid, bytes(flow_mod))):
            # Refused: releasing the packet through the table would only bring it back.
            self.proxy.fallback(bridge, bridge_buffer, miss.in_port, miss.data)
            return
        if bridge_buffer == NO_BUFFER:
            # Through the table, where the flow just installed now matches it.
            session.send(self._release[bridge.version].render(session.next_xid(), miss.in_port,
                                                              NO_BUFFER, miss.data))
        self._learn(bridge, winner, answer.message)

    def _settle_revalidation(self, bridge: Bridge, stale: int, winner: str, answer: Answer) -> None:
        """A controller answered a hit on an unconfirmed rule: an answer that is the same flow
        confirms it; anything else replaces it (the winner's answer is applied as any miss's)."""
        bridge.unconfirmed.discard(stale)
        store = self.proxy.store
        rule = store.get(stale)
        if rule is None:
            return
        if answer.packet_out is None and rule.origin == winner:
            learned = self._rule_of(bridge, winner, answer.message)
            if learned is not None and store.find(learned) == stale:
                bridge.counters["revalidated_unchanged"] += 1
                return  # _learn renews it
        store.remove(stale)
        bridge.counters["revalidated_replaced"] += 1
        self.proxy.apply_rule_change(RuleChange(added=(), removed=((stale, rule),)))

    def _rule_of(self, bridge: Bridge, controller: str, message: Message) -> FlowRule | None:
        """The rule a controller's FLOW_MOD would be learned as (None: not learnable)."""
        try:
            msg = _decode_flow_mod(message)
            if getattr(msg, "table_id", 0) != 0:
                raise flows.Unrepresentable("not table 0")
            match = flows.decode_match(msg.match, message.version)
            actions = flows.decode_actions(
                msg.actions if message.version == OFP10 else msg.instructions, message.version,
                match)
        except (flows.Unrepresentable, ValueError) as exc:
            log.debug("%s: flow from %s not learnable: %s", bridge.label, controller, exc)
            return None
        # Learned at the priority its flow has on the bridge (in the controller's band).
        priority, _ = self.bands[controller].to_bridge(msg.priority)
        return FlowRule(match, canonical_actions(actions), priority=priority,
                        idle_timeout=msg.idle_timeout, hard_timeout=msg.hard_timeout,
                        bridge=bridge.name, origin=controller, text=f"learned from {controller}")

    def _learn(self, bridge: Bridge, controller: str, message: Message) -> None:
        rule = self._rule_of(bridge, controller, message)
        if rule is None:
            bridge.counters["not_learned"] += 1
            return
        store = self.proxy.store
        now = clock.now()
        known = store.find(rule)
        if known is not None:  # given again: its hard timeout starts over, as on the bridge
            store.renew(known, now)
            return  # wall clock: the hard timeout keeps counting across a restart
        rule_id = store.add(rule, now=now,
                            expires_at=now + rule.hard_timeout if rule.hard_timeout else None)
        self.proxy.apply_rule_change(RuleChange(added=((rule_id, rule),), removed=()))
        bridge.counters["learned"] += 1

    # ---- what the bridge sends that concerns controllers ----

    def bridge_message(self, bridge: Bridge, message: Message) -> None:
        """A reply from the bridge: back to the controller whose request it answers."""
        listing = self._listings.get(bridge.session)
        if listing is not None and listing.expects(message.xid):
            if listing.reply(message):
                self._listed(bridge, None)
            return
        xids = self._xids.get(bridge.session)
        entry = xids.get(message.xid) if xids is not None else None
        if entry is None or xids is None:
            return
        controller, controller_xid = entry
        more = (message.type in (OFPT10_STATS_REPLY, OFPT13_MULTIPART_REPLY)
                and len(message.raw) >= 12 and message.raw[11] & 1)
        if not more:
            del xids[message.xid]
        link = self.links.get(bridge.session, {}).get(controller)
        if link is not None:
            raw = untag_flow_stats(message, self.tags[controller], self.bands[controller])
            ids = self.ids.get(bridge.session)
            if ids is not None:
                raw = ids.up(controller, raw)
            raw = self.bundle_relay.reply(bridge, message.xid, raw)
            for reply in self._translate_up(bridge, link, raw, controller_xid):
                self._to_controller(link, switch_side.rewrite_xid(reply, controller_xid))

    def bridge_error(self, bridge: Bridge, event: SwitchError, version: int) -> None:
        self.bundle_relay.failed(bridge, event.xid)
        listing = self._listings.get(bridge.session)
        if listing is not None and listing.expects(event.xid):
            if listing.error(event.xid):
                self._listed(bridge, None)
            return
        xids = self._xids.get(bridge.session)
        entry = xids.pop(event.xid, None) if xids is not None else None
        if entry is None:
            return
        controller, controller_xid = entry
        ids = self.ids.get(bridge.session)
        if ids is not None:
            ids.add_failed(controller, event.data, event.err_type, event.code)
        link = self.links.get(bridge.session, {}).get(controller)
        if link is not None and link.session is not None:
            to_version = link.session.version or version
            err_type, code = translate.map_error(version, to_version, event.err_type, event.code)
            self._to_controller(link, error(to_version, controller_xid, err_type, code,
                                            event.data))

    def port_status(self, bridge: Bridge, event: PortStatus) -> None:
        for link in self.links.get(bridge.session, {}).values():
            session = link.session
            if session is not None and session.wants_port_status(event.reason) and event.raw:
                for raw in self._translate_up(bridge, link, event.raw):
                    self._to_controller(link, raw)

    def flow_removed(self, bridge: Bridge, event: FlowRemoved) -> None:
        """A FLOW_REMOVED of a controller's flow: to that controller, its tag stripped."""
        tag = event.msg.cookie >> TAG_SHIFT
        for controller, controller_tag in self.tags.items():
            if controller_tag != tag:
                continue
            link = self.links.get(bridge.session, {}).get(controller)
            session = link.session if link is not None else None
            if link is None or session is None or not session.wants_flow_removed(event.msg.reason):
                return
            raw = bytearray(event.raw)
            cookie_at = 8 + 40 if bridge.version == OFP10 else 8
            _U64.pack_into(raw, cookie_at, event.msg.cookie & LOW_COOKIE)
            removed = unmap_flow_removed(bridge.version, bytes(raw), self.bands[controller])
            for up in self._translate_up(bridge, link, removed):
                self._to_controller(link, up)

    # ---- version translation (openflow/translate.py) when controller and bridge differ ----

    def _translate_down(self, bridge: Bridge, link: ControllerLink,
                        message: Message) -> Message | None:
        """A controller's message in the bridge's version; None when the bridge's version has
        no equivalent: the controller then gets the OpenFlow error and nothing reaches the
        bridge."""
        try:
            [translated] = translate.translate_message(message, bridge.version)
        except RemoteProtocolError as exc:
            bridge.counters[f"untranslatable:{link.name}"] += 1
            log.warning("%s: controller %s sent a malformed %s (xid %d): %s", bridge.label,
                        link.name, translate.message_name(message.version, message.type),
                        message.xid, exc)
            self._to_controller(link, error(message.version, message.xid, OFPET_BAD_REQUEST,
                                            OFPBRC_BAD_LEN, message.raw))
            return None
        except translate.Untranslatable as exc:
            bridge.counters[f"untranslatable:{link.name}"] += 1
            log.warning("%s: controller %s sent %s (xid %d) that OpenFlow 0x%02x cannot carry, "
                        "answered with an error: %s", bridge.label, link.name,
                        translate.message_name(message.version, message.type), message.xid,
                        bridge.version, exc.reason)
            self._to_controller(link, exc.error_message(message.version, message.xid,
                                                        message.raw))
            return None
        bridge.counters["translated_down"] += 1
        return translated

    def _translate_up(self, bridge: Bridge, link: ControllerLink, raw: bytes,
                      reply_xid: int | None = None) -> list[bytes]:
        """A message of the bridge in the controller's version (a statistics reply may become
        several). A reply that cannot be translated fails the controller's request with an error
        (`reply_xid`); anything else is dropped; both are logged."""
        session = link.session
        if session is None or not session.version or session.version == raw[0]:
            return [raw]
        try:
            out = translate.translate(raw, session.version)
        except RemoteProtocolError as exc:
            bridge.counters[f"untranslatable_up:{link.name}"] += 1
            log.warning("%s: malformed %s from the bridge not translated for controller %s: %s",
                        bridge.label, translate.message_name(raw[0], raw[1]), link.name, exc)
            return []
        except translate.Untranslatable as exc:
            bridge.counters[f"untranslatable_up:{link.name}"] += 1
            log.warning("%s: %s for controller %s has no OpenFlow 0x%02x equivalent: %s",
                        bridge.label, translate.message_name(raw[0], raw[1]), link.name,
                        session.version, exc.reason)
            if reply_xid is None:
                return []
            return [exc.error_message(session.version, reply_xid, b"")]
        bridge.counters["translated_up"] += 1
        return out

    def _to_controller(self, link: ControllerLink, raw: bytes) -> None:
        if link.session is not None:
            link.session.send(raw)
            link.flush()

    # ---- the timer: misses nobody answered in time (rule expiry is the daemon's) ----

    async def run(self) -> None:
        """Keep the timer going until cancelled (the daemon runs this as a task)."""
        try:
            self._schedule()
            await asyncio.Event().wait()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _schedule(self) -> None:
        """One loop timer at the earliest deadline, moved only when that deadline changes (a
        task or wait_for per miss measured as the most expensive part of the miss path)."""
        when = self.resolver.next_deadline()
        if when is None:
            return
        if self._timer is not None and not self._timer.cancelled() and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        # Deadlines are time.monotonic(); the loop's clock may differ: convert.
        self._timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.monotonic()
        for resolution in self.resolver.expire(now, self._local_time()):
            self._apply(resolution)
        self.flush_bridges()
        self._schedule()


# Upper bounds (seconds) of the answer latency buckets: 100 µs to the longest miss_timeout.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class LatencyHistogram:
    """Counts of observations per bucket (the last one: above every bound) and their sum: what
    a Prometheus histogram needs, kept on the miss path for the cost of a bisection."""

    BOUNDS: ClassVar[tuple[float, ...]] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


def offered_versions(controller: ControllerConfig, bridge_version: int) -> frozenset[int]:
    """The versions offered to a controller for a bridge: those it is configured for that equal
    the bridge's or translate to it (1.0 <-> 1.3)."""
    configured = frozenset(VERSIONS_BY_NAME[name] for name in controller.protocols)
    return configured & translate.translatable_versions(bridge_version)


def _flow_mod_buffer_id(message: Message) -> int:
    offset = 8 + 40 + 16 if message.version == OFP10 else 32
    if len(message.raw) < offset + 4:
        return NO_BUFFER
    (buffer_id,) = _U32.unpack_from(message.raw, offset)
    return int(buffer_id)


OFPT10_PORT_MOD, OFPT13_PORT_MOD = 15, 16
OFPPC_NO_PACKET_IN = 1 << 6  # the same bit in 1.0 and 1.3+
OFPST_FLOW = 1  # flow statistics: OFPST_FLOW in 1.0, OFPMP_FLOW in 1.3+
# Where the cookie sits in one flow-stats entry (after the 1.0 ofp_match, or the 1.3+ fixed part).
_STATS_COOKIE_AT = {OFP10: 64}
_STATS_COOKIE_AT_13 = 24


def untag_flow_stats(message: Message, tag: int, band: Band = WHOLE_RANGE) -> bytes:
    """A flow statistics reply with `tag` taken off the cookies of the controller's own flows, so
    that it recognises them (an agent that deletes every cookie it does not own would otherwise
    delete its own flows), and their priorities moved back out of the controller's `band`.
    Flows of others keep their cookies. Anything else is returned as is."""
    raw = message.raw
    if message.version == OFP10:
        body_at = 12
        if message.type != OFPT10_STATS_REPLY or len(raw) < body_at:
            return raw
    else:
        body_at = 16
        if message.type != OFPT13_MULTIPART_REPLY or len(raw) < body_at:
            return raw
    (stats_type,) = struct.unpack_from("!H", raw, 8)
    if stats_type != OFPST_FLOW:
        return raw
    cookie_at = _STATS_COOKIE_AT.get(message.version, _STATS_COOKIE_AT_13)
    out = bytearray(raw)
    offset = body_at
    while offset + cookie_at + 8 <= len(out):
        (length,) = struct.unpack_from("!H", out, offset)
        if length < cookie_at + 8 or offset + length > len(out):
            break  # malformed from the bridge: leave the rest untouched
        (cookie,) = _U64.unpack_from(out, offset + cookie_at)
        if cookie >> TAG_SHIFT == tag:
            _U64.pack_into(out, offset + cookie_at, cookie & LOW_COOKIE)
            unmap_flow_stats_entry(message.version, out, offset, band)
        offset += length
    return bytes(out)


def keep_port_packet_ins(version: int, raw: bytes) -> tuple[bytes, bool]:
    """A PORT_MOD without any change to the port's NO_PACKET_IN bit (taken out of its mask), and
    whether it had one: a controller must not stop the misses of a port for the proxy and for
    every other controller (it can still set its own async config)."""
    at = 20 if version == OFP10 else 28  # the mask (after the config)
    if len(raw) < at + 4:
        return raw, False
    (mask,) = _U32.unpack_from(raw, at)
    if not mask & OFPPC_NO_PACKET_IN:
        return raw, False
    out = bytearray(raw)
    _U32.pack_into(out, at, mask & ~OFPPC_NO_PACKET_IN)
    return bytes(out), True


def _is_table_miss_to_controller(message: Message) -> bool:
    """An ADD of the table-miss flow of table 0 (priority 0, empty match) that outputs to
    CONTROLLER and does nothing else."""
    raw = message.raw
    if message.version == OFP10:
        if len(raw) < 72 + 8:
            return False
        wildcards, = _U32.unpack_from(raw, 8)
        command, priority = struct.unpack_from("!H4xH", raw, 56)
        actions = raw[72:]
        return (wildcards & 0x3FFFFF == 0x3FFFFF and command == OFPFC_ADD and priority == 0
                and len(actions) == 8 and actions[:2] == b"\x00\x00"
                and actions[4:6] == b"\xff\xfd")  # one OUTPUT to OFPP_CONTROLLER
    if len(raw) < 56:
        return False
    table_id, command = raw[24], raw[25]
    (priority,) = struct.unpack_from("!H", raw, 30)
    (match_len,) = struct.unpack_from("!H", raw, 50)
    if table_id != 0 or command != OFPFC_ADD or priority != 0 or match_len != 4:
        return False
    instructions = raw[56:]
    # One APPLY_ACTIONS (type 4, length 24) holding one OUTPUT (type 0, length 16) to CONTROLLER.
    return (len(instructions) == 24 and instructions[:4] == b"\x00\x04\x00\x18"
            and instructions[8:12] == b"\x00\x00\x00\x10"
            and instructions[12:16] == b"\xff\xff\xff\xfd")


def _set_flow_mod_buffer_id(raw: bytearray, version: int, buffer_id: int) -> None:
    _U32.pack_into(raw, 8 + 40 + 16 if version == OFP10 else 32, buffer_id)


def _decode_flow_mod(message: Message) -> Any:
    parser = codec.parser(message.version)
    try:
        wellformed.check_flow_mod(message.version, message.raw)  # or os-ken may loop forever
        return parser.OFPFlowMod.parser(codec.datapath(message.version), message.version,
                                        message.type, len(message.raw), message.xid, message.raw)
    except Exception as exc:  # os-ken raises many kinds on bad input
        raise ValueError(f"undecodable FLOW_MOD: {exc!r}") from exc


def _packet_out(version: int, buffer_id: int, in_port: int, actions_raw: bytes, data: bytes,
                xid: int) -> bytes:
    """A PACKET_OUT with actions as the controller wrote them (same version as the bridge)."""
    if version == OFP10:
        body = struct.pack("!IHH", buffer_id, flows.port_to_of10(in_port), len(actions_raw))
    elif version in (0x04, 0x05):
        body = struct.pack("!IIH6x", buffer_id, in_port, len(actions_raw))
    else:  # 1.5: in_port lives in a match
        match = struct.pack("!HHII", 1, 12, 0x80000004, in_port) + bytes(4)
        body = struct.pack("!IH2x", buffer_id, len(actions_raw)) + match
    return struct.pack("!BBHI", version, 13, 8 + len(body) + len(actions_raw) + len(data), xid) \
        + body + actions_raw + data

