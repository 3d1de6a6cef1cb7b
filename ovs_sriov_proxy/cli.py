"""The `ovs-sriov-proxy` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .config import ConfigError, load_config

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
    click.echo(f"{config_path}: OK ({len(config.rules)} rules, {len(config.controllers)} "
               f"controllers, listening on {', '.join(str(t) for t in config.proxy.listen)})")


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

    try:
        asyncio.run(run_daemon(config))
    except OSError as exc:  # e.g. the listen port is taken
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("--keep", is_flag=True, help="Leave the sandbox directory behind for inspection.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None,
              help="Where to build the sandbox (default: a new temporary directory).")
def lab(keep: bool, workdir: str | None) -> None:
    """Run a demo on a private OVS sandbox: bridges, the proxy, sample rules and traffic."""
    from .lab import run_lab

    sys.exit(run_lab(Path(workdir) if workdir else None, keep=keep))
