"""The `ovs-sriov-proxy` command line.

`status`, `rules`, `attach`, `detach` and `controllers` talk to a running daemon through its
control socket (control.py), with
the same commands `ovs-appctl -t SOCKET` runs. They print text for people, or with `--json`
the daemon's JSON document. Exit codes: 0 done, 1 the daemon refused the command or could not
be reached, 2 bad usage or a bad config file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import click

from . import __version__
from .config import DEFAULT_CONTROL_SOCKET, ConfigError, load_config

DEFAULT_CONFIG = "/etc/ovs-sriov-proxy/proxy.toml"


def _load_or_exit(path: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: cannot read {path}: {exc.strerror or exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ovs-sriov-proxy")
def main() -> None:
    """OpenFlow proxy between (hardware-offloaded) Open vSwitch bridges and their controllers."""


@main.command("check-config")
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False), help="TOML configuration file.")
def check_config(config_path: str) -> None:
    """Validate a configuration file and exit (non-zero if it is wrong)."""
    config = _load_or_exit(config_path)
    count = len(config.vm_rules)
    vm_rules = f", {count} VM rule{'' if count == 1 else 's'}" if count else ""
    count = len(config.policies)
    policies = f", {count} polic{'y' if count == 1 else 'ies'}" if count else ""
    click.echo(f"{config_path}: OK ({len(config.rules)} rules{vm_rules}{policies}, "
               f"{len(config.controllers)} controllers, listening on "
               f"{', '.join(str(t) for t in config.proxy.listen)})")


@main.command()
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def run(config_path: str, log_level: str) -> None:
    """Run the proxy in the foreground, logging to stderr."""
    config = _load_or_exit(config_path)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .daemon import run_daemon
    from .rules.backup import BackupError

    try:
        asyncio.run(run_daemon(config))
    except OSError as exc:  # e.g. the listen port is taken
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except BackupError as exc:  # e.g. a backup written by a newer version: never overwritten
        click.echo(f"error: rules backup {config.backup_path}: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("--keep", is_flag=True, help="Leave the sandbox directory behind for inspection.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None,
              help="Where to build the sandbox (default: a new temporary directory).")
def lab(keep: bool, workdir: str | None) -> None:
    """Run a demo on a private OVS sandbox: bridges, the proxy, sample rules and traffic."""
    from .lab import run_lab

    sys.exit(run_lab(Path(workdir) if workdir else None, keep=keep))


# ---- talking to the running daemon


def _control_target(target: str | None, config_path: str | None) -> str:
    """--target, else the control_socket of --config, else that of the default config file if
    there is one, else the default socket path."""
    if target:
        return target
    if config_path is None and not Path(DEFAULT_CONFIG).exists():
        return DEFAULT_CONTROL_SOCKET
    path = config_path or DEFAULT_CONFIG
    socket_path = _load_or_exit(path).proxy.control_socket
    if socket_path is None:
        click.echo(f"error: {path} disables the control socket (control_socket = \"\")", err=True)
        sys.exit(2)
    return str(socket_path)


def _transact(target: str | None, config_path: str | None, method: str, *args: str,
              as_json: bool = False) -> str:
    from .control import ControlError, transact

    params = [*args, "--json"] if as_json else list(args)
    try:
        return transact(_control_target(target, config_path), method, params)
    except ControlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


_Command = TypeVar("_Command", bound=Callable[..., None])


def _control_options(command: _Command) -> _Command:
    """--target, --config and --json, shared by every command that talks to the daemon."""
    command = click.option("--json", "as_json", is_flag=True,
                           help="Print the daemon's JSON document instead of text.")(command)
    command = click.option("--config", "config_path", default=None,
                           type=click.Path(dir_okay=False),
                           help=f"Read control_socket from this config file [default: {DEFAULT_CONFIG} "
                                "if it exists].")(command)
    command = click.option("--target", "-t", default=None, metavar="SOCKET",
                           help=f"The daemon's control socket [default: {DEFAULT_CONTROL_SOCKET}].")(command)
    return command


@main.command()
@_control_options
def status(target: str | None, config_path: str | None, as_json: bool) -> None:
    """Show the running proxy: its bridges, their flows and counters, the rule count."""
    click.echo(_transact(target, config_path, "proxy/show", as_json=as_json), nl=False)


# The statuses where an attach or a detach has done what it can: "waiting" is a bridge that
# does not exist yet (attached when it appears).
_SETTLED = {"proxy/attach": ("attached", "waiting"), "proxy/detach": ("detached",)}


def _wait_option(command: _Command) -> _Command:
    command = click.option("--timeout", default=10.0, show_default=True, type=float,
                           help="Seconds to wait for the change.")(command)
    return click.option("--wait/--no-wait", default=True, show_default=True,
                        help="Return once OVSDB has the change, as ovs-vsctl does, "
                             "or at once.")(command)


def _change_bridge(method: str, bridge: str, target: str | None, config_path: str | None,
                   as_json: bool, wait: bool, timeout: float) -> None:
    """Ask for an attach or a detach, then (--wait) follow the bridge's status in proxy/show
    until the OVSDB transaction is done; exit 1 if it is not within --timeout."""
    import time

    from .ovsdb.report import format_status

    status = json.loads(_transact(target, config_path, method, bridge, as_json=True))["status"]
    deadline = time.monotonic() + timeout
    while wait and status not in _SETTLED[method]:
        if time.monotonic() >= deadline:
            click.echo(f"error: {bridge} is still {status} after {timeout:g} s; the proxy's log "
                       "says why (it keeps trying)", err=True)
            sys.exit(1)
        time.sleep(0.05)
        show = json.loads(_transact(target, config_path, "proxy/show", as_json=True))
        rows = [b for b in (show.get("ovsdb") or {}).get("bridges", []) if b["name"] == bridge]
        status = rows[0]["status"] if rows else "detached"  # a detached bridge that is gone
    click.echo(json.dumps({"bridge": bridge, "status": status}, indent=2) if as_json
               else format_status(bridge, status), nl=as_json)


@main.command()
@click.argument("bridge")
@_wait_option
@_control_options
def attach(bridge: str, target: str | None, config_path: str | None, as_json: bool, wait: bool,
           timeout: float) -> None:
    """Attach BRIDGE through OVSDB: its controller becomes the proxy (needs [ovsdb]).

    A bridge that does not exist yet is attached when it appears. What it had before is
    remembered (in state_dir) and restored by `detach`.
    """
    _change_bridge("proxy/attach", bridge, target, config_path, as_json, wait, timeout)


@main.command()
@click.argument("bridge")
@_wait_option
@_control_options
def detach(bridge: str, target: str | None, config_path: str | None, as_json: bool, wait: bool,
           timeout: float) -> None:
    """Detach BRIDGE: restore the controllers, fail_mode and protocols it had before `attach`."""
    _change_bridge("proxy/detach", bridge, target, config_path, as_json, wait, timeout)


@main.command()
@_control_options
def controllers(target: str | None, config_path: str | None, as_json: bool) -> None:
    """List the upstream controllers and the state of each one's link from every bridge."""
    click.echo(_transact(target, config_path, "proxy/controllers", as_json=as_json), nl=False)


