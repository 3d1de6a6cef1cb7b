"""The thin ovsdbapp-backed part: the ovs IDL in its own thread, read into `OvsState` values.

ovsdbapp's `Connection` runs the IDL in a thread of its own and executes transactions there.
`_StateIdl` overrides `run()`, which only that thread calls, with the Connection's lock held:
after each batch of updates it reads the rows it cares about into an immutable `OvsState` and
hands the value to `on_state`, which the caller makes thread-safe (the manager uses
loop.call_soon_threadsafe). `None` means the IDL lost its server; it reconnects by itself (the
ovs library's reconnect FSM) and publishes the whole state again once it monitors again.

Only the columns the proxy reads or writes are monitored. Interface statistics, for instance,
change every few seconds and would wake the proxy for nothing.

Pitfalls of ovsdbapp that this module avoids:
- `Backend._ovsdb_connection` is a class attribute: two API objects of one class share the first
  connection. Each `OvsdbClient` makes a subclass of its own.
- The Open_vSwitch schema's transactions wait for ovs-vswitchd to apply them (`next_cfg`), so
  they time out while ovs-vswitchd is down, and log a traceback when they do. The proxy watches
  the result through the IDL instead, so its transactions do not wait.
- `Backend.start_connection` and `Transaction.commit` log tracebacks themselves; the connection
  is started directly and transactions run with check_error=True, log_errors=False, and their
  errors are logged here, once, as one line.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from typing import Any

with warnings.catch_warnings():  # ovs.poller imports eventlet when that is installed, which warns
    warnings.simplefilter("ignore")
    from ovs import stream  # type: ignore[import-untyped]
    from ovsdbapp.backend.ovs_idl import command, connection, idlutils, transaction
    from ovsdbapp.schema.open_vswitch import impl_idl

from ..config import TlsConfig
from .model import BridgeRow, BridgeSettings, ControllerSpec, InterfaceRow, OvsState

log = logging.getLogger(__name__)

SCHEMA = "Open_vSwitch"
COLUMNS = {
    "Open_vSwitch": ["bridges", "other_config"],
    "Bridge": ["name", "controller", "fail_mode", "protocols", "ports", "datapath_type"],
    "Controller": ["target", "connection_mode", "inactivity_probe", "max_backoff", "is_connected"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "ofport", "type", "external_ids", "mac_in_use"],
}

StateCallback = Callable[[OvsState | None], None]


class OvsdbUnavailable(Exception):
    """The OVSDB server cannot be reached, or did not answer in time."""


class BridgeNotFound(Exception):
    """The bridge a transaction was for is not in the database (any more)."""


def _first(value: Any) -> Any:
    """An optional column's value: the IDL gives [] or [value]."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def read_state(idl: Any) -> OvsState:
    """The monitored rows as an OvsState; call with the IDL's lock held (its own thread)."""
    tables = idl.tables
    root = next(iter(tables["Open_vSwitch"].rows.values()), None)
    other_config = tuple(sorted(root.other_config.items())) if root is not None else ()
    bridges = {}
    for row in tables["Bridge"].rows.values():
        controllers = [ControllerSpec(c.target, _first(c.connection_mode), _first(c.inactivity_probe),
                                      _first(c.max_backoff)) for c in row.controller]
        interfaces = []
        for port in row.ports:
            for iface in port.interfaces:
                ofport = _first(iface.ofport)
                interfaces.append(InterfaceRow(
                    iface.name, ofport if isinstance(ofport, int) and ofport > 0 else None,
                    iface.type, tuple(sorted(iface.external_ids.items())),
                    _first(iface.mac_in_use) or ""))
        bridges[row.name] = BridgeRow(
            row.name, BridgeSettings.of(controllers, _first(row.fail_mode), row.protocols),
            tuple(sorted(interfaces, key=lambda i: i.name)),
            tuple(sorted(c.target for c in row.controller if c.is_connected)), row.datapath_type)
    return OvsState(bridges, other_config)


