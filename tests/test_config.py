"""Configuration loading: schema, defaults, and errors that point at file:line and key."""

from __future__ import annotations

import dataclasses
import datetime
import textwrap
from pathlib import Path

import pytest

from ovs_sriov_proxy.config import (
    PROTOCOLS,
    Config,
    ConfigError,
    TimeWindow,
    load_config,
    parse_config,
)
from ovs_sriov_proxy.rules.flowparse import parse_flow, parse_match
from ovs_sriov_proxy.targets import parse_active, parse_passive


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    for name in ("proxy.key", "proxy.crt", "ca.crt", "ctl.key", "ctl.crt"):
        (tmp_path / name).write_text("-----BEGIN PLACEHOLDER-----\n")
    return tmp_path


FULL = """\
# ovs-sriov-proxy configuration
[proxy]
listen = ["ptcp:6653:127.0.0.1", "pssl:6654:[::1]"]
state_dir = "state"
protocols = ["OpenFlow13", "OpenFlow10"]
miss_fallback = "normal"
echo_interval = 2
dead_interval = 7.5
hello_timeout = 1.5
miss_timeout_ms = 150

[proxy.tls]
private_key = "proxy.key"
certificate = "proxy.crt"
ca_cert = "ca.crt"

[[rules]]
flow = "priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"
bridge = "br-int"

[[rules]]
flow = "priority=1 actions=drop"

[[controllers]]
name = "primary"
target = "tcp:127.0.0.1:6633"
priority = 100

[controllers.primacy]
hours = ["08:00-18:00", "22:00-02:00"]
max_packet_in_rate = 500
scope = "udp,tp_dst=5060"

[[controllers]]
name = "backup.1"
target = "ssl:[::1]"

[controllers.tls]
private_key = "ctl.key"
certificate = "ctl.crt"
ca_cert = "ca.crt"
"""


def write(directory: Path, text: str) -> Path:
    path = directory / "proxy.toml"
    path.write_text(text)
    return path


def test_full_config(pki: Path) -> None:
    path = write(pki, FULL)
    config = load_config(path)
    proxy = config.proxy
    assert config.source_path == path
    assert proxy.listen == (parse_passive("ptcp:6653:127.0.0.1"), parse_passive("pssl:6654:[::1]"))
    assert proxy.state_dir == pki / "state"
    assert proxy.protocols == ("OpenFlow13", "OpenFlow10")
    assert proxy.miss_fallback == "normal"
    assert (proxy.echo_interval, proxy.dead_interval, proxy.hello_timeout) == (2.0, 7.5, 1.5)
    assert isinstance(proxy.echo_interval, float)
    assert proxy.miss_timeout_ms == 150
    assert proxy.tls is not None
    assert proxy.tls.private_key == pki / "proxy.key"
    assert proxy.tls.ca_cert == pki / "ca.crt"

    assert config.rules == (
        parse_flow("priority=100,in_port=1,udp,tp_dst=5060 actions=output:2", bridge="br-int"),
        parse_flow("priority=1 actions=drop"),
    )
    assert config.rules[0].bridge == "br-int"
    assert config.rules[1].bridge is None
    assert all(rule.origin == "config" for rule in config.rules)

    primary, backup = config.controllers
    assert primary.name == "primary"
    assert primary.target == parse_active("tcp:127.0.0.1:6633")
    assert primary.priority == 100
    assert primary.tls is None
    assert primary.primacy is not None
    assert primary.primacy.max_packet_in_rate == 500.0
    assert primary.primacy.scope == parse_match("udp,tp_dst=5060")
    assert [str(w) for w in primary.primacy.hours] == ["08:00-18:00", "22:00-02:00"]
    assert backup.name == "backup.1"
    assert backup.priority == 0
    assert backup.primacy is None
    assert backup.tls is not None and backup.tls.certificate == pki / "ctl.crt"


def test_defaults() -> None:
    config = parse_config("")
    proxy = config.proxy
    assert proxy.listen == (parse_passive("ptcp:6653:127.0.0.1"),)
    assert proxy.state_dir == Path("/var/lib/ovs-sriov-proxy")
    assert proxy.protocols == PROTOCOLS == ("OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15")
    assert proxy.miss_fallback == "drop"
    assert (proxy.echo_interval, proxy.dead_interval, proxy.hello_timeout) == (5.0, 15.0, 5.0)
    assert proxy.miss_timeout_ms == 200
    assert proxy.tls is None
    assert config.rules == ()
    assert config.controllers == ()
    assert config.source_path == Path("<string>")


