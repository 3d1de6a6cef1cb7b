"""Fixtures for tests against real processes: a private Open vSwitch and the proxy daemon.

- ``ovs``: an ``OvsSandbox`` in the test's tmp_path, started per test (~0.1 s).
  At teardown it is stopped and the test errors if its daemons logged a
  WARN/ERR/EMER line that is not allow-listed (see ``sandbox.ALLOWED_LOG_LINES``
  and ``ovs.allow_log``).
- ``proxy_factory``: starts ``python -m ovs_sriov_proxy run --config FILE`` and
  waits until it listens; stops it at teardown.
- ``free_port()``: a loopback port for a listener.

With Open vSwitch missing, tests that use ``ovs`` are skipped on a developer's
machine but fail in CI (env CI set): there, a missing install is a bug.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ovs_sriov_proxy.sandbox import (
    OvsSandbox,
    WaitTimeout,
    free_port,
    missing_ovs_programs,
    wait_until,
)

__all__ = ["ProxyProcess", "free_port"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_LOG_SECTION_KEY = pytest.StashKey[list[tuple[str, Callable[[], str]]]]()


def _require_programs(*names: str) -> None:
    """Skip the test when programs are missing, unless in CI, where that fails it."""
    missing = missing_ovs_programs() if not names else [n for n in names if _which(n) is None]
    if not missing:
        return
    reason = f"Open vSwitch is not installed (missing: {', '.join(missing)}); run scripts/bootstrap.sh"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def require_programs() -> Callable[..., None]:
    """``require_programs(*names)``: skip (fail in CI) unless the programs are installed.

    With no names: everything an ``OvsSandbox`` needs.
    """
    return _require_programs


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _show_on_failure(item: pytest.Item, title: str, text: Callable[[], str]) -> None:
    """Attach ``text()`` to the report of a failing phase of ``item``."""
    item.stash.setdefault(_LOG_SECTION_KEY, []).append((title, text))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, text in item.stash.get(_LOG_SECTION_KEY, []):
            try:
                content = text()
            except OSError as error:
                content = f"(could not read: {error})"
            report.sections.append((title, content))
    if call.when == "teardown":
        item.stash[_LOG_SECTION_KEY] = []


# --------------------------------------------------------------------------- ovs


@pytest.fixture
def ovs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OvsSandbox]:
    _require_programs()
    sandbox = OvsSandbox(tmp_path / "ovs")
    _show_on_failure(
        request.node, "ovs-vswitchd log (last 60 lines)", lambda: _tail(sandbox.directory / "ovs-vswitchd.log", 60)
    )
    with sandbox:
        yield sandbox
    problems = sandbox.log_problems()
    if problems:
        listing = "\n".join(f"  {line}" for line in problems)
        pytest.fail(
            f"Open vSwitch logged unexpected problems (sandbox in {sandbox.directory}):\n{listing}\n"
            "If a line is benign, allow it in the test with ovs.allow_log(regex, reason).",
            pytrace=False,
        )


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


# --------------------------------------------------------------------------- proxy

_PTCP = re.compile(r"^ptcp:(?P<port>\d+)(?::(?P<host>.+))?$")


def listen_targets(config_text: str) -> list[tuple[str, int]]:
    """``(host, port)`` of every ``ptcp:PORT[:IP]`` string anywhere in a TOML config."""
    try:
        document = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError:
        return []
    found: list[tuple[str, int]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)
        elif isinstance(value, str) and (match := _PTCP.match(value.strip())):
            host = (match.group("host") or "0.0.0.0").strip("[]")
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            found.append((host, int(match.group("port"))))

    walk(document)
    return found


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ProxyProcess:
    """The proxy daemon run as a subprocess, its stdout and stderr in ``log_path``."""

    def __init__(self, argv: list[str], config_path: Path, log_path: Path, env: dict[str, str], cwd: Path) -> None:
        self.argv = argv
        self.config_path = config_path
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=cwd, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _alive_or_fail(self, waiting_for: str) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"proxy (pid {self.pid}) exited with code {self.process.returncode} while waiting for "
                f"{waiting_for}; its log:\n{self.log_text()}"
            )

    def wait_listening(self, targets: list[tuple[str, int]], timeout: float = 20.0) -> None:
        """Wait until every ``(host, port)`` accepts a TCP connection."""
        for host, port in targets:
            what = f"the proxy to listen on {host}:{port}"

            def accepts(host: str = host, port: int = port, what: str = what) -> bool:
                self._alive_or_fail(what)
                return _accepts_connections(host, port)

            try:
                wait_until(accepts, timeout, what)
            except WaitTimeout as error:
                raise AssertionError(f"{error}; proxy log:\n{self.log_text()}") from None

    def wait_log(self, substring: str, timeout: float = 10.0) -> str:
        """Wait until the log contains ``substring``; returns the log text."""

        def logged() -> str | None:
            text = self.log_text()
            if substring in text:
                return text
            self._alive_or_fail(f"{substring!r} in its log")
            return None

        try:
            return wait_until(logged, timeout, f"{substring!r} in the proxy log")
        except WaitTimeout as error:
            raise AssertionError(f"{error}; proxy log:\n{self.log_text()}") from None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


@pytest.fixture
def proxy_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., ProxyProcess]]:
    """``proxy_factory(config_text, *, wait=True, timeout=20, extra_args=(), env=None) -> ProxyProcess``.

    Writes the TOML to tmp_path, runs ``python -m ovs_sriov_proxy run --config
    FILE`` and, unless ``wait=False`` (for configs meant to be rejected), waits
    until every ``ptcp:PORT:IP`` target in the config accepts connections.
    """
    started: list[ProxyProcess] = []
    numbers = itertools.count(1)

    def start(
        config_text: str,
        *,
        wait: bool = True,
        timeout: float = 20.0,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> ProxyProcess:
        number = next(numbers)
        config_path = tmp_path / f"proxy-{number}.toml"
        config_path.write_text(config_text)
        log_path = tmp_path / f"proxy-{number}.log"
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        full_env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", **(env or {})}
        argv = [sys.executable, "-m", "ovs_sriov_proxy", "run", "--config", str(config_path), *extra_args]
        proxy = ProxyProcess(argv, config_path, log_path, full_env, tmp_path)
        started.append(proxy)
        _show_on_failure(request.node, f"proxy log (pid {proxy.pid}, {log_path.name})", proxy.log_text)
        if wait:
            proxy.wait_listening(listen_targets(config_text), timeout)
        return proxy

    yield start
    for proxy in reversed(started):
        proxy.stop()
    # Whatever a test did to it, the proxy itself must never hit an internal error.
    for proxy in started:
        text = proxy.log_text()
        bad = [line for line in text.splitlines() if "Traceback" in line or "internal error" in line]
        assert not bad, f"the proxy logged internal errors ({proxy.log_path}):\n" + text[-4000:]
