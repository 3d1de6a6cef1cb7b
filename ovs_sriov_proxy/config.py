"""The proxy's TOML configuration: schema, validation and error locations.

Everything is checked before anything starts, and every problem is reported as
`{file}:{line}: {key}: {problem}` (e.g. `proxy.toml:12: rules[2].flow: unknown action 'outptu'`).
Array indices in keys count from 0. tomllib gives no positions, so a small scanner (`_Locator`)
maps each key path to the line where it is written; it runs only on text tomllib accepted.
The result is immutable: reloading means loading a new `Config`.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .rules.flowparse import FlowSyntaxError, parse_flow, parse_match
from .rules.model import FlowRule, Match
from .rules.store import LOCAL_ORIGINS
from .targets import (
    ActiveTarget,
    PassiveTarget,
    TargetError,
    parse_active,
    parse_passive,
)

__all__ = [
    "PROTOCOLS",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ControllerConfig",
    "MetricsConfig",
    "OvsdbConfig",
    "PolicyConfig",
    "PrimacyConfig",
    "ProxyConfig",
    "TimeWindow",
    "TlsConfig",
    "VmRule",
    "load_config",
    "parse_config",
]

PROTOCOLS = ("OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15")
MISS_FALLBACKS = ("drop", "flood", "normal")
PRIORITY_BAND_MODES = ("auto", "off")  # see bands.py
DEFAULT_LISTEN = ("ptcp:6653:127.0.0.1",)
DEFAULT_STATE_DIR = "/var/lib/ovs-sriov-proxy"
DEFAULT_CONTROL_SOCKET = "/run/ovs-sriov-proxy/ovs-sriov-proxy.ctl"
MAX_MISS_TIMEOUT_MS = 60_000
MAX_CONTROLLER_PRIORITY = 2**31 - 1

KeyPath = tuple[str | int, ...]
MissFallback = Literal["drop", "flood", "normal"]


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Key material for an ssl:/pssl: connection (paths are absolute once loaded)."""

    private_key: Path
    """PEM private key of this end."""
    certificate: Path
    """PEM certificate of this end, matching private_key."""
    ca_cert: Path
    """PEM CA certificate the peer's certificate must chain to."""




@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily local-time window; one whose end is before its start wraps midnight."""

    start: datetime.time
    """First minute inside the window."""
    end: datetime.time
    """First minute after the window (00:00 for a window ending at 24:00)."""

    def contains(self, moment: datetime.time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        end = "24:00" if self.end == datetime.time(0, 0) else self.end.strftime("%H:%M")
        return f"{self.start.strftime('%H:%M')}-{end}"


@dataclass(frozen=True, slots=True)
class PrimacyConfig:
    """When a controller's answers win over higher-priority ones (used by the arbiter)."""

    hours: tuple[TimeWindow, ...] = ()
    """Local-time windows in which the controller has primacy; empty means always."""
    max_packet_in_rate: float | None = None
    """Packet-ins per second above which the controller loses primacy; None means no limit."""
    scope: Match | None = None
    """Only misses matching this have the controller's primacy; None means every miss."""
    scope_text: str = ""
    """The scope as the operator wrote it, for messages."""


RETAIN_KEEP = "keep"
RETAIN_DROP = "drop"
Retain = float | str  # RETAIN_KEEP, RETAIN_DROP, or seconds


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """One upstream OpenFlow controller."""

    name: str
    """Unique name, used in logs and as the origin of rules the controller installs."""
    target: ActiveTarget
    """Where to connect."""
    priority: int = 0
    """Higher wins when several controllers answer the same miss."""
    primacy: PrimacyConfig | None = None
    """Conditions under which this controller wins regardless of priority."""
    tls: TlsConfig | None = None
    """Key material; present exactly when the target is ssl:."""
    retain: Retain = RETAIN_KEEP
    """What happens to the rules learned from this controller while it is unreachable: "keep"
    (they answer until their own hard timeouts), "drop" (removed as soon as the link to it is
    lost), or a number of seconds they are kept after the link was lost."""
    protocols: tuple[str, ...] = PROTOCOLS
    """OpenFlow versions offered to this controller, by OVS name. The proxy offers those that
    it can translate to and from the bridge's version (1.0 <-> 1.3) or that equal it."""


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """The [backup] table: the persistent rules backup (rules/backup.py)."""

    enabled: bool = True
    """Whether rules are backed up and restored at start."""
    path: Path | None = None
    """The SQLite file; None means rules.db in [proxy] state_dir."""
    flush_interval_ms: int = 50
    """Milliseconds between the backup's commits (changes are batched in between)."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The [proxy] table: how the proxy faces its bridges."""

    listen: tuple[PassiveTarget, ...] = ()
    """Passive targets the bridges connect to."""
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    """Where the proxy keeps its state (rules backup); relative paths resolve against the file."""
    protocols: tuple[str, ...] = PROTOCOLS
    """OpenFlow versions offered to bridges, by OVS name."""
    miss_fallback: MissFallback = "drop"
    """What happens to a miss that no rule and no controller answers."""
    echo_interval: float = 5.0
    """Seconds of idleness on a session before the proxy sends an echo request."""
    dead_interval: float = 15.0
    """Seconds of silence after which a session is declared dead (> echo_interval)."""
    hello_timeout: float = 5.0
    """Seconds a new connection has to send its HELLO."""
    miss_timeout_ms: int = 200
    """Milliseconds a miss may wait for controllers' answers."""
    tls: TlsConfig | None = None
    """Key material for pssl: listeners; required when any listen target is pssl:."""
    control_socket: Path | None = Path(DEFAULT_CONTROL_SOCKET)
    """Unix socket for `ovs-appctl -t` and the CLI; relative paths resolve against the file;
    None (written "") means no control socket."""
    priority_bands: str = "auto"
    """How controllers share a bridge's flow priorities: "auto" gives each controller its own
    band, stacked by primacy (one controller: the whole range); "off" leaves them as sent."""


