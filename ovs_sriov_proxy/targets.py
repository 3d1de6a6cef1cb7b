"""OVS connection target syntax: where the proxy listens and where its controllers are.

Passive targets are the proxy's own listening sockets, written as the bridges' `set-controller`
targets would name them from the other side: `ptcp:PORT[:IP]`, `pssl:PORT[:IP]`, `punix:PATH`.
Active targets are controllers the proxy connects to: `tcp:IP[:PORT]`, `ssl:IP[:PORT]`,
`unix:PATH`. IPv6 addresses go in brackets (`ptcp:6653:[::1]`, `tcp:[::1]:6653`). Only IP
addresses are accepted, not host names, so that nothing here needs a resolver.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_OPENFLOW_PORT",
    "ActiveTarget",
    "PassiveTarget",
    "TargetError",
    "parse_active",
    "parse_passive",
]

DEFAULT_OPENFLOW_PORT = 6653
DEFAULT_LISTEN_HOST = "0.0.0.0"

TargetKind = Literal["tcp", "ssl", "unix"]

_PASSIVE_FORMS = "ptcp:PORT[:IP], pssl:PORT[:IP] or punix:PATH"
_ACTIVE_FORMS = "tcp:IP[:PORT], ssl:IP[:PORT] or unix:PATH"


class TargetError(ValueError):
    """A connection target that is not in OVS target syntax."""


def _render_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class PassiveTarget:
    """A socket the proxy listens on."""

    kind: TargetKind
    host: str | None = None  # IP address to bind, canonical form; None for unix
    port: int | None = None  # 0 picks an ephemeral port; None for unix
    path: str | None = None  # socket path for unix

    @property
    def uses_tls(self) -> bool:
        return self.kind == "ssl"

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"punix:{self.path}"
        assert self.host is not None
        return f"p{self.kind}:{self.port}:{_render_host(self.host)}"


@dataclass(frozen=True, slots=True)
class ActiveTarget:
    """A controller the proxy connects to."""

    kind: TargetKind
    host: str | None = None  # IP address, canonical form; None for unix
    port: int | None = None  # None for unix
    path: str | None = None  # socket path for unix

    @property
    def uses_tls(self) -> bool:
        return self.kind == "ssl"

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        assert self.host is not None
        return f"{self.kind}:{_render_host(self.host)}:{self.port}"


def _fail(text: str, problem: str, forms: str) -> TargetError:
    return TargetError(f"invalid target {text!r}: {problem} (expected {forms})")


def _port(text: str, port: str, forms: str, minimum: int) -> int:
    if not port.isdigit() or not minimum <= int(port) <= 65535:
        raise _fail(text, f"port {port!r} is not a number in {minimum}..65535", forms)
    return int(port)


def _address(text: str, host: str, forms: str) -> str:
    """Canonical text of an IP address written bare (IPv4) or in brackets (IPv6)."""
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _fail(text, f"{host!r} is not an IP address", forms) from None
    if address.version == 6 and not bracketed:
        raise _fail(text, f"IPv6 address {host!r} must be in brackets", forms)
    if address.version == 4 and bracketed:
        raise _fail(text, f"only IPv6 addresses go in brackets, not {host!r}", forms)
    return str(address)


def _split_host_port(rest: str) -> tuple[str, str | None]:
    """HOST[:PORT] where HOST may be [IPv6]."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            return rest, None
        host, after = rest[: end + 1], rest[end + 1 :]
        if not after:
            return host, None
        if after.startswith(":"):
            return host, after[1:]
        return rest, None  # garbage after the bracket; _address rejects it
    if rest.count(":") == 1:
        host, _, port = rest.partition(":")
        return host, port
    return rest, None


def _path(text: str, path: str, forms: str) -> str:
    if not path:
        raise _fail(text, "empty socket path", forms)
    return path


def parse_passive(text: str) -> PassiveTarget:
    """`ptcp:PORT[:IP]`, `pssl:PORT[:IP]` (IP defaults to 0.0.0.0) or `punix:PATH`."""
    forms = _PASSIVE_FORMS
    method, colon, rest = text.partition(":")
    if not colon or method not in ("ptcp", "pssl", "punix"):
        raise _fail(text, f"unknown method {method!r}", forms)
    if method == "punix":
        return PassiveTarget("unix", path=_path(text, rest, forms))
    port_text, colon, host = rest.partition(":")
    if not port_text:
        raise _fail(text, "missing port", forms)
    port = _port(text, port_text, forms, minimum=0)
    if colon and not host:
        raise _fail(text, "missing IP address after ':'", forms)
    address = _address(text, host, forms) if host else DEFAULT_LISTEN_HOST
    return PassiveTarget("tcp" if method == "ptcp" else "ssl", host=address, port=port)


def parse_active(text: str) -> ActiveTarget:
    """`tcp:IP[:PORT]`, `ssl:IP[:PORT]` (PORT defaults to 6653) or `unix:PATH`."""
    forms = _ACTIVE_FORMS
    method, colon, rest = text.partition(":")
    if not colon or method not in ("tcp", "ssl", "unix"):
        raise _fail(text, f"unknown method {method!r}", forms)
    if method == "unix":
        return ActiveTarget("unix", path=_path(text, rest, forms))
    if not rest:
        raise _fail(text, "missing IP address", forms)
    host, port_text = _split_host_port(rest)
    if port_text is not None and not port_text:
        raise _fail(text, "missing port after ':'", forms)
    port = DEFAULT_OPENFLOW_PORT if port_text is None else _port(text, port_text, forms, minimum=1)
    kind: TargetKind = "tcp" if method == "tcp" else "ssl"
    return ActiveTarget(kind, host=_address(text, host, forms), port=port)