def test_config_is_frozen() -> None:
    config = parse_config("")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rules = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.proxy.miss_fallback = "flood"  # type: ignore[misc]


def test_every_field_has_a_docstring() -> None:
    import ast
    import inspect

    from ovs_sriov_proxy import config as module

    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in (
            "Config", "ProxyConfig", "ControllerConfig", "PrimacyConfig", "TlsConfig", "TimeWindow",
        ):
            body = node.body
            for index, item in enumerate(body):
                if isinstance(item, ast.AnnAssign):
                    following = body[index + 1] if index + 1 < len(body) else None
                    assert isinstance(following, ast.Expr), f"{node.name}.{ast.unparse(item.target)}"
                    assert isinstance(following.value, ast.Constant)


def test_relative_paths_resolve_against_the_file(pki: Path) -> None:
    sub = pki / "etc"
    sub.mkdir()
    (sub / "k").write_text("x")
    path = sub / "proxy.toml"
    path.write_text('[proxy]\nlisten = ["pssl:1"]\nstate_dir = "../var"\n'
                    '[proxy.tls]\nprivate_key = "k"\ncertificate = "../proxy.crt"\n'
                    f'ca_cert = "{pki / "ca.crt"}"\n')
    config = load_config(path)
    assert config.proxy.state_dir == sub / "../var"
    assert config.proxy.tls is not None
    assert config.proxy.tls.private_key == sub / "k"
    assert config.proxy.tls.certificate == sub / "../proxy.crt"
    assert config.proxy.tls.ca_cert == pki / "ca.crt"


# ---------------------------------------------------------------------------------------------
# Errors: each names file:line and key