FAIL_MODES = ("secure", "standalone")
DEFAULT_OVSDB_REMOTE = "unix:/var/run/openvswitch/db.sock"
VM_ORIGIN = "vm"  # origin of the rules made from VM-scoped [[rules]] (ovsdb/vmrules.py)
# [[rules]] keys that tie a rule to a VM's interface, and the Interface external_ids they name.
VM_SCOPE_KEYS = {"iface_id": "iface-id", "vm": "vm-uuid", "mac": "attached-mac"}


@dataclass(frozen=True, slots=True)
class OvsdbConfig:
    """The [ovsdb] table: the OVSDB the proxy manages its bridges through (absent: none)."""

    remote: str = DEFAULT_OVSDB_REMOTE
    """OVSDB remote: unix:PATH, tcp:IP:PORT or ssl:IP:PORT (comma-separated for several)."""
    bridges: tuple[str, ...] = ()
    """Bridges attached at start (their controller set to the proxy)."""
    fail_mode: str = "secure"
    """fail_mode set on attached bridges: secure or standalone."""
    inactivity_probe: float = 5.0
    """Seconds, the attached bridges' controller inactivity probe (0: none, else at least 5)."""
    max_backoff: float = 8.0
    """Seconds, the longest an attached bridge waits between connection attempts (at least 1)."""
    vswitchd_ctl: str | None = "ovs-vswitchd"
    """ovs-appctl target of ovs-vswitchd, to count offloaded flows; None: do not count."""
    tls: TlsConfig | None = None
    """Key material for an ssl: remote."""


@dataclass(frozen=True, slots=True)
class VmRule:
    """A [[rules]] entry tied to a VM: active on a bridge only while an interface whose
    external_ids[key] is value exists there, with in_port set to that interface's ofport."""

    rule: FlowRule
    """The rule as written (origin "vm"; no in_port: the interface supplies it)."""
    key: str
    """The Interface external_ids key: iface-id, vm-uuid or attached-mac."""
    value: str
    """The value it must have (a MAC in lower case)."""


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """A [[policies]] entry: traffic the proxy drops at the top of table 0, above every
    controller's flows and its own rules (policies.py)."""

    name: str
    """Unique among the policies; names the policy's rules in logs and listings."""
    from_tag: str | None = None
    """Only traffic entering on ports tagged so (Interface external_ids:policy-tags)."""
    to_tag: str | None = None
    """Only traffic to the MAC (external_ids:attached-mac) of ports tagged so."""
    match: Match | None = None
    """Only traffic that also matches this (ovs-ofctl syntax)."""
    match_text: str = ""
    """`match` as written ("" without one)."""
    bridge: str | None = None
    """Only on this bridge (None: every bridge)."""

    @property
    def uses_tags(self) -> bool:
        return self.from_tag is not None or self.to_tag is not None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The [metrics] table: where Prometheus scrapes the proxy (absent: no exporter)."""

    host: str
    """IP address the HTTP listener binds, canonical form (IPv6 without brackets)."""
    port: int
    """TCP port of the HTTP listener, 1..65535."""

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration file."""

    proxy: ProxyConfig
    """The [proxy] table."""
    rules: tuple[FlowRule, ...]
    """Local rules from [[rules]], in file order, each scoped to its bridge (None: all)."""
    controllers: tuple[ControllerConfig, ...]
    """Upstream controllers from [[controllers]], in file order."""
    source_path: Path
    """The file this was read from ("<string>" for text given directly)."""
    metrics: MetricsConfig | None = None
    """The [metrics] table; None (no table) means no Prometheus exporter."""
    backup: BackupConfig = BackupConfig()
    """The [backup] table (defaults when absent: enabled, in state_dir)."""
    ovsdb: OvsdbConfig | None = None
    """The [ovsdb] table; None (no table) means the proxy does not touch OVSDB."""
    vm_rules: tuple[VmRule, ...] = ()
    """[[rules]] with iface_id, vm or mac, in file order (not in `rules`: OVSDB activates them)."""
    policies: tuple[PolicyConfig, ...] = ()
    """[[policies]], in file order."""

    @property
    def backup_path(self) -> Path:
        return self.backup.path or self.proxy.state_dir / "rules.db"


# --------------------------------------------------------------------------------------------
# Errors


