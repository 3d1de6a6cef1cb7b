"""Each controller's OpenFlow bundles on the proxy's one connection to a bridge.

Bundle ids are per OpenFlow connection, and every controller's messages reach a bridge on the
proxy's one connection: two controllers' bundle 1 would be one bundle there. So each
controller's bundle gets an id of the proxy's (`MAX_OPEN_BUNDLES` open at a time per
controller and bridge), the bridge's replies get the controller's id back, and a controller
that goes away has its open bundles discarded. What a bundle carries is treated as if it came
alone (the northbound's `for_bridge`: tag, band, group and meter ids), and only what would be
relayed alone may be carried. A carried FLOW_MOD's effect on table 0's floor (bands.py) counts
when the bridge confirms the commit, not when it is added: a bundle may still be discarded.

The wire forms are openflow/bundles.py's; this module keeps the state.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .openflow import bundles, switch_side
from .openflow.framing import OFPBRC_BAD_TYPE, OFPET_BAD_REQUEST, Message

if TYPE_CHECKING:
    from .proxy import Bridge

log = logging.getLogger(__name__)

MAX_OPEN_BUNDLES = 64  # per controller and bridge: more is refused (OUT_OF_BUNDLES)
MAX_PENDING_REPLIES = 65536  # per bridge; requests whose replies never come age out
# What may travel in a bundle: PACKET_OUT, FLOW_MOD, GROUP_MOD, PORT_MOD, TABLE_MOD, METER_MOD.
BUNDLEABLE = frozenset({13, 14, 15, 16, 17, 29})


class BundleHost(Protocol):
    """What the relay needs of the northbound."""

    def for_bridge(self, bridge: Bridge, controller: str, message: Message,
                   floor_mods: list[bytes] | None = None) -> tuple[list[bytes], bool] | None: ...
    def bridge_xid(self, bridge: Bridge, controller: str, controller_xid: int,
                   mapped: bool = True) -> int: ...
    def track_table_floor(self, bridge: Bridge, controller: str, raw: bytes) -> bool: ...
    def put_back_table_miss(self, bridge: Bridge, controller: str) -> None: ...
    def refuse(self, bridge: Bridge, controller: str, message: Message, err_type: int,
               code: int) -> None: ...


@dataclass(slots=True)
class OpenBundle:
    """A controller's bundle on the bridge: the proxy's id for it, and the FLOW_MODs whose
    effect on table 0's floor waits for its commit."""

    bridge_id: int
    floor_mods: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Request:
    """A bundle control request awaiting the bridge's reply."""

    key: tuple[str, int]  # (controller, its bundle id)
    control_type: int
    state: OpenBundle


