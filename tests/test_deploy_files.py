"""The deployment files stay in step with the daemon they deploy.

The systemd unit runs the console script the way the CLI defines it and gives it the directories
the config defaults point at; `systemd-analyze verify` accepts it. The Vagrantfile parses
(`ruby -c`) and names provisioning scripts that exist, parse (`bash -n`) and reuse
scripts/bootstrap.sh; the config the hypervisor script writes is valid. Every
`ovs-sriov-proxy VERB` that docs/deployment.md tells an operator to run is a real command.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from ovs_sriov_proxy.cli import DEFAULT_CONFIG, main
from ovs_sriov_proxy.config import DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR, load_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "ovs-sriov-proxy.service"
VAGRANTFILE = ROOT / "Vagrantfile"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
PROGRAM = "ovs-sriov-proxy"


def _require_program(name: str) -> str:
    """The program's path; skips the test without it, except in CI (env CI set), where it fails."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed; run scripts/bootstrap.sh"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def _unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values, in order. Keys may repeat (ExecReload=), so configparser won't do."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number}: directive outside a section"
        assert not line.endswith("\\"), f"line {number}: keep directives on one line"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return _unit_directives(UNIT.read_text())


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should appear once, found {values}"
    return values[0]


def test_console_script_is_the_program_the_unit_runs() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    scripts = [line.split("=")[0].strip()
               for line in setup["options.entry_points"]["console_scripts"].splitlines() if line]
    assert PROGRAM in scripts


def test_unit_runs_the_daemon_with_the_default_config(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _one(unit, "Service", "Type") == "simple"
    start = shlex.split(_one(unit, "Service", "ExecStart"))
    assert Path(start[0]).name == PROGRAM
    assert start[1:] == ["run", "--config", DEFAULT_CONFIG]
    pre = shlex.split(_one(unit, "Service", "ExecStartPre"))
    assert Path(pre[0]).name == PROGRAM
    assert pre[1:] == ["check-config", "--config", DEFAULT_CONFIG]
    for verb in (start[1], pre[1]):
        assert verb in main.commands


def test_unit_reloads_with_sighup(unit: dict[str, dict[str, list[str]]]) -> None:
    reload = unit["Service"]["ExecReload"]
    assert reload[-1] == "/bin/kill -HUP $MAINPID"
    # Anything before the signal only checks the file, so a bad one fails `systemctl reload`.
    for line in reload[:-1]:
        argv = shlex.split(line)
        assert Path(argv[0]).name == PROGRAM and argv[1] == "check-config"


def test_unit_directories_are_the_config_defaults(unit: dict[str, dict[str, list[str]]]) -> None:
    runtime = _one(unit, "Service", "RuntimeDirectory")
    assert Path("/run") / runtime == Path(DEFAULT_CONTROL_SOCKET).parent
    state = _one(unit, "Service", "StateDirectory")
    assert Path("/var/lib") / state == Path(DEFAULT_STATE_DIR)


def test_unit_restarts_and_follows_open_vswitch(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert float(_one(unit, "Service", "RestartSec").rstrip("s")) >= 1
    # `run` exits 2 on a bad config file: no restart loop for that.
    assert "2" in _one(unit, "Service", "RestartPreventExitStatus").split()
    for key in ("After", "Wants"):
        names = " ".join(unit["Unit"][key]).split()
        assert {"ovs-vswitchd.service", "ovsdb-server.service"} <= set(names), key
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that the commands exist: point them at a stand-in for the console script.
    stand_in = tmp_path / PROGRAM
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = re.sub(rf"^(Exec\w+=){re.escape(PROGRAM)} ", rf"\g<1>{stand_in} ", UNIT.read_text(),
                  flags=re.MULTILINE)
    assert str(stand_in) in text
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    done = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True,
                          text=True, timeout=60)
    # Unknown keys and bad values are warnings with exit status 0: any line about our unit fails.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_vagrantfile_parses() -> None:
    ruby = _require_program("ruby")
    done = subprocess.run([ruby, "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _provisioning_scripts() -> list[Path]:
    paths = re.findall(r'provision\s+"shell",\s*path:\s*"([^"]+)"', VAGRANTFILE.read_text())
    assert len(paths) == 2, "one provisioning script for each VM"
    return [ROOT / path for path in paths]


def test_provisioning_scripts_exist_parse_and_reuse_bootstrap() -> None:
    for script in _provisioning_scripts():
        assert script.is_file(), script
        assert os.access(script, os.X_OK), f"{script} is not executable"
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "scripts/bootstrap.sh" in script.read_text(), f"{script} skips scripts/bootstrap.sh"


def test_hypervisor_lab_config_is_valid(tmp_path: Path) -> None:
    script = (ROOT / "lab" / "provision-hypervisor.sh").read_text()
    found = re.search(r'cat > "\$config_dir/proxy\.toml\.new" <<EOF\n(.*?)\nEOF\n', script, re.DOTALL)
    assert found, "provision-hypervisor.sh no longer writes proxy.toml with a heredoc"
    body = found.group(1)
    assert set(re.findall(r"\$\{?(\w+)", body)) == {"controller_target"}
    config_path = tmp_path / "proxy.toml"
    config_path.write_text(body.replace("$controller_target", "tcp:192.0.2.11:6633"))
    config = load_config(str(config_path))
    assert [c.name for c in config.controllers] == ["lab-controller"]


def _code_in(markdown: str) -> list[str]:
    """Fenced code blocks and inline code spans: what a reader is told to type."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
    return blocks + re.findall(r"`([^`\n]+)`", prose)


def test_deployment_doc_commands_exist() -> None:
    """`ovs-sriov-proxy VERB [SUBVERB]` in docs/deployment.md's code is a command of the CLI."""
    invocation = re.compile(rf"(?<![\w/.@-]){re.escape(PROGRAM)}[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")
    seen = set()
    for code in _code_in(DEPLOYMENT_DOC.read_text()):
        for verb, sub in invocation.findall(code):
            command = main.commands.get(verb)
            assert command is not None, f"docs/deployment.md runs `{PROGRAM} {verb}`, which does not exist"
            if isinstance(command, click.Group):
                assert sub in command.commands, f"`{PROGRAM} {verb} {sub}` does not exist"
            seen.add(verb)
    assert {"check-config", "run", "status"} <= seen