def error_of(text: str, path: str = "proxy.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), path)
    return info.value


def test_error_format_from_the_brief() -> None:
    error = error_of(
        """\
        [proxy]
        listen = ["ptcp:6653:127.0.0.1"]

        [[rules]]
        flow = "actions=drop"

        [[rules]]
        flow = "priority=1 actions=drop"

        [[rules]]
        bridge = "br-int"
        flow = "in_port=1 actions=outptu"
        """
    )
    assert str(error) == (
        "proxy.toml:12: rules[2].flow: unknown action 'outptu' (did you mean 'output'?) at column 19"
    )
    assert (error.path, error.line, error.key) == ("proxy.toml", 12, "rules[2].flow")
    assert error.problem.startswith("unknown action 'outptu'")
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        ("[proxy]\nlisten = ['ptcp:1']\nlisten_on = 3\n", 3, "proxy.listen_on", "unknown key"),
        ("title = 'x'\n", 1, "title", "unknown key (expected one of: proxy, rules, controllers, metrics"),
        ("[proxy]\n\n[proxy.extra]\na = 1\n", 3, "proxy.extra", "unknown key"),
        ("[[rules]]\nflow = 'actions=drop'\nflwo = 'x'\n", 3, "rules[0].flwo", "unknown key"),
        ("[[controllers]]\nname='a'\ntarget='tcp:1.2.3.4'\n[controllers.primacy]\nhour = []\n", 5,
         "controllers[0].primacy.hour", "unknown key"),
        ("[proxy]\nlisten = 'ptcp:1'\n", 2, "proxy.listen", "expected an array of strings, got string 'ptcp:1'"),
        ("[proxy]\nlisten = []\n", 2, "proxy.listen", "must not be empty"),
        ("[proxy]\nlisten = [\n  'ptcp:1',\n  'tcp:1.2.3.4',\n]\n", 4, "proxy.listen[1]",
         "invalid target 'tcp:1.2.3.4': unknown method 'tcp'"),
        ("[proxy]\nlisten = ['ptcp:1', 2]\n", 2, "proxy.listen[1]", "expected a string, got integer 2"),
        ("[proxy]\nlisten = ['ptcp:1', 'ptcp:1:0.0.0.0']\n", 2, "proxy.listen[1]", "duplicate listen target"),
        ("[proxy]\nlisten = ['pssl:1']\n", 1, "proxy", "a pssl: listen target needs [proxy.tls]"),
        ("[proxy]\nstate_dir = 5\n", 2, "proxy.state_dir", "expected a directory path, got integer 5"),
        ("[proxy]\nstate_dir = ''\n", 2, "proxy.state_dir", "must not be empty"),
        ("[proxy]\nprotocols = ['OpenFlow12']\n", 2, "proxy.protocols[0]",
         "unknown protocol 'OpenFlow12' (allowed: OpenFlow10, OpenFlow13, OpenFlow14, OpenFlow15)"),
        ("[proxy]\nprotocols = ['OpenFlow13', 'OpenFlow13']\n", 2, "proxy.protocols[1]", "duplicate protocol"),
        ("[proxy]\nmiss_fallback = 'reject'\n", 2, "proxy.miss_fallback",
         "must be one of drop, flood, normal, got 'reject'"),
        ("[proxy]\necho_interval = 0\n", 2, "proxy.echo_interval", "must be a number greater than 0, got 0"),
        ("[proxy]\necho_interval = true\n", 2, "proxy.echo_interval", "expected a number, got boolean true"),
        ("[proxy]\necho_interval = 'fast'\n", 2, "proxy.echo_interval", "expected a number"),
        ("[proxy]\necho_interval = nan\n", 2, "proxy.echo_interval", "must be a number greater than 0"),
        ("[proxy]\necho_interval = 5\ndead_interval = 5\n", 3, "proxy.dead_interval",
         "dead_interval (5) must be greater than echo_interval (5)"),
        ("[proxy]\necho_interval = 20\n", 2, "proxy.echo_interval",
         "dead_interval (15) must be greater than echo_interval (20)"),
        ("[proxy]\nhello_timeout = -1.0\n", 2, "proxy.hello_timeout", "greater than 0"),
        ("[proxy]\nmiss_timeout_ms = 1.5\n", 2, "proxy.miss_timeout_ms", "expected an integer number of milliseconds"),
        ("[proxy]\nmiss_timeout_ms = 60001\n", 2, "proxy.miss_timeout_ms", "must be in 0..60000, got 60001"),
        ("proxy = 1\n", 1, "proxy", "expected a table ([proxy]), got integer 1"),
        ("[rules]\nflow = 'actions=drop'\n", 1, "rules", "expected an array of tables ([[rules]]), got a table"),
        ("[[rules]]\nbridge = 'br0'\n", 1, "rules[0].flow", "required key is missing"),
        ("[[rules]]\nflow = 5\n", 2, "rules[0].flow", "expected an ovs-ofctl flow string, got integer 5"),
        ("[[rules]]\nflow = 'actions=drop'\nbridge = 'br 0'\n", 3, "rules[0].bridge", "is not a bridge name"),
        ('[[rules]]\nflow = """\npriority=1,\ntp_dst=80 actions=drop"""\n', 2, "rules[0].flow",
         "tp_dst needs tcp, udp or sctp"),
        ("[[controllers]]\ntarget = 'tcp:1.2.3.4'\n", 1, "controllers[0].name", "required key is missing"),
        ("[[controllers]]\nname = 'a b'\ntarget = 'tcp:1.2.3.4'\n", 2, "controllers[0].name", "'a b' is not a name"),
        ("[[controllers]]\nname = 'a'\n", 1, "controllers[0].target", "required key is missing"),
        ("[[controllers]]\nname = 'a'\ntarget = 'ptcp:6653'\n", 3, "controllers[0].target",
         "invalid target 'ptcp:6653': unknown method 'ptcp' (expected tcp:IP[:PORT], ssl:IP[:PORT] or unix:PATH)"),
        ("[[controllers]]\nname = 'a'\ntarget = 'tcp:1.2.3.4'\npriority = '1'\n", 4, "controllers[0].priority",
         "expected an integer, got string '1'"),
        ("[[controllers]]\nname = 'a'\ntarget = 'tcp:1.2.3.4'\npriority = -1\n", 4, "controllers[0].priority",
         "must be in 0..2147483647, got -1"),
        ("[[controllers]]\nname = 'a'\ntarget = 'ssl:1.2.3.4'\n", 1, "controllers[0]",
         "an ssl: target needs [controllers.tls]"),
        (("[[controllers]]\nname = 'a'\ntarget = 'tcp:1.2.3.4'\n\n[[controllers]]\nname = 'a'\n"
          "target = 'tcp:1.2.3.5'\n"), 6, "controllers[1].name", "duplicate controller name 'a'"),
    ],
)
def test_errors(text: str, line: int, key: str, problem: str) -> None:
    error = error_of(text)
    assert len(error.issues) == 1, str(error)
    assert error.line == line, str(error)
    assert error.key == key
    assert problem in error.problem
    assert str(error) == f"proxy.toml:{line}: {key}: {error.problem}"


