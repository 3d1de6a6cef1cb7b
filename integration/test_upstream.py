"""The upstream link (the proxy playing the switch) against a real controller: ovs-testcontroller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from ovs_sriov_proxy.openflow.framing import OFP10, OFP13
from ovs_sriov_proxy.openflow.switch_side import PortDesc
from ovs_sriov_proxy.sandbox import free_port, udp_frame
from ovs_sriov_proxy.sessions.controller import (
    ControllerClosed,
    ControllerReady,
    DatapathView,
    Relay,
)
from ovs_sriov_proxy.sessions.switch import SessionTiming
from ovs_sriov_proxy.sessions.upstream import ControllerLink
from ovs_sriov_proxy.targets import parse_active

VIEW = DatapathView(0x42, 254, 256, 0, (PortDesc(1, "p1", "02:00:00:00:00:01"),
                                        PortDesc(2, "p2", "02:00:00:00:00:02")))
FRAME = udp_frame("00:00:00:00:00:01", "00:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 1, 2, b"x" * 64)


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def answered(events: list, buffer_id: int) -> bool:
    """A PACKET_OUT or FLOW_MOD carrying our buffer id back."""
    for event in events:
        if not isinstance(event, Relay):
            continue
        if event.packet_out is not None and event.packet_out.buffer_id == buffer_id:
            return True
        raw = event.message.raw
        if event.message.type == 14:  # FLOW_MOD: buffer_id after the match (1.0) / fixed part (1.3)
            offset = 8 + 40 + 16 if event.message.version == OFP10 else 32
            if int.from_bytes(raw[offset:offset + 4], "big") == buffer_id:
                return True
    return False


@pytest.mark.parametrize("version, protocol", [(OFP10, "OpenFlow10"), (OFP13, "OpenFlow13")])
def test_link_answers_a_real_controller_and_reconnects_after_it_restarts(ovs, version,
                                                                        protocol) -> None:
    port = free_port()
    controller = ovs.start_testcontroller(port, protocols=(protocol,))
    events: list = []

    async def scenario() -> None:
        link = ControllerLink("tc", parse_active(f"tcp:127.0.0.1:{port}"), frozenset({version}),
                              VIEW, SessionTiming(), lambda _link, new: events.extend(new),
                              initial_backoff=0.05, max_backoff=0.5)
        link.start()
        try:
            await until(lambda: any(isinstance(e, ControllerReady) for e in events), 10,
                        "the handshake with ovs-testcontroller")
            session = link.session
            assert session is not None and session.version == version
            # The controller is only ready once it has had our features reply: retry the miss
            # until its answer comes back with our buffer id.
            deadline = time.monotonic() + 10
            while not answered(events, 77):
                assert time.monotonic() < deadline, f"no answer to the miss; events: {events}"
                session.send_packet_in(buffer_id=77, total_len=len(FRAME), in_port=1, reason=0,
                                       data=FRAME)
                link.flush()
                await asyncio.sleep(0.2)
            ovs.stop_process(controller)
            await until(lambda: any(isinstance(e, ControllerClosed) for e in events), 10,
                        "the link to notice the controller is gone")
            ovs.start_testcontroller(port, protocols=(protocol,))
            await until(lambda: link.connects >= 2, 10, "the link to reconnect")
            await until(lambda: sum(isinstance(e, ControllerReady) for e in events) >= 2, 10,
                        "a second handshake")
        finally:
            await link.stop()

    asyncio.run(scenario())