class _StateIdl(connection.OvsdbIdl):  # type: ignore[misc]
    """Publishes states once `ready` (when transactions can be made too); before that the
    connection is still being set up and the first state waits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_state: StateCallback = lambda state: None
        self.ready = False
        self._published_seqno = -1
        self._published_connected = False

    def run(self) -> Any:
        changed = super().run()
        if self.ready:
            self.publish()
        return changed

    def publish(self) -> None:
        """Hand on a new state, or None once the server is lost. Lock held, or own thread."""
        monitoring = self._session.is_connected() and self.state == self.IDL_S_MONITORING
        if not monitoring:
            if self._published_connected:
                self._published_connected = False
                self.on_state(None)
        elif not self._published_connected or self.change_seqno != self._published_seqno:
            self._published_connected = True
            self._published_seqno = self.change_seqno
            self.on_state(read_state(self))


class _ApplySettings(command.BaseCommand):  # type: ignore[misc]
    """Make one bridge's controllers, fail_mode and protocols exactly `settings`.

    Controller rows whose target stays are updated in place, so a live connection is kept.
    """

    def __init__(self, api: Any, bridge: str, settings: BridgeSettings) -> None:
        super().__init__(api)
        self.bridge = bridge
        self.settings = settings

    def run_idl(self, txn: Any) -> None:
        row = idlutils.row_by_value(self.api.idl, "Bridge", "name", self.bridge, None)
        if row is None:
            raise BridgeNotFound(self.bridge)
        row.verify("controller")  # someone else changing it meanwhile makes this try again
        existing = {c.target: c for c in row.controller}
        controllers = []
        for spec in self.settings.controllers:
            controller = existing.get(spec.target)
            if controller is None:
                controller = txn.insert(self.api.idl.tables["Controller"])
                controller.target = spec.target
            for column in ("connection_mode", "inactivity_probe", "max_backoff"):
                value = getattr(spec, column)
                setattr(controller, column, [] if value is None else [value])
            controllers.append(controller)
        row.controller = controllers
        row.fail_mode = [self.settings.fail_mode] if self.settings.fail_mode else []
        row.protocols = list(self.settings.protocols)


def _api_class() -> type:
    """A fresh subclass: ovsdbapp keeps the connection in a class attribute."""

    class Api(impl_idl.OvsdbIdl):  # type: ignore[misc]
        _ovsdb_connection = None

        def create_transaction(self, check_error: bool = False, log_errors: bool = True,
                               **kwargs: Any) -> Any:
            return transaction.Transaction(self, self.ovsdb_connection, check_error=check_error,
                                           log_errors=log_errors)

    return Api


def configure_tls(tls: TlsConfig) -> None:
    """Key material for ssl: remotes (the ovs library keeps it per process)."""
    stream.Stream.ssl_set_private_key_file(str(tls.private_key))
    stream.Stream.ssl_set_certificate_file(str(tls.certificate))
    stream.Stream.ssl_set_ca_cert_file(str(tls.ca_cert))


def tls_failure(remote: str, tls: TlsConfig, timeout: float = 2.0) -> str | None:
    """Why TLS fails with the ssl: parts of `remote`, or None if it does not.

    python-ovs reports every TLS error as errno 1 ("Operation not permitted"), so after a failed
    connect the stdlib makes the same session (the checks of ovs.stream.SSLStream) to learn the
    reason. A server certificate that ca_cert did not sign fails the handshake; with TLS 1.3 the
    server's rejection of this end's certificate only arrives as an alert on the first read.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # as python-ovs: ovs-pki certificates name no host
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(tls.ca_cert)
        context.load_cert_chain(tls.certificate, tls.private_key)
    except (ssl.SSLError, OSError) as exc:
        return f"unusable [ovsdb.tls] key material: {exc}"
    problems = []
    for part in idlutils.parse_connection(remote):
        method, _, address = part.partition(":")
        if method != "ssl":
            continue
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout) as raw, \
                    context.wrap_socket(raw) as session:
                session.recv(1)
        except ssl.SSLError as exc:
            problems.append(f"{part}: TLS failed: {exc}")
        except OSError:  # not TLS: refused, or a timeout (the server kept the session)
            continue
    return "; ".join(problems) or None


class OvsdbClient:
    """One connection to an OVSDB server. Every method blocks: call them off the event loop."""

    def __init__(self, remote: str, on_state: StateCallback, *, timeout: float = 10.0) -> None:
        self.remote = remote
        self.on_state = on_state
        self.timeout = timeout
        self._api: Any = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Fetch the schema, start the IDL thread and wait for the first copy of the database.

        Raises OvsdbUnavailable; call again to retry.
        """
        try:
            helper = idlutils.get_schema_helper(self.remote, SCHEMA)
        except Exception as exc:  # ovsdbapp raises a bare Exception when no server answers
            raise OvsdbUnavailable(f"{self.remote}: {exc}") from None
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        idl = _StateIdl(self.remote, helper)
        idl.on_state = self.on_state
        conn = connection.Connection(idl, self.timeout)
        try:
            conn.start()
        except Exception as exc:  # TimeoutException and socket errors alike
            conn.stop(timeout=1)
            raise OvsdbUnavailable(f"{self.remote}: no database within {self.timeout:g} s: {exc}") from None
        with self._lock:
            self._api = _api_class()(conn, start=False)
        with conn.lock:  # the IDL thread runs already: publish the first state under its lock
            idl.ready = True
            idl.publish()

    def apply(self, bridge: str, settings: BridgeSettings) -> None:
        """One transaction setting the bridge's control settings. Raises BridgeNotFound,
        OvsdbUnavailable, or RuntimeError with OVSDB's message."""
        api = self._api
        if api is None:
            raise OvsdbUnavailable(f"{self.remote}: not connected")
        try:
            with api.transaction(check_error=True, log_errors=False) as txn:
                txn.add(_ApplySettings(api, bridge, settings))
        except BridgeNotFound:
            raise
        except Exception as exc:
            if type(exc).__name__ == "TimeoutException":
                raise OvsdbUnavailable(f"{self.remote}: {exc}") from None
            raise

    def stop(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.ovsdb_connection.stop(timeout=5)
