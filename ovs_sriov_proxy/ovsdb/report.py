"""Text for people of the OVSDB part of `proxy/show` and of `proxy/attach`/`proxy/detach`.

Pure formatting of the JSON documents (OvsdbManager.report); no ovsdbapp import, so the control
socket can use it without loading the OVSDB machinery.
"""

from __future__ import annotations

from typing import Any

STATUS_TEXT = {
    "attached": "attached",
    "attaching": "attaching (the transaction is under way)",
    "waiting": "attached when it appears in OVSDB",
    "detaching": "detaching (restoring its earlier settings)",
    "detached": "detached",
}


def format_status(bridge: str, status: str) -> str:
    return f"{bridge}: {STATUS_TEXT.get(status, status)}\n"


def format_ovsdb(section: dict[str, Any]) -> list[str]:
    """The lines `proxy/show` prints for its `ovsdb` section."""
    state = "connected" if section["connected"] else "not connected"
    offload = section["hw_offload"]
    offload_text = "unknown" if offload is None else "on" if offload else "off"
    if section.get("tc_policy"):
        offload_text += f" (tc-policy {section['tc_policy']})"
    lines = [f"ovsdb {section['remote']}: {state}; hw-offload {offload_text}"]
    if section.get("offload_error"):
        lines.append(f"  offloaded flows unknown: {section['offload_error']}")
    for bridge in section["bridges"]:
        if not bridge["present"]:
            lines.append(f"  {bridge['name']}: {STATUS_TEXT.get(bridge['status'], bridge['status'])}")
            continue
        controllers = ", ".join(
            f"{target}{' (connected)' if target in bridge['connected_controllers'] else ''}"
            for target in bridge["controllers"]) or "none"
        offloaded = ("" if bridge["offloaded_flows"] is None
                     else f", {bridge['offloaded_flows']} offloaded flows")
        lines.append(f"  {bridge['name']}: {bridge['status']}; controller {controllers}; "
                     f"fail_mode {bridge['fail_mode'] or 'default'}; "
                     f"protocols {','.join(bridge['protocols']) or 'default'}; "
                     f"{bridge['ports']} ports{offloaded}")
    return lines