@main.group()
def rules() -> None:
    """List, add and delete the running proxy's rules."""


@rules.command("list")
@_control_options
def rules_list(target: str | None, config_path: str | None, as_json: bool) -> None:
    """List every rule: id, origin, bridge and flow (ovs-ofctl syntax)."""
    click.echo(_transact(target, config_path, "proxy/rules", as_json=as_json), nl=False)


@rules.command("add")
@click.argument("flow")
@click.option("--bridge", default=None, help="Apply the rule to this bridge only (default: all).")
@_control_options
def rules_add(flow: str, bridge: str | None, target: str | None, config_path: str | None,
              as_json: bool) -> None:
    """Add a rule in ovs-ofctl syntax, e.g. 'priority=100,udp,tp_dst=53 actions=output:2'.

    The rule has origin "cli" and lasts until it is deleted or the daemon stops.
    """
    args = (flow, bridge) if bridge is not None else (flow,)
    click.echo(_transact(target, config_path, "proxy/add-rule", *args, as_json=as_json), nl=False)


@rules.command("del")
@click.argument("rule_id", metavar="ID")
@_control_options
def rules_del(rule_id: str, target: str | None, config_path: str | None, as_json: bool) -> None:
    """Delete the rule with this id (see `rules list`); its flows leave the bridges."""
    click.echo(_transact(target, config_path, "proxy/del-rule", rule_id, as_json=as_json), nl=False)


@rules.command("export")
@click.option("--output", "-o", type=click.File("w"), default="-",
              help="Write the JSON lines here [default: stdout].")
@click.option("--backup", "backup_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Read this rules backup file instead of asking the daemon "
                                 "(for a proxy that is not running).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Read control_socket from this config file.")
@click.option("--target", "-t", default=None, metavar="SOCKET", help="The daemon's control socket.")
def rules_export(output, backup_file: str | None, config_path: str | None,
                 target: str | None) -> None:
    """Write every rule as JSON lines (ovs-ofctl flow, origin, bridge, times), for backup and
    for moving rules to another host with `rules import`."""
    if backup_file is not None:
        from .rules.backup import read_records
        from .rules.records import to_json_line

        for record in read_records(Path(backup_file)):
            output.write(to_json_line(record) + "\n")
        return
    after = 0
    while True:
        page = _transact(target, config_path, "proxy/export", str(after))
        lines = page.splitlines()
        output.write(page)
        if not lines:
            return
        after = json.loads(lines[-1])["id"]


@rules.command("import")
@click.argument("source", type=click.File("r"))
@_control_options
def rules_import(source, target: str | None, config_path: str | None, as_json: bool) -> None:
    """Add the rules of a `rules export` file (JSON lines; - for stdin) under new ids.

    Every line is checked before anything is sent; rules already present, and learned rules
    whose lifetime is over, are skipped. Imported rules keep their origin, except that rules of
    another host's config get origin "import" (this host's config file owns origin "config").
    """
    from .rules.records import RecordError, from_json_line

    lines = [line for line in source.read().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            from_json_line(line)
        except RecordError as exc:
            click.echo(f"error: {source.name}:{number}: {exc} (nothing imported)", err=True)
            sys.exit(2)
    added = skipped = 0
    for chunk in _chunks(lines):
        reply = _transact(target, config_path, "proxy/import", "\n".join(chunk), as_json=True)
        counts = json.loads(reply)
        added += counts["added"]
        skipped += counts["skipped"]
    if as_json:
        click.echo(json.dumps({"added": added, "skipped": skipped}, indent=2))
    else:
        click.echo(f"{added} rules imported, {skipped} skipped (already present or expired)")


def _chunks(lines: list[str]) -> Iterator[list[str]]:
    """Import requests of at most IMPORT_CHUNK lines and IMPORT_CHUNK_BYTES (the control
    socket refuses requests over MAX_MESSAGE_SIZE; JSON escaping can double a line)."""
    from .control import IMPORT_CHUNK, IMPORT_CHUNK_BYTES

    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and (len(chunk) == IMPORT_CHUNK or size + len(line) > IMPORT_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(line)
        size += len(line.encode()) + 1
    if chunk:
        yield chunk
