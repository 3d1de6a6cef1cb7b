"""The control socket: the protocol of `ovs-appctl -t SOCKET`, served on the daemon's own loop.

The protocol is Open vSwitch's JSON-RPC 1.0 over a unix stream socket, as `ovs.unixctl`
implements it: JSON objects back to back with no delimiter, a request
`{"id": ID, "method": "proxy/show", "params": ["--json"]}` and a reply
`{"id": ID, "result": TEXT, "error": null}` or `{"id": ID, "result": null, "error": TEXT}`.
The `ovs-appctl` of OVS 3.1 refuses a result that is not a string, so every reply is text. A command
that reports data takes an optional trailing `--json`, which makes the text a JSON document
instead of lines for people. This is the one output scheme of every command.

Why not `ovs.unixctl.server` in a thread? It runs on OVS's poller, so it needs a thread of its
own, and every command would then cross threads twice: loop.call_soon_threadsafe to reach the
proxy's state (which only the loop thread may touch), and a concurrent.futures.Future back.
Its command table is a module global (`ovs.unixctl.commands`, where the first registration
wins), so a second daemon in one process would run the first one's callbacks. `ovs.poller`
imports eventlet when that is installed. Stopping the thread means waking a poller that only
its own sockets can wake. Served natively, the protocol takes about 150 lines, and commands run
synchronously on the loop thread with no locking. The figures do not decide it either way.
Measured on the 2-core dev VM, with the server in its own process and 3,000 sequential
`proxy/show` calls:
- native: 0.37 ms per call;
- thread plus hand-off: 0.48 to 0.58 ms per call (control.transact, ovs.unixctl.client);
- through `ovs-appctl`: about 5 ms per call with either server, which is the cost of starting
  the process.

Layout: `JsonStream`, the request and reply codecs and `Dispatcher` are sans-IO and tested
without sockets. `ControlServer` is the asyncio adapter, and `transact` is the blocking client
that the command line uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from . import __version__
from .openflow.framing import VERSION_NAMES
from .ovsdb.report import format_ovsdb, format_status
from .rules.flowparse import FlowSyntaxError, format_flow, parse_flow
from .rules.model import FlowRule
from .rules.records import RecordError, RuleRecord, from_json_line, to_json_line

log = logging.getLogger(__name__)

PROGRAM = "ovs-sriov-proxy"
JSON_FLAG = "--json"
CLI_ORIGIN = "cli"
MAX_MESSAGE_SIZE = 1 << 22  # a request is a flow or two, or an import chunk (IMPORT_CHUNK lines)
SOCKET_MODE = 0o600  # the socket changes forwarding: its owner (root) only, as OVS's are
EXPORT_PAGE = 5000  # rules per proxy/export reply: about 1 MB
IMPORT_CHUNK = 5000  # JSON lines per proxy/import request the CLI sends ...
IMPORT_CHUNK_BYTES = MAX_MESSAGE_SIZE // 4  # ... and bytes: escaped in the request's JSON
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL
_WHITESPACE = frozenset(b" \t\r\n")
_BRIDGE_NAME_FORBIDDEN = frozenset(" \t\r\n/")


class ControlError(Exception):
    """A control command could not be carried out (base class)."""


class ControlProtocolError(ControlError):
    """The peer does not speak the protocol (malformed JSON, not a request or reply): its fault."""


class ControlUnreachable(ControlError):
    """No daemon answers on the socket (missing, refused, permission denied, timed out)."""


class CommandFailed(ControlError):
    """The daemon answered the command with an error reply; str() is the daemon's message."""


# --------------------------------------------------------------------------------------------
# Wire format (sans-IO)


