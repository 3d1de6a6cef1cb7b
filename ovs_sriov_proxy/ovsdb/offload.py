"""Counting hardware-offloaded datapath flows per bridge, from `ovs-appctl dpctl/dump-flows`.

OVS shows offloaded flows with `dpctl/dump-flows -m type=offloaded`. Each line names its input
port (`in_port(NAME)` with -m), and the port's name tells the bridge. On kernels with TC flower
offload this lists what the NIC holds. The dummy datapath's flow API offloads partially (marks
only), and on OVS 3.1 it lists nothing, so there the count is 0.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping

_IN_PORT = re.compile(r"\bin_port\(([^)]*)\)")
APPCTL_TIMEOUT = 5.0


class OffloadQueryFailed(Exception):
    """ovs-appctl could not be run or did not answer."""


def count_offloaded(dump: str, bridge_of_port: Mapping[str, str]) -> Counter[str]:
    """Offloaded flows per bridge in a `dpctl/dump-flows -m type=offloaded` dump; flows whose
    input port belongs to no known bridge are left out."""
    counts: Counter[str] = Counter()
    for line in dump.splitlines():
        found = _IN_PORT.search(line)
        if found is None:
            continue
        bridge = bridge_of_port.get(found.group(1))
        if bridge is not None:
            counts[bridge] += 1
    return counts


async def dump_offloaded(target: str, timeout: float = APPCTL_TIMEOUT) -> str:
    """The text of `ovs-appctl -t TARGET dpctl/dump-flows -m type=offloaded`."""
    try:
        process = await asyncio.create_subprocess_exec(
            "ovs-appctl", "-t", target, "dpctl/dump-flows", "-m", "type=offloaded",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise OffloadQueryFailed(f"cannot run ovs-appctl: {exc.strerror or exc}") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise OffloadQueryFailed(f"ovs-appctl -t {target} did not answer within {timeout:g} s") from None
    if process.returncode != 0:
        detail = stderr.decode(errors="replace").strip() or f"exit code {process.returncode}"
        raise OffloadQueryFailed(f"ovs-appctl -t {target} dpctl/dump-flows: {detail}")
    return stdout.decode(errors="replace")