PRIMACY = """\
[[controllers]]
name = "a"
target = "tcp:127.0.0.1"

[[controllers]]
name = "b"
target = "tcp:127.0.0.2"

[controllers.primacy]
max_packet_in_rate = 10
hours = [
    "08:00-18:00",
    {bad},
]
scope = {scope}
"""


@pytest.mark.parametrize(
    ("bad", "scope", "line", "key", "problem"),
    [
        ('"8:00-18:00"', '"ip"', 13, "controllers[1].primacy.hours[1]", "is not a time window HH:MM-HH:MM"),
        ('"08:00-24:01"', '"ip"', 13, "controllers[1].primacy.hours[1]", "is not a time window"),
        ('"25:00-01:00"', '"ip"', 13, "controllers[1].primacy.hours[1]", "is not a time window"),
        ('"10:00-10:00"', '"ip"', 13, "controllers[1].primacy.hours[1]", "is empty"),
        ("7", '"ip"', 13, "controllers[1].primacy.hours[1]", "expected a string, got integer 7"),
        ('"10:00-11:00"', '"ip,bogus=1"', 15, "controllers[1].primacy.scope", "unknown field 'bogus'"),
        ('"10:00-11:00"', '"ip actions=drop"', 15, "controllers[1].primacy.scope", "a match takes no actions"),
        ('"10:00-11:00"', "3", 15, "controllers[1].primacy.scope", "expected an ovs-ofctl match string"),
    ],
)
def test_primacy_errors(bad: str, scope: str, line: int, key: str, problem: str) -> None:
    error = error_of(PRIMACY.format(bad=bad, scope=scope))
    assert (error.line, error.key) == (line, key), str(error)
    assert problem in error.problem


def test_primacy_rate_must_be_positive() -> None:
    error = error_of("[[controllers]]\nname='a'\ntarget='tcp:1.1.1.1'\nprimacy.max_packet_in_rate = 0\n")
    assert (error.line, error.key) == (4, "controllers[0].primacy.max_packet_in_rate")
    assert "greater than 0" in error.problem


def test_tls_only_for_ssl_targets(pki: Path) -> None:
    text = "[[controllers]]\nname='a'\ntarget='tcp:1.1.1.1'\n[controllers.tls]\n" \
        "private_key='ctl.key'\ncertificate='ctl.crt'\nca_cert='ca.crt'\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(pki, text))
    assert info.value.line == 4
    assert info.value.key == "controllers[0].tls"
    assert "only ssl: targets use tls" in info.value.problem


def test_missing_tls_file_is_named(pki: Path) -> None:
    text = FULL.replace('ca_cert = "ca.crt"\n\n[[rules]]', 'ca_cert = "missing.crt"\n\n[[rules]]')
    with pytest.raises(ConfigError) as info:
        load_config(write(pki, text))
    assert str(info.value) == (
        f"{pki / 'proxy.toml'}:15: proxy.tls.ca_cert: file not found: {pki / 'missing.crt'}"
    )


def test_tls_errors(pki: Path) -> None:
    text = (
        "[proxy]\n"
        "tls = { private_key = 'nope.key', certificate = 'proxy.crt', ca_cert = 'ca.crt' }\n"
        "[[controllers]]\n"
        "name = 'a'\n"
        "target = 'ssl:1.2.3.4'\n"
        "[controllers.tls]\n"
        "certificate = 'ctl.crt'\n"
        "ca_cert = 'ca.crt'\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(pki, text))
    issues = [(issue.line, issue.key, issue.problem) for issue in info.value.issues]
    assert issues == [
        (2, "proxy.tls.private_key", f"file not found: {pki / 'nope.key'}"),
        (6, "controllers[0].tls.private_key", "required key is missing"),
    ]


def test_all_errors_are_collected_in_file_order() -> None:
    error = error_of(
        """\
        [proxy]
        miss_fallback = "reject"
        hello_timeout = 0

        [[rules]]
        flow = "ip,tp_dst=1 actions=drop"

        [[controllers]]
        name = "x"
        target = "tcp:nowhere"
        """
    )
    assert [(issue.line, issue.key) for issue in error.issues] == [
        (2, "proxy.miss_fallback"),
        (3, "proxy.hello_timeout"),
        (6, "rules[0].flow"),
        (10, "controllers[0].target"),
    ]
    assert str(error).splitlines()[0] == str(error.issues[0])
    assert len(str(error).splitlines()) == 4


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("[proxy]\nlisten = [\n", 2, "at end of file"),
        ("[proxy]\nlisten = ['a'\necho_interval = 5\n", 3, "at column 1"),
        ("[proxy]\n\nmiss_fallback = drop\n", 3, "Invalid value at column 17"),
        ("[proxy]\na = 1\na = 2\n", 3, "at column"),
    ],
)
def test_toml_syntax_errors_have_a_line(text: str, line: int, problem: str) -> None:
    error = error_of(text)
    assert error.line == line, str(error)
    assert error.key == "(toml syntax)"
    assert problem in error.problem
    assert str(error).startswith(f"proxy.toml:{line}: (toml syntax): ")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert str(info.value).startswith(f"{tmp_path / 'absent.toml'}:0: (file): cannot read: ")


