"""`ovs-sriov-proxy lab`, the README's first command, runs to completion and tells the truth."""

from __future__ import annotations

import io
import subprocess
import sys

from ovs_sriov_proxy.lab import run_lab


def test_lab_runs_and_every_probe_behaves(tmp_path) -> None:
    out = io.StringIO()
    assert run_lab(tmp_path / "lab", out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "all probes behaved as expected" in text
    assert "hit on the bridge's flow: no miss" in text  # the repeated frame cost no miss
    assert "miss: proxy installed priority=200,udp,tp_dst=5060 actions=output:4" in text
    assert "hw-offload=\"true\"" in text
    assert "TFTP: policy no-tftp)" in text and "dropped on the bridge by the policy's flow" in text
    assert "learning-switch answered" in text  # no rule covered it: the upstream controller did
    assert "won_by:learning-switch=1" in text  # and the proxy's own counters say so


def test_lab_command_line_exits_zero(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "ovs_sriov_proxy", "lab", "--dir",
                           str(tmp_path / "lab")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cookie=0x5052" in done.stdout