def _key_text(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: file, 1-based line (0 if unknown), dotted key and what is wrong."""

    path: str
    line: int
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.key}: {self.problem}"


class ConfigError(ValueError):
    """The configuration is unusable; str() lists every issue found, one per line."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        self.issues = tuple(issues)
        first = self.issues[0]
        self.path, self.line, self.key, self.problem = first.path, first.line, first.key, first.problem
        super().__init__("\n".join(str(issue) for issue in self.issues))


# --------------------------------------------------------------------------------------------
# Locating keys in the raw text


class _Locator:
    """Line numbers of the keys, table headers and array elements of a valid TOML text.

    Paths are like the parsed data's: ("rules", 2, "flow"), ("proxy", "listen", 0). Good enough
    for hand-written files; a lookup that fails falls back to the nearest enclosing key.
    """

    _BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
    _VALUE_END = re.compile(r"[,\]}\n#]")

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        self._text = text
        self._pos = 0
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._tables: dict[KeyPath, int] = {}  # array-of-tables path -> index of its last entry
        try:
            self._document()
        except (IndexError, ValueError):
            pass  # only positions are lost; tomllib already vouched for the syntax

    def line_of(self, path: KeyPath) -> int:
        for length in range(len(path), 0, -1):
            line = self.lines.get(path[:length])
            if line:
                return line
        return 0

    # -- scanning

    def _line(self) -> int:
        return bisect.bisect_left(self._newlines, self._pos) + 1

    def _peek(self, count: int = 1) -> str:
        return self._text[self._pos : self._pos + count]

    def _skip_blank(self, newlines: bool) -> None:
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self._pos += 1
            elif char == "#" and newlines:
                end = text.find("\n", self._pos)
                self._pos = len(text) if end < 0 else end
            else:
                return

    def _document(self) -> None:
        current: KeyPath = ()
        while True:
            self._skip_blank(newlines=True)
            if self._pos >= len(self._text):
                return
            line = self._line()
            if self._peek() == "[":
                many = self._peek(2) == "[["
                self._pos += 2 if many else 1
                current = self._header(self._key(), many)
                self._pos += 2 if many else 1
                self.lines.setdefault(current, line)
            else:
                key = self._key()
                self._pos += 1  # "="
                self._record(current, key, line)
                self._value(current + tuple(key))
            self._skip_to_line_end()

    def _skip_to_line_end(self) -> None:
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end

    def _record(self, base: KeyPath, key: list[str], line: int) -> None:
        for length in range(1, len(key) + 1):
            self.lines.setdefault(base + tuple(key[:length]), line)

    def _header(self, key: list[str], many: bool) -> KeyPath:
        resolved: list[str | int] = []
        for index, part in enumerate(key):
            resolved.append(part)
            last = index == len(key) - 1
            if tuple(resolved) in self._tables and not (many and last):
                resolved.append(self._tables[tuple(resolved)])
        if many:
            entry = self._tables.get(tuple(resolved), -1) + 1
            self._tables[tuple(resolved)] = entry
            resolved.append(entry)
        return tuple(resolved)

    def _key(self) -> list[str]:
        parts = []
        while True:
            self._skip_blank(newlines=False)
            char = self._peek()
            if char in ('"', "'"):
                start = self._pos
                self._string()
                parts.append(tomllib.loads(f"k = {self._text[start:self._pos]}")["k"])
            else:
                found = self._BARE_KEY.match(self._text, self._pos)
                if found is None:
                    raise ValueError("not a key")
                parts.append(found.group())
                self._pos = found.end()
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._pos += 1

    def _string(self) -> None:
        text = self._text
        for quote in ('"""', "'''", '"', "'"):
            if text.startswith(quote, self._pos):
                break
        self._pos += len(quote)
        escapes = quote[0] == '"'
        while not text.startswith(quote, self._pos):
            if text[self._pos] == "\\" and escapes:
                self._pos += 1
            self._pos += 1
            if self._pos >= len(text):
                raise IndexError("unterminated string")
        self._pos += len(quote)
        while len(quote) == 3 and self._peek() == quote[0]:  # up to two quotes end the content
            self._pos += 1

    def _value(self, path: KeyPath) -> None:
        self._skip_blank(newlines=False)
        char = self._peek()
        if char in ('"', "'"):
            self._string()
        elif char == "[":
            self._pos += 1
            index = 0
            while True:
                self._skip_blank(newlines=True)
                if self._peek() == "]":
                    self._pos += 1
                    return
                self.lines.setdefault(path + (index,), self._line())
                self._value(path + (index,))
                index += 1
                self._skip_blank(newlines=True)
                if self._peek() == ",":
                    self._pos += 1
        elif char == "{":
            self._pos += 1
            while True:
                self._skip_blank(newlines=False)
                if self._peek() == "}":
                    self._pos += 1
                    return
                line = self._line()
                key = self._key()
                self._pos += 1  # "="
                self._record(path, key, line)
                self._value(path + tuple(key))
                self._skip_blank(newlines=False)
                if self._peek() == ",":
                    self._pos += 1
        else:  # number, boolean or date: up to the next delimiter
            found = self._VALUE_END.search(self._text, self._pos)
            self._pos = len(self._text) if found is None else found.start()


# --------------------------------------------------------------------------------------------
# Validation


class _Missing:
    pass


_MISSING = _Missing()


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


class _Checker:
    """Reads the parsed TOML, recording every problem with its location."""

    def __init__(self, source: str, locator: _Locator, base_dir: Path) -> None:
        self.source = source
        self.locator = locator
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []

    def error(self, path: KeyPath, problem: str) -> None:
        line = self.locator.line_of(path)
        self.issues.append(ConfigIssue(self.source, line, _key_text(path), problem))

    def table(self, data: dict[str, Any], path: KeyPath, allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                self.error(path + (key,), f"unknown key (expected one of: {', '.join(allowed)})")

    def get(self, data: dict[str, Any], path: KeyPath, key: str, kind: type | tuple[type, ...],
            expected: str, *, required: bool = False) -> Any:
        """data[key] if it has the right type; _MISSING if absent or wrong (wrong is reported)."""
        if key not in data:
            if required:
                self.error(path + (key,), "required key is missing")
            return _MISSING
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.error(path + (key,), f"expected {expected}, got {_type_name(value)}")
            return _MISSING
        return value

    def number(self, data: dict[str, Any], path: KeyPath, key: str, default: float,
               *, above: float = 0.0) -> float:
        value = self.get(data, path, key, (int, float), "a number")
        if value is _MISSING:
            return default
        if not math.isfinite(value) or value <= above:
            self.error(path + (key,), f"must be a number greater than {above:g}, got {value}")
            return default
        return float(value)

    def strings(self, data: dict[str, Any], path: KeyPath, key: str) -> list[tuple[int, str]] | None:
        """(index, string) of a non-empty array of strings; None if absent or invalid."""
        value = self.get(data, path, key, list, "an array of strings")
        if value is _MISSING:
            return None
        if not value:
            self.error(path + (key,), "must not be empty")
            return None
        good = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                good.append((index, item))
            else:
                self.error(path + (key, index), f"expected a string, got {_type_name(item)}")
        return good

    def tables(self, data: dict[str, Any], key: str) -> list[tuple[KeyPath, dict[str, Any]]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error((key,), f"expected an array of tables ([[{key}]]), got {_type_name(value)}")
            return []
        return [((key, index), entry) for index, entry in enumerate(value)]

    def file(self, data: dict[str, Any], path: KeyPath, key: str) -> Path | None:
        value = self.get(data, path, key, str, "a file path", required=True)
        if value is _MISSING:
            return None
        if not value:
            self.error(path + (key,), "must not be empty")
            return None
        resolved: Path = (self.base_dir / value).absolute()
        if not resolved.is_file():
            self.error(path + (key,), f"file not found: {resolved}")
            return None
        return resolved


def _tls(check: _Checker, data: dict[str, Any], path: KeyPath) -> TlsConfig | None:
    check.table(data, path, ("private_key", "certificate", "ca_cert"))
    files = [check.file(data, path, key) for key in ("private_key", "certificate", "ca_cert")]
    if None in files:
        return None
    private_key, certificate, ca_cert = files
    assert private_key and certificate and ca_cert
    return TlsConfig(private_key, certificate, ca_cert)


_WINDOW_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")


def _window(check: _Checker, text: str, path: KeyPath) -> TimeWindow | None:
    found = _WINDOW_RE.fullmatch(text)
    if found is None or (found.group(3) == "24" and found.group(4) != "00"):
        check.error(path, f"{text!r} is not a time window HH:MM-HH:MM (e.g. \"08:00-18:00\")")
        return None
    start = datetime.time(int(found.group(1)), int(found.group(2)))
    end = datetime.time(int(found.group(3)) % 24, int(found.group(4)))
    if start == end:
        check.error(path, f"{text!r} is empty (start equals end)")
        return None
    return TimeWindow(start, end)


def _primacy(check: _Checker, data: dict[str, Any], path: KeyPath) -> PrimacyConfig:
    check.table(data, path, ("hours", "max_packet_in_rate", "scope"))
    windows = []
    for index, text in check.strings(data, path, "hours") or []:
        window = _window(check, text, path + ("hours", index))
        if window is not None:
            windows.append(window)
    rate: float | None = None
    if "max_packet_in_rate" in data:
        rate = check.number(data, path, "max_packet_in_rate", 0.0)
    scope, scope_text = _match(check, data, path, "scope")
    return PrimacyConfig(tuple(windows), rate or None, scope, scope_text)


_PROXY_KEYS = (
    "listen", "state_dir", "protocols", "miss_fallback", "echo_interval", "dead_interval",
    "hello_timeout", "miss_timeout_ms", "tls", "control_socket", "priority_bands",
)


def _match(check: _Checker, data: dict[str, Any], path: KeyPath,
           key: str) -> tuple[Match | None, str]:
    """An ovs-ofctl match under `key`, and its text; (None, text) when it is wrong (reported),
    (None, "") when absent."""
    text = check.get(data, path, key, str, "an ovs-ofctl match string")
    if text is _MISSING:
        return None, ""
    try:
        return parse_match(text), text
    except FlowSyntaxError as exc:
        check.error(path + (key,), str(exc))
        return None, text


def _proxy(check: _Checker, data: dict[str, Any]) -> ProxyConfig:
    path: KeyPath = ("proxy",)
    check.table(data, path, _PROXY_KEYS)
    defaults = ProxyConfig()

    listen: list[PassiveTarget] = []
    entries = check.strings(data, path, "listen")
    for index, text in entries if entries is not None else enumerate(DEFAULT_LISTEN):
        try:
            target = parse_passive(text)
        except TargetError as exc:
            check.error(path + ("listen", index), str(exc))
            continue
        if target in listen:
            check.error(path + ("listen", index), f"duplicate listen target {text!r}")
        listen.append(target)

    state_dir = defaults.state_dir
    value = check.get(data, path, "state_dir", str, "a directory path")
    if value is not _MISSING:
        if value:
            state_dir = (check.base_dir / value).absolute()
        else:
            check.error(path + ("state_dir",), "must not be empty")

    protocols: list[str] = []
    for index, name in check.strings(data, path, "protocols") or []:
        if name not in PROTOCOLS:
            check.error(path + ("protocols", index), f"unknown protocol {name!r} (allowed: {', '.join(PROTOCOLS)})")
        elif name in protocols:
            check.error(path + ("protocols", index), f"duplicate protocol {name!r}")
        else:
            protocols.append(name)

    miss_fallback: MissFallback = "drop"
    value = check.get(data, path, "miss_fallback", str, "a string")
    if value is not _MISSING:
        if value in MISS_FALLBACKS:
            miss_fallback = value
        else:
            check.error(path + ("miss_fallback",), f"must be one of {', '.join(MISS_FALLBACKS)}, got {value!r}")

    echo_interval = check.number(data, path, "echo_interval", defaults.echo_interval)
    dead_interval = check.number(data, path, "dead_interval", defaults.dead_interval)
    if dead_interval <= echo_interval:
        check.error(
            path + ("dead_interval" if "dead_interval" in data else "echo_interval",),
            f"dead_interval ({dead_interval:g}) must be greater than echo_interval ({echo_interval:g})",
        )
    hello_timeout = check.number(data, path, "hello_timeout", defaults.hello_timeout)

    miss_timeout_ms = defaults.miss_timeout_ms
    value = check.get(data, path, "miss_timeout_ms", int, "an integer number of milliseconds")
    if value is not _MISSING:
        if 0 <= value <= MAX_MISS_TIMEOUT_MS:
            miss_timeout_ms = value
        else:
            check.error(path + ("miss_timeout_ms",), f"must be in 0..{MAX_MISS_TIMEOUT_MS}, got {value}")

    tls = None
    value = check.get(data, path, "tls", dict, "a table ([proxy.tls])")
    if value is not _MISSING:
        tls = _tls(check, value, path + ("tls",))
    elif any(target.uses_tls for target in listen):
        check.error(path, "a pssl: listen target needs [proxy.tls] (private_key, certificate, ca_cert)")

    control_socket: Path | None = defaults.control_socket
    value = check.get(data, path, "control_socket", str, 'a socket path ("" for none)')
    if value is not _MISSING:
        control_socket = _control_socket(check, value, path + ("control_socket",))

    priority_bands = defaults.priority_bands
    value = check.get(data, path, "priority_bands", str, "a string")
    if value is not _MISSING:
        if value in PRIORITY_BAND_MODES:
            priority_bands = value
        else:
            check.error(path + ("priority_bands",),
                        f"must be one of {', '.join(PRIORITY_BAND_MODES)}, got {value!r}")

    return ProxyConfig(
        listen=tuple(listen),
        state_dir=state_dir,
        protocols=tuple(protocols) or PROTOCOLS,
        miss_fallback=miss_fallback,
        echo_interval=echo_interval,
        dead_interval=dead_interval,
        hello_timeout=hello_timeout,
        miss_timeout_ms=miss_timeout_ms,
        tls=tls,
        control_socket=control_socket,
        priority_bands=priority_bands,
    )


def _control_socket(check: _Checker, value: str, path: KeyPath) -> Path | None:
    if not value:
        return None
    if "\0" in value:
        check.error(path, "must not contain a NUL character")
        return None
    if value.endswith("/"):
        check.error(path, f"{value!r} names a directory; give the socket's file name")
        return None
    resolved: Path = (check.base_dir / value).absolute()
    if resolved.is_dir():
        check.error(path, f"{resolved} is a directory; give the socket's file name")
        return None
    return resolved


_BRIDGE_RE = re.compile(r"[^\s/]+")


def _rules(check: _Checker, data: dict[str, Any],
           vm_rules: list[VmRule] | None = None) -> tuple[FlowRule, ...]:
    """The plain [[rules]]; those tied to a VM (iface_id, vm, mac) go to `vm_rules`."""
    rules = []
    for path, entry in check.tables(data, "rules"):
        check.table(entry, path, ("flow", "bridge", *VM_SCOPE_KEYS))
        bridge = check.get(entry, path, "bridge", str, "a bridge name")
        if bridge is not _MISSING and not _BRIDGE_RE.fullmatch(bridge):
            check.error(path + ("bridge",), f"{bridge!r} is not a bridge name")
            bridge = _MISSING
        scope = _vm_scope(check, entry, path)
        flow = check.get(entry, path, "flow", str, "an ovs-ofctl flow string", required=True)
        if flow is _MISSING:
            continue
        try:
            rule = parse_flow(flow, bridge=None if bridge is _MISSING else bridge,
                              origin="config" if scope is None else VM_ORIGIN)
        except FlowSyntaxError as exc:
            check.error(path + ("flow",), str(exc))
            continue
        if scope is None:
            rules.append(rule)
        elif rule.match.field_mask("in_port"):
            check.error(path + ("flow",), f"a rule with {scope[0]} gets in_port from the VM's "
                        "interface; remove in_port from the flow")
        elif vm_rules is not None:
            vm_rules.append(VmRule(rule, VM_SCOPE_KEYS[scope[0]], scope[1]))
    return tuple(rules)


_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


POLICY_PRIORITY = 0xFFFF  # the top of table 0 belongs to the policies (bands.py keeps it free)


def _policies(check: _Checker, data: dict[str, Any]) -> tuple[PolicyConfig, ...]:
    has_ovsdb = "ovsdb" in data
    policies = []
    names: set[str] = set()
    for path, entry in check.tables(data, "policies"):
        check.table(entry, path, ("name", "from_tag", "to_tag", "match", "bridge"))
        name = check.get(entry, path, "name", str, "a string", required=True)
        if name is _MISSING:
            continue
        if not _NAME_RE.fullmatch(name):
            check.error(path + ("name",), f"{name!r} is not a name (use letters, digits, '_', '.', '-')")
            continue
        if name in names:
            check.error(path + ("name",), f"duplicate policy name {name!r}")
            continue
        names.add(name)
        if not any(key in entry for key in ("from_tag", "to_tag", "match")):
            check.error(path, "a policy needs from_tag, to_tag or match (or it would drop "
                        "everything)")
            continue
        issues_before = len(check.issues)
        tags: dict[str, str | None] = {}
        for key in ("from_tag", "to_tag"):
            tag = check.get(entry, path, key, str, "a tag")
            if tag is not _MISSING and not _NAME_RE.fullmatch(tag):
                check.error(path + (key,), f"{tag!r} is not a tag (use letters, digits, '_', '.', '-')")
                tag = _MISSING
            tags[key] = None if tag is _MISSING else tag
        bridge = check.get(entry, path, "bridge", str, "a bridge name")
        if bridge is not _MISSING and not _BRIDGE_RE.fullmatch(bridge):
            check.error(path + ("bridge",), f"{bridge!r} is not a bridge name")
            bridge = _MISSING
        match, match_text = _match(check, entry, path, "match")
        if match_text and match is None:
            continue  # reported
        if match is not None:
            if not match.mask:
                check.error(path + ("match",), "matches every packet: a policy must narrow it")
                continue
            # The tags supply these fields; a second value for one would never match.
            clashes = [f"{key} sets {field_name}" for key, field_name
                       in (("from_tag", "in_port"), ("to_tag", "eth_dst"))
                       if tags[key] is not None and match.field_mask(field_name)]
            if clashes:
                check.error(path + ("match",), f"{'; '.join(clashes)}: remove it from the match")
                continue
        if (tags["from_tag"] or tags["to_tag"]) and not has_ovsdb:
            check.error(path, "tags are read from OVSDB: add an [ovsdb] table")
        if len(check.issues) > issues_before:
            continue  # reported: a policy that is half right is not enforced half
        policies.append(PolicyConfig(name, tags["from_tag"], tags["to_tag"], match, match_text,
                                     None if bridge is _MISSING else bridge))
    return tuple(policies)


def _vm_scope(check: _Checker, entry: dict[str, Any], path: KeyPath) -> tuple[str, str] | None:
    """(config key, value) of the one VM key of a [[rules]] entry, if it has one."""
    given = [key for key in VM_SCOPE_KEYS if key in entry]
    if len(given) > 1:
        check.error(path + (given[1],), f"give only one of {', '.join(VM_SCOPE_KEYS)}")
    for key in given[:1]:
        value = check.get(entry, path, key, str, "a string")
        if value is _MISSING:
            return None
        if not value:
            check.error(path + (key,), "must not be empty")
            return None
        if key == "mac":
            if not _MAC_RE.fullmatch(value):
                check.error(path + (key,), f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
                return None
            value = value.lower()
        return key, value
    return None


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _controllers(check: _Checker, data: dict[str, Any]) -> tuple[ControllerConfig, ...]:
    controllers = []
    names: set[str] = set()
    for path, entry in check.tables(data, "controllers"):
        check.table(entry, path, ("name", "target", "priority", "primacy", "tls", "retain",
                                  "protocols"))
        ok = True
        name = check.get(entry, path, "name", str, "a string", required=True)
        if name is _MISSING:
            ok = False
        elif not _NAME_RE.fullmatch(name):
            check.error(path + ("name",), f"{name!r} is not a name (use letters, digits, '_', '.', '-')")
            ok = False
        elif name in LOCAL_ORIGINS:
            check.error(path + ("name",), f"{name!r} is reserved (it names rules the operator made)")
            ok = False
        elif name in names:
            check.error(path + ("name",), f"duplicate controller name {name!r}")
            ok = False
        else:
            names.add(name)

        target: ActiveTarget | None = None
        text = check.get(entry, path, "target", str, "a string", required=True)
        if text is not _MISSING:
            try:
                target = parse_active(text)
            except TargetError as exc:
                check.error(path + ("target",), str(exc))

        priority = check.get(entry, path, "priority", int, "an integer")
        if priority is _MISSING:
            priority = 0
        elif not 0 <= priority <= MAX_CONTROLLER_PRIORITY:
            check.error(path + ("priority",), f"must be in 0..{MAX_CONTROLLER_PRIORITY}, got {priority}")

        primacy = None
        table = check.get(entry, path, "primacy", dict, "a table ([controllers.primacy])")
        if table is not _MISSING:
            primacy = _primacy(check, table, path + ("primacy",))

        tls = None
        table = check.get(entry, path, "tls", dict, "a table ([controllers.tls])")
        if table is not _MISSING:
            tls = _tls(check, table, path + ("tls",))
            if target is not None and not target.uses_tls:
                check.error(path + ("tls",), f"only ssl: targets use tls, and the target is {target}")
        elif target is not None and target.uses_tls:
            check.error(path, "an ssl: target needs [controllers.tls] (private_key, certificate, ca_cert)")

        retain = _retain(check, entry, path)
        protocols = _protocol_list(check, entry, path)

        if ok and target is not None:
            controllers.append(ControllerConfig(name, target, priority, primacy, tls, retain,
                                                protocols or PROTOCOLS))
    return tuple(controllers)


def _protocol_list(check: _Checker, entry: dict[str, Any], path: KeyPath) -> tuple[str, ...]:
    """A `protocols` list: known OVS version names, no duplicates (empty when absent)."""
    protocols: list[str] = []
    for index, name in check.strings(entry, path, "protocols") or []:
        if name not in PROTOCOLS:
            check.error(path + ("protocols", index),
                        f"unknown protocol {name!r} (allowed: {', '.join(PROTOCOLS)})")
        elif name in protocols:
            check.error(path + ("protocols", index), f"duplicate protocol {name!r}")
        else:
            protocols.append(name)
    return tuple(protocols)


def _retain(check: _Checker, entry: dict[str, Any], path: KeyPath) -> Retain:
    value = check.get(entry, path, "retain", (str, int, float),
                      f'"{RETAIN_KEEP}", "{RETAIN_DROP}" or a number of seconds')
    if value is _MISSING:
        return RETAIN_KEEP
    if isinstance(value, str):
        if value not in (RETAIN_KEEP, RETAIN_DROP):
            check.error(path + ("retain",),
                        f'expected "{RETAIN_KEEP}", "{RETAIN_DROP}" or a number of seconds, got {value!r}')
            return RETAIN_KEEP
        return value
    if not math.isfinite(value) or value <= 0:
        check.error(path + ("retain",), f"must be a number of seconds greater than 0, got {value}")
        return RETAIN_KEEP
    return float(value)


def _backup(check: _Checker, data: dict[str, Any]) -> BackupConfig:
    path: KeyPath = ("backup",)
    check.table(data, path, ("enabled", "path", "flush_interval_ms"))
    defaults = BackupConfig()
    enabled = check.get(data, path, "enabled", bool, "true or false")
    file_path = None
    value = check.get(data, path, "path", str, "a file path")
    if value is not _MISSING:
        if value:
            file_path = (check.base_dir / value).absolute()
        else:
            check.error(path + ("path",), "must not be empty")
    interval = check.get(data, path, "flush_interval_ms", int, "an integer")
    if interval is _MISSING:
        interval = defaults.flush_interval_ms
    elif not 1 <= interval <= 60_000:
        check.error(path + ("flush_interval_ms",), f"must be in 1..60000, got {interval}")
        interval = defaults.flush_interval_ms
    return BackupConfig(defaults.enabled if enabled is _MISSING else enabled, file_path, interval)


_OVSDB_KEYS = ("remote", "bridges", "fail_mode", "inactivity_probe", "max_backoff", "vswitchd_ctl",
               "tls")


def _ovsdb(check: _Checker, data: dict[str, Any]) -> OvsdbConfig:
    path: KeyPath = ("ovsdb",)
    check.table(data, path, _OVSDB_KEYS)
    defaults = OvsdbConfig()
    remote = defaults.remote
    value = check.get(data, path, "remote", str, "an OVSDB remote (unix:PATH, tcp:IP:PORT, ssl:IP:PORT)")
    if value is not _MISSING:
        remote = _ovsdb_remote(check, value, path + ("remote",)) or remote
    bridges: list[str] = []
    value = check.get(data, path, "bridges", list, "an array of bridge names")
    for index, name in enumerate(value if value is not _MISSING else []):
        if not isinstance(name, str) or not _BRIDGE_RE.fullmatch(name):
            check.error(path + ("bridges", index), f"{name!r} is not a bridge name")
        elif name in bridges:
            check.error(path + ("bridges", index), f"duplicate bridge {name!r}")
        else:
            bridges.append(name)
    fail_mode = defaults.fail_mode
    value = check.get(data, path, "fail_mode", str, "a string")
    if value is not _MISSING:
        if value in FAIL_MODES:
            fail_mode = value
        else:
            check.error(path + ("fail_mode",), f"must be one of {', '.join(FAIL_MODES)}, got {value!r}")
    probe = check.number(data, path, "inactivity_probe", defaults.inactivity_probe, above=-1.0)
    if probe < 0 or 0 < probe < 5:
        check.error(path + ("inactivity_probe",), f"must be 0 (no probe) or at least 5 seconds, got {probe:g}")
        probe = defaults.inactivity_probe
    backoff = check.number(data, path, "max_backoff", defaults.max_backoff)
    if backoff < 1:
        check.error(path + ("max_backoff",), f"must be at least 1 second, got {backoff:g}")
        backoff = defaults.max_backoff
    vswitchd_ctl: str | None = defaults.vswitchd_ctl
    value = check.get(data, path, "vswitchd_ctl", str, 'an ovs-appctl target ("" for none)')
    if value is not _MISSING:
        vswitchd_ctl = value or None
    tls = None
    value = check.get(data, path, "tls", dict, "a table ([ovsdb.tls])")
    uses_ssl = any(part.strip().startswith("ssl:") for part in remote.split(","))
    if value is not _MISSING:
        tls = _tls(check, value, path + ("tls",))
        if not uses_ssl:
            check.error(path + ("tls",), "only ssl: remotes use tls")
    elif uses_ssl:
        check.error(path, "an ssl: remote needs [ovsdb.tls] (private_key, certificate, ca_cert)")
    return OvsdbConfig(remote, tuple(bridges), fail_mode, probe, backoff, vswitchd_ctl, tls)


def _ovsdb_remote(check: _Checker, text: str, path: KeyPath) -> str | None:
    """The remote with relative unix: paths resolved; None (reported) if it is not one."""
    parts = []
    for part in (p.strip() for p in text.split(",")):
        method, _, rest = part.partition(":")
        try:
            if method == "unix":
                if not rest:
                    raise TargetError("empty socket path")
                parts.append(f"unix:{(check.base_dir / rest).absolute()}")
                continue
            if method in ("tcp", "ssl"):
                if "[" not in rest and rest.count(":") != 1:  # OVSDB has no default port here
                    raise TargetError("missing port")
                parse_active(part)
                parts.append(part)
                continue
            raise TargetError(f"unknown method {method!r}")
        except TargetError as exc:
            check.error(path, f"{part!r} is not an OVSDB remote (unix:PATH, tcp:IP:PORT or "
                              f"ssl:IP:PORT): {exc}")
            return None
    return ",".join(parts)


_METRICS_LISTEN_FORMS = "HOST:PORT with HOST an IP address, IPv6 in brackets ([::1]:9410)"


def _metrics(check: _Checker, data: dict[str, Any]) -> MetricsConfig | None:
    path: KeyPath = ("metrics",)
    check.table(data, path, ("listen",))
    text = check.get(data, path, "listen", str, 'a string "HOST:PORT"', required=True)
    if text is _MISSING:
        return None
    path += ("listen",)
    if text.startswith("["):
        host, bracket, port_text = text[1:].partition("]:")
        if not bracket:
            check.error(path, f"{text!r} is not {_METRICS_LISTEN_FORMS}")
            return None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            check.error(path, f"{text!r} is not {_METRICS_LISTEN_FORMS}")
            return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        check.error(path, f"{host!r} is not an IP address (host names are not accepted)")
        return None
    if (address.version == 6) != text.startswith("["):
        check.error(path, f"{text!r}: brackets go around IPv6 addresses, and only those")
        return None
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        check.error(path, f"port {port_text!r} is not in 1..65535")
        return None
    return MetricsConfig(str(address), int(port_text))


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_issue(source: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigIssue:
    message = str(exc)
    found = _TOML_POSITION.search(message)
    if found is not None:
        problem = f"{message[: found.start()]} at column {found.group(2)}"
        return ConfigIssue(source, int(found.group(1)), "(toml syntax)", problem)
    found = _TOML_AT_END.search(message)
    if found is not None:
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
        return ConfigIssue(source, line, "(toml syntax)", f"{message[: found.start()]} at end of file")
    return ConfigIssue(source, 0, "(toml syntax)", message)


def parse_config(text: str, path: str | Path = "<string>") -> Config:
    """Validate TOML text; `path` names it in messages and anchors its relative paths."""
    source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(source, text, exc)]) from None
    check = _Checker(source, _Locator(text), Path(path).parent)
    check.table(data, (), ("proxy", "rules", "controllers", "metrics", "backup", "ovsdb",
                           "policies"))
    proxy_table = check.get(data, (), "proxy", dict, "a table ([proxy])")
    proxy = _proxy(check, {} if proxy_table is _MISSING else proxy_table)
    vm_rules: list[VmRule] = []
    rules = _rules(check, data, vm_rules)
    controllers = _controllers(check, data)
    policies = _policies(check, data)
    metrics = None
    metrics_table = check.get(data, (), "metrics", dict, "a table ([metrics])")
    if metrics_table is not _MISSING:
        metrics = _metrics(check, metrics_table)
    backup = BackupConfig()
    backup_table = check.get(data, (), "backup", dict, "a table ([backup])")
    if backup_table is not _MISSING:
        backup = _backup(check, backup_table)
    ovsdb = None
    ovsdb_table = check.get(data, (), "ovsdb", dict, "a table ([ovsdb])")
    if ovsdb_table is not _MISSING:
        ovsdb = _ovsdb(check, ovsdb_table)
        if proxy.listen and proxy.listen[0].port == 0:
            check.error(("proxy", "listen", 0), "[ovsdb] points bridges at the first listen "
                        "target, so it needs a fixed port, not 0")
    if policies:
        _check_reserved_priority(check, data)
        if "OpenFlow10" in proxy.protocols:
            _check_policies_fit_of10(check, policies, data)
    if check.issues:
        # File order, issues without a known line last.
        ordered = sorted(check.issues, key=lambda issue: issue.line or math.inf)
        raise ConfigError(ordered)
    return Config(proxy=proxy, rules=rules, controllers=controllers, source_path=Path(path),
                  metrics=metrics, backup=backup, ovsdb=ovsdb, vm_rules=tuple(vm_rules),
                  policies=policies)


def _check_policies_fit_of10(check: _Checker, policies: Sequence[PolicyConfig],
                             data: dict[str, Any]) -> None:
    """A policy must hold on every bridge: one whose match OpenFlow 1.0 cannot express could
    not be installed on a 1.0 bridge."""
    from .openflow.flows import Unrepresentable, encode_match  # os-ken: only when needed

    indices = {entry.get("name"): path for path, entry in check.tables(data, "policies")}
    for policy in policies:
        if policy.match is None:
            continue
        try:
            encode_match(policy.match, 0x01)
        except Unrepresentable as exc:
            check.error(indices[policy.name] + ("match",), f"{exc}; a policy must hold on "
                        "OpenFlow 1.0 bridges too, or take OpenFlow10 out of [proxy] protocols")


def _check_reserved_priority(check: _Checker, data: dict[str, Any]) -> None:
    """With [[policies]], no local rule may tie with them at the top priority."""
    for path, entry in check.tables(data, "rules"):
        flow = entry.get("flow")
        if not isinstance(flow, str):
            continue
        try:
            priority = parse_flow(flow).priority
        except FlowSyntaxError:
            continue  # reported by _rules
        if priority == POLICY_PRIORITY:
            check.error(path + ("flow",), f"priority {POLICY_PRIORITY} is reserved for "
                        "[[policies]]; use 65534 or less")


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "(file)", f"cannot read: {exc}")]) from None
    return parse_config(text, path)