class BundleRelay:
    def __init__(self, host: BundleHost) -> None:
        self.host = host
        self.open: dict[Any, dict[tuple[str, int], OpenBundle]] = {}  # by bridge session
        self._requests: dict[Any, OrderedDict[int, _Request]] = {}  # by bridge session, xid
        self._next_id = 0

    def relay(self, bridge: Bridge, controller: str, message: Message,
              bundle: bundles.Bundle) -> bool:
        """Send a controller's bundle message to the bridge; False if it was refused."""
        session = bridge.session
        open_bundles = self.open.setdefault(session, {})
        key = (controller, bundle.bundle_id)
        state = open_bundles.get(key)
        if state is None:  # an OPEN, or an add or control that opens it implicitly
            if sum(1 for name, _ in open_bundles if name == controller) >= MAX_OPEN_BUNDLES:
                self._refuse(bridge, controller, message, "too many open bundles",
                             bundles.OFPBFC_OUT_OF_BUNDLES)
                return False
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            state = open_bundles[key] = OpenBundle(self._next_id)
        if not bundle.add:
            xid = self.host.bridge_xid(bridge, controller, message.xid)
            requests = self._requests.setdefault(session, OrderedDict())
            requests[xid] = _Request(key, bundle.control_type, state)
            if len(requests) > MAX_PENDING_REPLIES:
                requests.popitem(last=False)
            if bundle.control_type in (bundles.OFPBCT_COMMIT_REQUEST,
                                       bundles.OFPBCT_DISCARD_REQUEST):
                del open_bundles[key]  # it ends here; a commit's reply still finds its state
            session.send(switch_side.rewrite_xid(bundle.with_bundle_id(message.raw,
                                                                       state.bridge_id), xid))
            bridge.counters["bundle_controls"] += 1
            return True
        inner_raw = bundle.inner(message.raw)
        if inner_raw[1] not in BUNDLEABLE:
            # What the proxy would not relay alone (an experimenter message, a request it
            # answers itself) it does not relay inside a bundle either.
            self._refuse(bridge, controller, message, f"message type {inner_raw[1]} in a bundle",
                         bundles.OFPBFC_MSG_UNSUP)
            return False
        inner = Message(inner_raw[0], inner_raw[1], message.xid, inner_raw)
        prepared = self.host.for_bridge(bridge, controller, inner, floor_mods=state.floor_mods)
        if prepared is None:
            return False
        to_send, _ = prepared
        for i, one in enumerate(to_send):
            xid = self.host.bridge_xid(bridge, controller, message.xid,
                                       mapped=i == len(to_send) - 1)
            session.send(bundle.rewrap(message.raw, state.bridge_id, one, xid))
        bridge.counters["bundle_adds"] += 1
        return True

    def _answered(self, bridge: Bridge, xid: int) -> _Request | None:
        requests = self._requests.get(bridge.session)
        return requests.pop(xid, None) if requests is not None else None

    def failed(self, bridge: Bridge, xid: int) -> None:
        """The bridge refused a request: an open it refused is forgotten."""
        request = self._answered(bridge, xid)
        if request is not None and request.control_type == bundles.OFPBCT_OPEN_REQUEST:
            self.open.get(bridge.session, {}).pop(request.key, None)

    def reply(self, bridge: Bridge, xid: int, raw: bytes) -> bytes:
        """A reply from the bridge: to a bundle control request, with the controller's bundle
        id, and a committed bundle's flow-mods now count for table 0's floor; any other reply
        as it is."""
        request = self._answered(bridge, xid)
        if request is None:
            return raw
        controller = request.key[0]
        bundle = bundles.parse(raw)
        if bundle is None:
            return raw
        if request.control_type == bundles.OFPBCT_COMMIT_REQUEST:
            put_back = False
            for flow_mod in request.state.floor_mods:
                put_back = self.host.track_table_floor(bridge, controller, flow_mod) or put_back
            if put_back:
                self.host.put_back_table_miss(bridge, controller)
        return bundle.with_bundle_id(raw, request.key[1])

    def controller_gone(self, bridge: Bridge, controller: str) -> None:
        """The bundles a departed controller left open on the bridge are discarded."""
        open_bundles = self.open.get(bridge.session, {})
        session = bridge.session
        for key in [k for k in open_bundles if k[0] == controller]:
            session.send(bundles.discard(bridge.version, open_bundles.pop(key).bridge_id,
                                         session.next_xid()))

    def bridge_gone(self, session: Any) -> None:
        self.open.pop(session, None)
        self._requests.pop(session, None)

    def _refuse(self, bridge: Bridge, controller: str, message: Message, reason: str,
                code: int) -> None:
        bridge.counters[f"bundles_refused:{controller}"] += 1
        log.warning("%s: controller %s: bundle message (xid %d) refused: %s", bridge.label,
                    controller, message.xid, reason)
        # 1.4+ has bundle errors; ONF's 1.3 extension puts them under experimenter errors,
        # which os-ken apps do not decode: 1.3 gets BAD_REQUEST/BAD_TYPE.
        err_type, err_code = ((bundles.OFPET_BUNDLE_FAILED, code) if message.version >= 0x05
                              else (OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE))
        self.host.refuse(bridge, controller, message, err_type, err_code)