class JsonStream:
    """Splits a byte stream into the JSON objects it carries, back to back, as OVS sends them.

    Only the bytes not scanned yet are looked at on each call: the scanner keeps its nesting
    depth and string state between calls. UTF-8 continuation bytes are never ASCII, so scanning
    bytes for brackets and quotes is safe.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._scanned = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def receive_data(self, data: bytes) -> list[dict[str, Any]]:
        buffer = self._buffer
        buffer += data
        values: list[dict[str, Any]] = []
        start = 0  # where the value being scanned begins
        index = self._scanned
        while index < len(buffer):
            byte = buffer[index]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == 0x5C:  # backslash
                    self._escaped = True
                elif byte == 0x22:  # quote
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in b"{[":
                if self._depth == 0 and byte != 0x7B:
                    raise ControlProtocolError("expected a JSON object, got an array")
                self._depth += 1
            elif byte in b"}]":
                self._depth -= 1
                if self._depth < 0:
                    raise ControlProtocolError(f"unbalanced {chr(byte)!r} in JSON stream")
                if self._depth == 0:
                    values.append(_decode_object(bytes(buffer[start:index + 1])))
                    start = index + 1
            elif self._depth == 0:
                if byte not in _WHITESPACE:
                    raise ControlProtocolError(f"expected a JSON object, got {chr(byte)!r}")
                start = index + 1
            index += 1
        del buffer[:start]
        self._scanned = index - start
        if len(buffer) > self.max_size:
            raise ControlProtocolError(f"message longer than {self.max_size} bytes")
        return values


def _decode_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):  # pragma: no cover - the scanner only cuts out objects
        raise ControlProtocolError("expected a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class Request:
    id: Any  # any JSON value but null, echoed in the reply
    method: str
    params: tuple[Any, ...]


def parse_request(message: dict[str, Any]) -> Request:
    method, params, request_id = message.get("method"), message.get("params"), message.get("id")
    if not isinstance(method, str):
        kind = "reply" if "result" in message or "error" in message else "message without a method"
        raise ControlProtocolError(f"expected a request, got a {kind}")
    if not isinstance(params, list):
        raise ControlProtocolError(f"request {method!r}: params must be an array")
    if request_id is None:
        raise ControlProtocolError(f"request {method!r} has no id (notifications are not commands)")
    return Request(request_id, method, tuple(params))


def encode_request(request_id: int, method: str, params: Iterable[str]) -> bytes:
    return json.dumps({"id": request_id, "method": method, "params": list(params)}).encode()


def encode_reply(request_id: Any, result: str) -> bytes:
    return json.dumps({"id": request_id, "result": result, "error": None}).encode()


def encode_error(request_id: Any, message: str) -> bytes:
    return json.dumps({"id": request_id, "result": None, "error": message}).encode()


# --------------------------------------------------------------------------------------------
# Commands (sans-IO)


class ControlTarget(Protocol):
    """What the commands act on: the daemon. Called on the loop thread only."""

    def snapshot(self) -> dict[str, Any]: ...

    def rules(self) -> Iterable[tuple[int, FlowRule]]: ...

    def add_rule(self, rule: FlowRule) -> int:
        """Raises PermissionError for a rule the config reserves (priority 65535 with
        [[policies]])."""
        ...

    def remove_rule(self, rule_id: int) -> FlowRule:
        """Raises KeyError for an unknown id, PermissionError for a rule that the config
        owns and the operator may not delete by hand (a policy's)."""
        ...

    def records(self, after: int = 0, limit: int | None = None) -> list[RuleRecord]:
        """Rules with ids above `after`, in id order, at most `limit` of them."""
        ...

    def is_backed_up(self, rule_id: int) -> bool | None:
        """Whether the rules backup has committed the rule (None: no backup configured)."""
        ...

    def import_records(self, records: list[RuleRecord]) -> tuple[int, int]:
        """Add rules under new ids; returns (added, skipped as present or expired)."""
        ...

    def attach(self, bridge: str) -> str:
        """Attach a bridge through OVSDB; its status. LookupError: no [ovsdb] configured."""
        ...

    def detach(self, bridge: str) -> str | None:
        """Detach a bridge; its status, None if it was not attached. LookupError as attach."""
        ...

    def controllers(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class UsageError(ControlError):
    """The request is wrong (unknown rule, bad flow); str() is the error reply."""


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    text: str
    after: Callable[[], None] | None = None  # runs once the reply is on its way (exit)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str  # the arguments, for help and errors
    min_args: int
    max_args: int
    run: Callable[[list[str], bool], Reply]  # (arguments, wants JSON)
    takes_json: bool = True


def rule_row(rule_id: int, rule: FlowRule) -> dict[str, Any]:
    """One rule as `proxy/add-rule --json` and `proxy/del-rule --json` report it."""
    return {"id": rule_id, "origin": rule.origin, "bridge": rule.bridge, "flow": format_flow(rule)}


def show_document(snapshot: dict[str, Any]) -> dict[str, Any]:
    """`proxy/show --json`: the proxy's snapshot with the program version and protocol names."""
    bridges = [{**bridge, "protocol": VERSION_NAMES.get(bridge["version"], f"0x{bridge['version']:02x}")}
               for bridge in snapshot["bridges"]]
    document = {"program": PROGRAM, "version": __version__, "rules": snapshot["rules"],
                "bridges": bridges}
    if "backup" in snapshot:
        document["backup"] = snapshot["backup"]
    if "ovsdb" in snapshot:
        document["ovsdb"] = snapshot["ovsdb"]
    return document


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_show(document: dict[str, Any]) -> str:
    bridges = document["bridges"]
    lines = [f"{document['program']} {document['version']}: {_plural(document['rules'], 'rule')}, "
             f"{_plural(len(bridges), 'bridge')} connected"]
    for bridge in sorted(bridges, key=lambda b: b["name"]):
        lines.append(f"{bridge['name']}: dpid {bridge['datapath_id']}, {bridge['protocol']}, "
                     f"{_plural(bridge['ports'], 'port')}, "
                     f"{_plural(bridge['installed_flows'], 'installed flow')}")
        counters = bridge["counters"]
        lines.append("  " + (" ".join(f"{k}={v}" for k, v in counters.items()) or "no traffic yet"))
    backup = document.get("backup")
    if backup is not None:
        state = f", failing: {backup['last_error']}" if backup["last_error"] else ""
        lines.append(f"rules backup {backup['path']}: {backup['pending']} changes pending{state}")
    if document.get("ovsdb") is not None:
        lines += format_ovsdb(document["ovsdb"])
    return "\n".join(lines) + "\n"


def format_controllers(document: dict[str, Any]) -> str:
    """`proxy/controllers` for people: each controller, then its link from every bridge."""
    controllers = document["controllers"]
    if not controllers:
        return "no controllers configured\n"
    lines = []
    for controller in controllers:
        lines.append(f"{controller['name']}: {controller['target']}, priority {controller['priority']}")
        for link in controller["links"]:
            version = VERSION_NAMES.get(link["version"], f"0x{link['version']:02x}")
            lines.append(f"  {link['bridge']} (dpid {link['datapath_id']}, {version}): "
                         f"{link['state']}, {_plural(link['connects'], 'connection')}")
        if not controller["links"]:
            lines.append("  no bridge connected")
    return "\n".join(lines) + "\n"


def format_rules(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no rules\n"
    table = [("ID", "ORIGIN", "BRIDGE", "FLOW")]
    table += [(str(r["id"]), r["origin"], r["bridge"] or "*", r["flow"]) for r in rows]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    return "".join(f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}\n"
                   for row in table)


def _format_row(verb: str, row: dict[str, Any]) -> str:
    scope = f" on bridge {row['bridge']}" if row["bridge"] else ""
    return f"rule {row['id']} {verb}{scope}: {row['flow']}\n"


def _bridge_name(text: str) -> str:
    if not text or _BRIDGE_NAME_FORBIDDEN.intersection(text):
        raise UsageError(f"{text!r} is not a bridge name")
    return text


def _dump(document: object) -> str:
    return json.dumps(document, indent=2) + "\n"


class Dispatcher:
    """Maps a request to a reply. The command names and their output are a public contract."""

    def __init__(self, target: ControlTarget) -> None:
        self.target = target
        commands = [
            Command("help", "", 0, 0, self._help, takes_json=False),
            Command("list-commands", "", 0, 0, self._help, takes_json=False),  # OVS's name
            Command("version", "", 0, 0, self._version),
            Command("exit", "", 0, 0, self._exit, takes_json=False),
            Command("proxy/show", "", 0, 0, self._show),
            Command("proxy/rules", "", 0, 0, self._rules),
            Command("proxy/add-rule", "FLOW [BRIDGE]", 1, 2, self._add_rule),
            Command("proxy/del-rule", "ID", 1, 1, self._del_rule),
            Command("proxy/export", "[AFTER-ID]", 0, 1, self._export, takes_json=False),
            Command("proxy/import", "JSON-LINES", 1, 1, self._import),
            Command("proxy/attach", "BRIDGE", 1, 1, self._attach),
            Command("proxy/detach", "BRIDGE", 1, 1, self._detach),
            Command("proxy/controllers", "", 0, 0, self._controllers),
        ]
        self.commands = {command.name: command for command in commands}

    def usage(self, command: Command) -> str:
        words = [command.name, command.usage, "[--json]" if command.takes_json else ""]
        return " ".join(word for word in words if word)

    def dispatch(self, method: str, params: Iterable[Any]) -> Reply:
        """The reply to one request; error texts end with a newline, as text replies do."""
        reply = self._dispatch(method, params)
        if reply.ok or reply.text.endswith("\n"):
            return reply
        return dataclasses.replace(reply, text=reply.text + "\n")

    def _dispatch(self, method: str, params: Iterable[Any]) -> Reply:
        command = self.commands.get(method)
        if command is None:
            return Reply(False, f'"{method}" is not a valid command (try "help")')
        args = list(params)
        if not all(isinstance(arg, str) for arg in args):
            return Reply(False, f'"{method}" command has a non-string argument')
        wants_json = command.takes_json and bool(args) and args[-1] == JSON_FLAG
        if wants_json:
            args.pop()
        if not command.min_args <= len(args) <= command.max_args:
            wanted = (_plural(command.min_args, "argument") if command.min_args == command.max_args
                      else f"{command.min_args} to {command.max_args} arguments")
            return Reply(False, f'"{method}" takes {wanted}, got {len(args)} '
                                f"(usage: {self.usage(command)})")
        try:
            return command.run(args, wants_json)
        except UsageError as exc:
            return Reply(False, str(exc))

    # ---- the commands

    def _help(self, args: list[str], wants_json: bool) -> Reply:
        lines = ["The available commands are:"]
        lines += [f"  {self.usage(c)}" for _, c in sorted(self.commands.items())]
        return Reply(True, "\n".join(lines) + "\n")

    def _version(self, args: list[str], wants_json: bool) -> Reply:
        if wants_json:
            return Reply(True, _dump({"program": PROGRAM, "version": __version__}))
        return Reply(True, f"{PROGRAM} {__version__}\n")

    def _exit(self, args: list[str], wants_json: bool) -> Reply:
        return Reply(True, "", after=self.target.stop)

    def _show(self, args: list[str], wants_json: bool) -> Reply:
        document = show_document(self.target.snapshot())
        return Reply(True, _dump(document) if wants_json else format_show(document))

    def _rules(self, args: list[str], wants_json: bool) -> Reply:
        is_backed_up = self.target.is_backed_up
        # "backed_up": whether the rules backup has committed the rule (null: no backup).
        rows = [{**rule_row(rule_id, rule), "backed_up": is_backed_up(rule_id)}
                for rule_id, rule in sorted(self.target.rules(), key=lambda item: item[0])]
        return Reply(True, _dump({"rules": rows}) if wants_json else format_rules(rows))

    def _add_rule(self, args: list[str], wants_json: bool) -> Reply:
        bridge = args[1] if len(args) > 1 else None
        if bridge is not None and (not bridge or _BRIDGE_NAME_FORBIDDEN.intersection(bridge)):
            raise UsageError(f"{bridge!r} is not a bridge name")
        try:
            rule = parse_flow(args[0], bridge=bridge, origin=CLI_ORIGIN)
        except FlowSyntaxError as exc:
            raise UsageError(f"bad flow {args[0]!r}: {exc}") from None
        for rule_id, existing in self.target.rules():
            if dataclasses.replace(existing, origin=CLI_ORIGIN) == rule:
                raise UsageError(f"rule {rule_id} (origin {existing.origin}) is the same rule")
        try:
            row = rule_row(self.target.add_rule(rule), rule)
        except PermissionError as exc:
            raise UsageError(str(exc)) from None
        return Reply(True, _dump(row) if wants_json else _format_row("added", row))

    def _export(self, args: list[str], wants_json: bool) -> Reply:
        """Up to EXPORT_PAGE rules with ids above AFTER-ID, as JSON lines (pages keep replies
        small; `rules export` asks for pages until one comes back short)."""
        after = args[0] if args else "0"
        if not after.isdigit():
            raise UsageError(f"AFTER-ID must be a rule id or 0, got {after!r}")
        records = self.target.records(int(after), EXPORT_PAGE)
        return Reply(True, "".join(to_json_line(record) + "\n" for record in records))

    def _import(self, args: list[str], wants_json: bool) -> Reply:
        records = []
        for number, line in enumerate(args[0].splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(from_json_line(line))
            except RecordError as exc:
                raise UsageError(f"line {number}: {exc} (nothing imported)") from None
        added, skipped = self.target.import_records(records)
        if wants_json:
            return Reply(True, _dump({"added": added, "skipped": skipped}))
        return Reply(True, f"{_plural(added, 'rule')} imported, {skipped} skipped "
                           "(already present or expired)\n")

    def _attach(self, args: list[str], wants_json: bool) -> Reply:
        bridge = _bridge_name(args[0])
        try:
            status = self.target.attach(bridge)
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        document = {"bridge": bridge, "status": status}
        return Reply(True, _dump(document) if wants_json else format_status(bridge, status))

    def _detach(self, args: list[str], wants_json: bool) -> Reply:
        bridge = _bridge_name(args[0])
        try:
            status = self.target.detach(bridge)
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        if status is None:
            raise UsageError(f"{bridge} is not attached (proxy/show lists the bridges)")
        document = {"bridge": bridge, "status": status}
        return Reply(True, _dump(document) if wants_json else format_status(bridge, status))

    def _controllers(self, args: list[str], wants_json: bool) -> Reply:
        document = self.target.controllers()
        return Reply(True, _dump(document) if wants_json else format_controllers(document))

    def _del_rule(self, args: list[str], wants_json: bool) -> Reply:
        text = args[0]
        if not text.isdigit() or int(text) == 0:
            raise UsageError(f"rule id must be a positive integer, got {text!r}")
        rule_id = int(text)
        try:
            rule = self.target.remove_rule(rule_id)
        except KeyError:
            raise UsageError(f"no rule {rule_id} (proxy/rules lists them)") from None
        except PermissionError as exc:
            raise UsageError(str(exc)) from None
        row = rule_row(rule_id, rule)
        return Reply(True, _dump(row) if wants_json else _format_row("deleted", row))


# --------------------------------------------------------------------------------------------
# Unix socket paths longer than sun_path


@contextlib.contextmanager
def _addressable(path: str) -> Iterator[str]:
    """A name for `path` that fits in sun_path: itself, or /proc/self/fd/DIRFD/NAME (Linux),
    as OVS does for long paths. The directory stays open for the duration of the block."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    directory, name = os.path.split(path)
    dirfd = os.open(directory or ".", os.O_DIRECTORY | os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{dirfd}/{name}"
    finally:
        os.close(dirfd)


def _connect(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with _addressable(path) as address:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------------------------
# The server (asyncio adapter)


class _ControlConnection(asyncio.Protocol):
    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.stream = JsonStream()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            requests = [parse_request(message) for message in self.stream.receive_data(data)]
        except ControlProtocolError as exc:
            log.warning("control socket %s: dropping a client that %s", self.server.path, exc)
            transport.close()
            return
        for request in requests:
            reply = self.server.run_command(request)
            transport.write(encode_reply(request.id, reply.text) if reply.ok
                            else encode_error(request.id, reply.text))
            if reply.after is not None:
                reply.after()


class ControlSocketBusy(OSError):
    """The control socket's path is taken: another process answers on it, or it is no socket."""


class ControlServer:
    """Serves the control socket at `path` with `dispatcher`'s commands on the running loop.

    A stale socket file at the path is replaced; a live one makes start() fail. At stop the file
    is removed only if it is still this server's.
    """

    def __init__(self, path: Path, dispatcher: Dispatcher) -> None:
        self.path = path
        self.dispatcher = dispatcher
        self.connections: set[_ControlConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file

    async def start(self) -> None:
        path = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _addressable(path) as address:
                sock.bind(address)
            os.chmod(path, SOCKET_MODE)
            info = os.stat(path)
            self._identity = (info.st_dev, info.st_ino)
            sock.setblocking(False)
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: _ControlConnection(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        log.info("control socket listening on %s", path)

    def _remove_stale(self, path: str) -> None:
        """Remove a socket file left behind by a process that is gone; refuse a live one.

        OVS replaces its sockets unconditionally, but its default names carry the pid. This
        path is fixed, so replacing a live socket would silently cut a running daemon off from
        its operators.
        """
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketBusy(f"control socket {path}: the path exists and is not a socket")
        try:
            _connect(path, timeout=1.0).close()
        except OSError:
            log.info("control socket %s: removing the socket of a process that is gone", path)
            os.unlink(path)
            return
        raise ControlSocketBusy(f"control socket {path} is in use by a running process; stop it "
                                "or give this proxy another [proxy] control_socket")

    def run_command(self, request: Request) -> Reply:
        try:
            return self.dispatcher.dispatch(request.method, request.params)
        except Exception as exc:  # a command's bug costs that request, never the daemon
            log.exception("control socket %s: internal error in %r", self.path, request.method)
            return Reply(False, f"internal error in {request.method}: {exc}\n")

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()  # close() sends what is buffered first (exit's reply)
        await self._server.wait_closed()
        self._server = None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._identity:
            os.unlink(self.path)


# --------------------------------------------------------------------------------------------
# The client (blocking; used by the command line)


def transact(path: str | Path, method: str, params: Iterable[str] = (), *,
             timeout: float = 10.0) -> str:
    """Run one command on the daemon at `path` and return its reply text.

    Raises ControlUnreachable, CommandFailed (the daemon's error reply) or ControlProtocolError.
    """
    path = str(path)
    deadline = time.monotonic() + timeout
    try:
        sock = _connect(path, timeout)
    except FileNotFoundError:
        raise ControlUnreachable(f"{path}: no such control socket (is the proxy running?)") from None
    except OSError as exc:
        raise ControlUnreachable(f"{path}: cannot connect: {exc.strerror or exc}") from None
    stream = JsonStream()
    with sock:
        try:
            sock.sendall(encode_request(0, method, params))
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                data = sock.recv(65536)
                if not data:
                    raise ControlProtocolError(f"{path}: the daemon closed the connection without a reply")
                messages = stream.receive_data(data)
                if messages:
                    return _reply_result(path, messages[0])
        except TimeoutError:
            raise ControlUnreachable(f"{path}: no reply within {timeout:g} s") from None
        except OSError as exc:
            raise ControlUnreachable(f"{path}: {exc.strerror or exc}") from None


def _reply_result(path: str, message: dict[str, Any]) -> str:
    if message.get("id") != 0 or "method" in message:
        raise ControlProtocolError(f"{path}: expected the reply to request 0, got {message!r:.200}")
    error = message.get("error")
    if error is not None:
        raise CommandFailed(error.rstrip("\n") if isinstance(error, str) else json.dumps(error))
    result = message.get("result")
    if not isinstance(result, str):
        raise ControlProtocolError(f"{path}: reply result is not text: {result!r:.200}")
    return result
