"""Cache-hit benchmark: the proxy answering flow misses from its own rules vs real peers.

Runs the same ofload load (bench/ofload.py) against

  (a) the trivial responder (bench/responder.py): the generator's own ceiling,
  (b) ovs-testcontroller (OpenFlow 1.0, or ``-O OpenFlow13``): a C learning switch,
  (c) the proxy, ``python -m ovs_sriov_proxy run --config FILE``, with one rule that
      matches every generated frame, so every PACKET_IN is a cache hit,
  (d) on request, the miss path through a controller: the proxy without rules in front of
      the responder or an os-ken app (``proxy-miss``, ``proxy-osken``), and socat, a byte
      relay, in the same place (``relay-miss``, ``relay-osken``): the floor of any proxy,

for OpenFlow 1.0 and 1.3, in throughput and latency modes. The controller under
test is pinned to one CPU (default 0) and the generator to another (default 1).
Each (version, mode) is repeated ``--repeat`` times with the targets interleaved,
because this kind of machine (a small VM) drifts by 2x over tens of seconds; the
table shows the median and the range, and the proxy/testcontroller ratio of
medians. Every target is a fresh process per run and is killed after it.

Everything listens on 127.0.0.1; every wait has a deadline; every child is killed
on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OFLOAD = BENCH_DIR / "ofload.py"
RESPONDER = BENCH_DIR / "responder.py"
OSKEN_APP = REPO_DIR / "integration" / "osken_l2_app.py"
TARGETS = ("responder", "testcontroller", "proxy", "proxy-miss", "osken", "proxy-osken",
           "relay-miss", "relay-osken")
DEFAULT_TARGETS = TARGETS[:4]
# proxy-miss: the proxy with no rules in front of the responder, so that every miss goes up to a
# controller and back (the northbound miss path), compared with the responder alone.
# osken / proxy-osken: the same comparison with a real controller, a reactive L2 learning switch
# on os-ken's app framework (integration/osken_l2_app.py), directly and behind the proxy. It
# answers with PACKET_OUTs only, so that the proxy learns nothing and every miss goes up.
# relay-miss / relay-osken: the floor of any proxy in between. socat (C) in front of the same
# upstream, copying bytes both ways and understanding nothing, pinned where the proxy is. What
# it adds over direct is the cost of a third process on the path: two more loopback hops and
# wake-ups, no OpenFlow work.
UPSTREAMS = {"proxy-miss": "responder", "proxy-osken": "osken",
             "relay-miss": "responder", "relay-osken": "osken"}
PROXY_RULE = "priority=10,udp actions=output:2"


class BenchError(Exception):
    """A run could not be made (target did not start, generator failed)."""


@dataclass
class Children:
    """Every process this harness starts; ``kill_all`` ends them by their own ids."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path, cpu: int | None, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(grace)
        else:
            _signal_group(proc, signal.SIGKILL)  # leftovers in its group (e.g. forked workers)
        if proc in self.procs:
            self.procs.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self.procs):
            try:
                self.stop(proc, grace=1.0)
            except subprocess.TimeoutExpired:
                pass


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group the child leads (start_new_session): only our own processes."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, read from /proc (no probe connection,
    which a controller would log as a dropped switch)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == want and parts[3] == "0A":
                return True
    return False


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"exited with code {proc.returncode} before listening:\n{tail(log)}")
        if is_listening(port):
            return
        time.sleep(0.02)
    raise BenchError(f"not listening on 127.0.0.1:{port} after {timeout}s:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def proxy_command(python: str) -> tuple[list[str] | None, str]:
    """The proxy's command line, or None and why it cannot run yet."""
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR))
    check = subprocess.run([python, "-c", "import ovs_sriov_proxy.cli"], cwd=REPO_DIR, env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"ovs_sriov_proxy.cli is not importable yet ({last})"
    probe = "import importlib.util as u, sys; sys.exit(u.find_spec('ovs_sriov_proxy.__main__') is None)"
    has_main = subprocess.run([python, "-c", probe], cwd=REPO_DIR, env=env, timeout=60,
                              check=False).returncode == 0
    if has_main:
        return [python, "-m", "ovs_sriov_proxy"], ""
    return [python, "-c", "import sys; from ovs_sriov_proxy.cli import main; sys.exit(main())"], ""


@dataclass(frozen=True)
class Run:
    version: str
    mode: str
    switches: int


class Harness:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.children = Children()
        self.python = sys.executable
        self.proxy_argv: list[str] | None = None
        self.proxy_skip = ""
        self.counter = 0
        self.upstreams: list[subprocess.Popen[bytes]] = []

    # -- targets -----------------------------------------------------------
    def start_target(self, target: str, version: str, port: int) -> tuple[subprocess.Popen[bytes], Path]:
        self.counter += 1
        tag = f"{self.counter:03d}-{target}-of{version}"
        log = self.workdir / f"{tag}.log"
        cpu = self.args.controller_cpu
        env = dict(os.environ)
        if target == "responder":
            argv = [self.python, str(RESPONDER), "--listen", f"ptcp:{port}:127.0.0.1"]
        elif target == "osken":
            argv = [self.python, str(OSKEN_APP), "--listen", str(port), "--quiet",
                    "--packet-outs-only"]
        elif target == "testcontroller":
            proto = "OpenFlow10" if version == "1.0" else "OpenFlow13"
            argv = ["ovs-testcontroller", f"--unixctl={self.workdir / (tag + '.ctl')}", "-O", proto,
                    "-vconsole:warn", f"ptcp:{port}:127.0.0.1"]
        elif target.startswith("relay-"):
            if shutil.which("socat") is None:
                raise BenchError("socat is not installed (apt-get install socat)")
            upstream_port = self.start_upstream(target, tag, log)
            argv = ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay",
                    f"TCP:127.0.0.1:{upstream_port},nodelay"]
        else:
            assert self.proxy_argv is not None
            state_dir = self.workdir / f"{tag}-state"
            state_dir.mkdir()
            config = self.workdir / f"{tag}.toml"
            if target in UPSTREAMS:
                upstream_port = self.start_upstream(target, tag, log)
                tail_text = ('[[controllers]]\nname = "up"\n'
                             f'target = "tcp:127.0.0.1:{upstream_port}"\n')
            else:
                tail_text = f'[[rules]]\nflow = "{PROXY_RULE}"\n'
            config.write_text(
                "[proxy]\n"
                f'listen = ["ptcp:{port}:127.0.0.1"]\n'
                f'state_dir = "{state_dir}"\n'
                'control_socket = ""\n\n' + tail_text)
            argv = [*self.proxy_argv, "run", "--config", str(config)]
            env["PYTHONPATH"] = str(REPO_DIR) + os.pathsep + env.get("PYTHONPATH", "")
        proc = self.children.start(argv, log, cpu, cwd=REPO_DIR if target == "proxy" else self.workdir,
                                   env=env)
        wait_listening(proc, port, log, self.args.start_timeout)
        return proc, log

    def start_upstream(self, target: str, tag: str, log: Path) -> int:
        """The controller behind the proxy or relay, on the same CPU; its port."""
        upstream_port = free_port()
        upstream_argv = (
            [self.python, str(RESPONDER), "--listen", f"ptcp:{upstream_port}:127.0.0.1"]
            if UPSTREAMS[target] == "responder"
            else [self.python, str(OSKEN_APP), "--listen", str(upstream_port), "--quiet",
                  "--packet-outs-only"])
        upstream = self.children.start(upstream_argv, self.workdir / f"{tag}-upstream.log",
                                       self.args.controller_cpu)
        self.upstreams.append(upstream)
        wait_listening(upstream, upstream_port, log, self.args.start_timeout)
        return upstream_port

    # -- one measurement ---------------------------------------------------
    def run_once(self, target: str, run: Run) -> dict[str, Any]:
        port = free_port()
        proc, log = self.start_target(target, run.version, port)
        try:
            argv = [self.python, str(OFLOAD), "--target", f"tcp:127.0.0.1:{port}",
                    "--switches", str(run.switches), "--version", run.version, "--mode", run.mode,
                    "--seconds", str(self.args.seconds), "--warmup", str(self.args.warmup),
                    "--processes", str(self.args.processes),
                    "--cpus", ",".join(str(c) for c in self.args.generator_cpus), "--json"]
            if self.args.window:
                argv += ["--window", str(self.args.window)]
            if self.args.unbuffered:
                argv.append("--unbuffered")
            budget = self.args.warmup + self.args.seconds + self.args.start_timeout + 30
            cpu_before = _cpu_seconds(proc.pid)
            gen_log = self.workdir / f"{self.counter:03d}-ofload.log"
            with open(gen_log, "wb") as err:
                gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
                self.children.procs.append(gen)
                try:
                    out, _ = gen.communicate(timeout=budget)
                except subprocess.TimeoutExpired:
                    raise BenchError(f"ofload did not finish within {budget:.0f}s") from None
                finally:
                    self.children.stop(gen)
            if gen.returncode != 0 or not out.strip():
                raise BenchError(f"ofload failed ({gen.returncode}):\n{tail(gen_log)}\n"
                                 f"target log:\n{tail(log)}")
            if proc.poll() is not None:
                raise BenchError(f"target exited during the run:\n{tail(log)}")
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
            cpu = _cpu_seconds(proc.pid) - cpu_before  # warm-up and measured loops alike
            seconds = self.args.warmup + self.args.seconds
            result["target_cpu_us_per_response"] = cpu / max(result["responses_per_s"] * seconds, 1) * 1e6
            return result
        finally:
            self.children.stop(proc)
            while self.upstreams:
                self.children.stop(self.upstreams.pop())

    # -- the whole matrix ----------------------------------------------------
    def run_all(self) -> dict[str, Any]:
        targets = list(self.args.targets)
        if any(t.startswith("proxy") for t in targets):
            self.proxy_argv, self.proxy_skip = proxy_command(self.python)
            if self.proxy_argv is None:
                print(f"cachehit: skipping the proxy: {self.proxy_skip}", file=sys.stderr)
                targets = [t for t in targets if not t.startswith("proxy")]
        spinners = self.start_spinners() if self.args.spin_idle else []
        report: dict[str, Any] = {"settings": self.settings(), "proxy_skipped": self.proxy_skip or None,
                                  "runs": []}
        try:
            for version in self.args.versions:
                for mode in self.args.modes:
                    switches = self.args.switches if mode == "throughput" else self.args.latency_switches
                    run = Run(version, mode, switches)
                    samples: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
                    errors: dict[str, str] = {}
                    for rep in range(self.args.repeat):
                        for target in targets:
                            if target in errors:
                                continue
                            print(f"cachehit: OF{version} {mode} {target} ({rep + 1}/{self.args.repeat})",
                                  file=sys.stderr, flush=True)
                            try:
                                samples[target].append(self.run_once(target, run))
                            except BenchError as exc:
                                errors[target] = str(exc)
                                print(f"cachehit: {target} failed: {exc}", file=sys.stderr)
                    entry = summarize(run, targets, samples, errors)
                    report["runs"].append(entry)
                    if not self.args.json:
                        print(format_table(entry), flush=True)
        finally:
            for proc in spinners:
                self.children.stop(proc)
        return report

    def start_spinners(self) -> list[subprocess.Popen[bytes]]:
        """One SCHED_IDLE busy loop per pinned CPU: it runs only when nothing else
        wants the CPU, and keeps the vCPU from halting (waking a halted vCPU costs
        milliseconds on a VM, which would show up as latency of every target)."""
        cpus = {self.args.controller_cpu, *self.args.generator_cpus}
        code = ("import os; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
                "while True: pass\n")
        return [self.children.start([self.python, "-c", code], self.workdir / f"spin{cpu}.log", cpu)
                for cpu in sorted(cpus)]

    def settings(self) -> dict[str, Any]:
        a = self.args
        return {"versions": a.versions, "modes": a.modes, "switches": a.switches,
                "latency_switches": a.latency_switches, "seconds": a.seconds, "warmup": a.warmup,
                "repeat": a.repeat, "window": a.window or 64, "buffered": not a.unbuffered,
                "controller_cpu": a.controller_cpu, "generator_cpus": a.generator_cpus,
                "processes": a.processes, "spin_idle": a.spin_idle, "proxy_rule": PROXY_RULE}


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far, with its children's (socat forks one per
    connection), from /proc."""
    def ticks(one: int) -> tuple[int, int]:  # (own + reaped children's, parent pid)
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]), int(fields[1])

    total = ticks(pid)[0]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            try:
                own, parent = ticks(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            if parent == pid:
                total += own
    return total / os.sysconf("SC_CLK_TCK")


def summarize(run: Run, targets: list[str], samples: dict[str, list[dict[str, Any]]],
              errors: dict[str, str]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for target in targets:
        got = samples[target]
        if not got:
            rows.append({"target": target, "error": errors.get(target, "no result")})
            continue
        rates = [r["responses_per_s"] for r in got]
        rows.append({
            "target": target,
            "responses_per_s": statistics.median(rates),
            "responses_per_s_min": min(rates),
            "responses_per_s_max": max(rates),
            "p50_us": statistics.median(r["latency_us"]["p50"] for r in got),
            "p99_us": statistics.median(r["latency_us"]["p99"] for r in got),
            "p99_9_us": statistics.median(r["latency_us"]["p99.9"] for r in got),
            "cpu_us_per_response": statistics.median(r["target_cpu_us_per_response"] for r in got),
            "lost": sum(r["lost"] for r in got),
            "flow_mods": sum(r["flow_mods"] for r in got),
            "packet_outs": sum(r["packet_outs"] for r in got),
            "repeats": len(got),
            "error": errors.get(target),
            "samples": got,
        })
    by_name = {r["target"]: r for r in rows}
    tc: float | None = by_name.get("testcontroller", {}).get("responses_per_s")
    for r in rows:
        r["vs_testcontroller"] = (r["responses_per_s"] / tc) if tc and "responses_per_s" in r else None
    proxy = by_name.get("proxy", {})
    return {"version": run.version, "mode": run.mode, "switches": run.switches, "rows": rows,
            "proxy_over_testcontroller": proxy.get("vs_testcontroller")}


def format_table(entry: dict[str, Any]) -> str:
    head = f"OpenFlow {entry['version']}, {entry['mode']} mode, {entry['switches']} switch(es)"
    columns = (f"  {'target':<15} {'responses/s':>12} {'(min..max)':>20} {'p50 us':>9} "
               f"{'p99 us':>9} {'vs testctl':>10} {'CPU us/resp':>11}")
    lines = [head, columns]
    for r in entry["rows"]:
        if "responses_per_s" not in r:
            err = r["error"].strip().splitlines() or ["?"]
            why = err[0] if len(err) == 1 else f"{err[0]} ... {err[-1].strip()}"
            lines.append(f"  {r['target']:<15} failed: {why}")
            continue
        ratio = f"{r['vs_testcontroller']:.2f}" if r["vs_testcontroller"] is not None else "-"
        span = f"{r['responses_per_s_min']:.0f}..{r['responses_per_s_max']:.0f}"
        lines.append(f"  {r['target']:<15} {r['responses_per_s']:>12.0f} {span:>20} {r['p50_us']:>9.1f} "
                     f"{r['p99_us']:>9.1f} {ratio:>10} {r['cpu_us_per_response']:>11.1f}")
    ratio = entry["proxy_over_testcontroller"]
    lines.append(f"  proxy/testcontroller: {ratio:.2f}" if ratio is not None
                 else "  proxy/testcontroller: n/a")
    by_target = {r["target"]: r for r in entry["rows"] if "p50_us" in r}
    for proxied, upstream in UPSTREAMS.items():
        if proxied in by_target and upstream in by_target:
            direct, via = by_target[upstream], by_target[proxied]
            what = "the proxy" if proxied.startswith("proxy") else "socat (a byte relay)"
            lines.append(f"  miss path ({upstream}): p50 through {what} / direct = "
                         f"{via['p50_us'] / direct['p50_us']:.2f} (+{via['p50_us'] - direct['p50_us']:.0f} us);"
                         f" its CPU per miss {via['cpu_us_per_response']:.1f} us")
    return "\n".join(lines) + "\n"


def csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--versions", type=csv_list, default=["1.0", "1.3"])
    ap.add_argument("--modes", type=csv_list, default=["throughput", "latency"])
    ap.add_argument("--targets", type=csv_list, default=list(DEFAULT_TARGETS))
    ap.add_argument("--switches", type=int, default=16, help="switches in throughput mode")
    ap.add_argument("--latency-switches", type=int, default=1, help="switches in latency mode")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per target, interleaved")
    ap.add_argument("--window", type=int, default=None, help="ofload --window (throughput mode)")
    ap.add_argument("--unbuffered", action="store_true", help="PACKET_INs with NO_BUFFER")
    ap.add_argument("--processes", type=int, default=1, help="ofload worker processes")
    ap.add_argument("--controller-cpu", type=int, default=0)
    ap.add_argument("--generator-cpus", type=lambda s: [int(c) for c in csv_list(s)], default=[1])
    ap.add_argument("--spin-idle", action=argparse.BooleanOptionalAction, default=False,
                    help="SCHED_IDLE busy loop on the pinned CPUs so idle vCPUs do not halt "
                         "(measured to hurt on this VM; see README)")
    ap.add_argument("--start-timeout", type=float, default=15.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    ap.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = ap.parse_args(argv)
    bad = ([t for t in args.targets if t not in TARGETS]
           + [v for v in args.versions if v not in ("1.0", "1.3")]
           + [m for m in args.modes if m not in ("throughput", "latency")])
    if bad:
        ap.error(f"unknown values: {bad}")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="cachehit-"))
    harness = Harness(args, workdir)
    try:
        report = harness.run_all()
    except KeyboardInterrupt:
        print("cachehit: interrupted", file=sys.stderr)
        return 130
    finally:
        harness.children.kill_all()
        if args.keep:
            print(f"cachehit: logs in {workdir}", file=sys.stderr)
        else:
            for p in sorted(workdir.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            workdir.rmdir()
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