def test_time_window() -> None:
    day = TimeWindow(datetime.time(8), datetime.time(18))
    night = TimeWindow(datetime.time(22), datetime.time(2))
    to_midnight = TimeWindow(datetime.time(22), datetime.time(0))
    assert day.contains(datetime.time(8)) and day.contains(datetime.time(17, 59))
    assert not day.contains(datetime.time(18)) and not day.contains(datetime.time(7, 59))
    assert night.contains(datetime.time(23)) and night.contains(datetime.time(1, 59))
    assert not night.contains(datetime.time(2)) and not night.contains(datetime.time(12))
    assert to_midnight.contains(datetime.time(23, 59)) and not to_midnight.contains(datetime.time(0))
    assert str(to_midnight) == "22:00-24:00"
    config = parse_config(
        "[[controllers]]\nname='a'\ntarget='tcp:1.1.1.1'\nprimacy.hours=['22:00-24:00']\n"
    )
    primacy = config.controllers[0].primacy
    assert primacy is not None and primacy.hours == (to_midnight,)


def test_config_type() -> None:
    assert isinstance(parse_config("[proxy]\n"), Config)


def test_backup_table_and_retain() -> None:
    config = parse_config(
        '[proxy]\nstate_dir = "/var/lib/p"\n[backup]\nflush_interval_ms = 20\n'
        '[[controllers]]\nname = "a"\ntarget = "tcp:127.0.0.1:6653"\nretain = 30\n'
        '[[controllers]]\nname = "b"\ntarget = "tcp:127.0.0.1:6654"\nretain = "drop"\n'
        '[[controllers]]\nname = "c"\ntarget = "tcp:127.0.0.1:6655"\n', "/etc/p/proxy.toml")
    assert config.backup.enabled and config.backup.flush_interval_ms == 20
    assert config.backup_path == Path("/var/lib/p/rules.db")
    assert [c.retain for c in config.controllers] == [30.0, "drop", "keep"]
    relative = parse_config('[backup]\npath = "b/rules.db"\nenabled = false\n', "/etc/p/proxy.toml")
    assert relative.backup_path == Path("/etc/p/b/rules.db") and not relative.backup.enabled


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ("[backup]\nflush_interval_ms = 0\n", 2, "backup.flush_interval_ms", "must be in 1..60000"),
    ("[backup]\nenabled = 'yes'\n", 2, "backup.enabled", "expected true or false"),
    ("[backup]\npath = ''\n", 2, "backup.path", "must not be empty"),
    ("[backup]\nfile = 'x'\n", 2, "backup.file", "unknown key"),
    ("[[controllers]]\nname = 'a'\ntarget = 'tcp:1.2.3.4:1'\nretain = 'forever'\n", 4,
     "controllers[0].retain", 'expected "keep", "drop" or a number of seconds'),
    ("[[controllers]]\nname = 'a'\ntarget = 'tcp:1.2.3.4:1'\nretain = -5\n", 4,
     "controllers[0].retain", "greater than 0"),
    ("[[controllers]]\nname = 'cli'\ntarget = 'tcp:1.2.3.4:1'\n", 2, "controllers[0].name",
     "'cli' is reserved"),
])
def test_backup_and_retain_errors(text: str, line: int, key: str, problem: str) -> None:
    error = error_of(text)
    assert (error.line, error.key) == (line, key), str(error)
    assert problem in error.problem
