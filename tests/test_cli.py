"""The command line's config checking: exit codes and messages operators and tools rely on."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ovs_sriov_proxy.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "proxy.toml"


def test_shipped_example_config_is_valid() -> None:
    result = CliRunner().invoke(main, ["check-config", "--config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "OK (3 rules, 1 VM rule, 0 controllers" in result.output


def test_check_config_counts_policies(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[[policies]]\nname = "a"\nmatch = "tcp,tp_dst=25"\n'
                      '[[policies]]\nname = "b"\nmatch = "udp,tp_dst=69"\n')
    result = CliRunner().invoke(main, ["check-config", "--config", str(config)])
    assert result.exit_code == 0 and "OK (0 rules, 2 policies, 0 controllers" in result.output


def test_bad_rule_names_file_line_key_and_problem(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[proxy]\nlisten = ["ptcp:6653"]\n\n[[rules]]\nflow = "udp actions=outptu:2"\n')
    for verb in ("check-config", "run"):
        result = CliRunner().invoke(main, [verb, "--config", str(config)])
        assert result.exit_code == 2
        assert f"{config}:5: rules[0].flow: unknown action 'outptu'" in result.output


def test_bad_target_and_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[proxy]\nlisten = ["tcp:6653"]\nlisen = 1\n')
    result = CliRunner().invoke(main, ["check-config", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}:2: proxy.listen" in result.output
    assert f"{config}:3: proxy.lisen: unknown key" in result.output


def test_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check-config", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "nope.toml" in result.output
