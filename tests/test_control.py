"""The control socket's pure parts: the JSON stream, the request/reply codec, the commands and
their output, the command line's choice of socket, and the `control_socket` config key.
None of these tests opens a socket; integration/test_control.py runs the real thing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ovs_sriov_proxy import __version__, cli, control
from ovs_sriov_proxy.config import DEFAULT_CONTROL_SOCKET, ConfigError, parse_config
from ovs_sriov_proxy.control import (
    CommandFailed,
    ControlProtocolError,
    ControlUnreachable,
    Dispatcher,
    JsonStream,
    Request,
    encode_error,
    encode_reply,
    encode_request,
    parse_request,
)
from ovs_sriov_proxy.rules.flowparse import parse_flow
from ovs_sriov_proxy.rules.model import FlowRule
from ovs_sriov_proxy.rules.records import RuleRecord
from ovs_sriov_proxy.rules.store import RuleMeta

with warnings.catch_warnings():  # ovs.jsonrpc imports ovs.poller, which imports eventlet if present
    warnings.simplefilter("ignore")  # (EventletDeprecationWarning, from eventlet's import)
    import ovs.json
    import ovs.jsonrpc

# --------------------------------------------------------------------------- the JSON stream


def test_back_to_back_objects_split_whatever_the_chunking() -> None:
    messages = [{"id": 1, "method": "a", "params": ['{["\\]}', 'q"uote']},
                {"id": "x", "method": "b/c", "params": ["é ☃ 𝄞", "}"]},
                {"id": [1, {"n": None}], "method": "d", "params": []}]
    wire = b" \n".join(json.dumps(m, ensure_ascii=False).encode() for m in messages) + b"\r\n"
    assert JsonStream().receive_data(wire) == messages
    stream = JsonStream()
    got: list[dict[str, Any]] = []
    for index in range(len(wire)):
        got += stream.receive_data(wire[index:index + 1])
    assert got == messages


def test_a_partial_object_waits_for_the_rest() -> None:
    stream = JsonStream()
    assert stream.receive_data(b'{"id": 0, "method": "x", "params": ["a\\') == []
    assert stream.receive_data(b'"b"]}{"id"') == [{"id": 0, "method": "x", "params": ['a"b']}]
    assert stream.receive_data(b': 1, "method": "y", "params": []}') == [
        {"id": 1, "method": "y", "params": []}]


@pytest.mark.parametrize("wire, problem", [
    (b"[1, 2]", "got an array"),
    (b"GET / HTTP/1.1\r\n", "expected a JSON object, got 'G'"),
    (b'{"id": 1}}', "unbalanced"),
    (b'{"id": 1, "method": x}', "malformed JSON"),
    (b'{"a": "\xff"}', "malformed JSON"),
])
def test_what_is_not_a_stream_of_objects_is_refused(wire: bytes, problem: str) -> None:
    with pytest.raises(ControlProtocolError, match=problem):
        JsonStream().receive_data(wire)


def test_an_endless_object_is_refused() -> None:
    stream = JsonStream(max_size=1000)
    stream.receive_data(b'{"params": ["' + b"x" * 900)
    with pytest.raises(ControlProtocolError, match="longer than 1000 bytes"):
        stream.receive_data(b"x" * 200)


# --------------------------------------------------------------------------- requests and replies


def test_requests_as_ovs_jsonrpc_encodes_them_are_understood() -> None:
    """The reference codec (the `ovs` package, what ovs.unixctl.client sends) against ours."""
    message = ovs.jsonrpc.Message.create_request("proxy/add-rule", ["udp actions=drop", "br0"])
    wire = ovs.json.to_string(message.to_json()).encode()
    [decoded] = JsonStream().receive_data(wire)
    assert parse_request(decoded) == Request(message.id, "proxy/add-rule",
                                             ("udp actions=drop", "br0"))


@pytest.mark.parametrize("encoded, kind", [
    (encode_reply(7, "text\n"), ovs.jsonrpc.Message.T_REPLY),
    (encode_error(7, "bad\n"), ovs.jsonrpc.Message.T_ERROR),
    (encode_request(7, "proxy/show", ["--json"]), ovs.jsonrpc.Message.T_REQUEST),
])
def test_what_we_send_is_valid_for_ovs_jsonrpc(encoded: bytes, kind: int) -> None:
    message = ovs.jsonrpc.Message.from_json(json.loads(encoded))
    assert not isinstance(message, str), message  # from_json returns a string on error
    assert message.type == kind and message.id == 7


@pytest.mark.parametrize("message, problem", [
    ({"id": 1, "result": "x", "error": None}, "got a reply"),
    ({"id": 1, "params": []}, "without a method"),
    ({"id": 1, "method": "x", "params": "a"}, "params must be an array"),
    ({"id": None, "method": "x", "params": []}, "no id"),
    ({"method": "x", "params": []}, "no id"),
])
def test_what_is_not_a_request_is_refused(message: dict[str, Any], problem: str) -> None:
    with pytest.raises(ControlProtocolError, match=problem):
        parse_request(message)


@pytest.mark.parametrize("message, outcome", [
    ({"id": 0, "result": "fine\n", "error": None}, "fine\n"),
    ({"id": 0, "result": None, "error": "no rule 9\n"}, CommandFailed("no rule 9")),
    ({"id": 0, "result": {"a": 1}, "error": None}, ControlProtocolError("not text")),
    ({"id": 3, "result": "x", "error": None}, ControlProtocolError("request 0")),
])
def test_the_client_reads_replies(message: dict[str, Any], outcome: object) -> None:
    if isinstance(outcome, Exception):
        with pytest.raises(type(outcome), match=str(outcome)):
            control._reply_result("s.ctl", message)
    else:
        assert control._reply_result("s.ctl", message) == outcome


def test_the_client_names_a_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(ControlUnreachable, match="no such control socket"):
        control.transact(tmp_path / "nope.ctl", "proxy/show")


# --------------------------------------------------------------------------- commands


SNAPSHOT = {
    "rules": 2,
    "bridges": [
        {"name": "br1", "datapath_id": "0000000000000002", "version": 1, "ports": 1,
         "installed_flows": 0, "counters": {}},
        {"name": "br0", "datapath_id": "0000000000000001", "version": 4, "ports": 3,
         "installed_flows": 1, "counters": {"hits": 4, "packet_ins": 5}},
    ],
}


class FakeDaemon:
    """A ControlTarget keeping rules in a dict, as the daemon's store does."""

    def __init__(self, *flows: str) -> None:
        self.store: dict[int, FlowRule] = {}
        self.next_id = 1
        self.stopped = False
        for flow in flows:
            self.add_rule(parse_flow(flow))

    def snapshot(self) -> dict[str, Any]:
        return SNAPSHOT

    def rules(self) -> list[tuple[int, FlowRule]]:
        return list(self.store.items())

    def add_rule(self, rule: FlowRule) -> int:
        rule_id, self.next_id = self.next_id, self.next_id + 1
        self.store[rule_id] = rule
        return rule_id

    def remove_rule(self, rule_id: int) -> FlowRule:
        return self.store.pop(rule_id)

    def records(self, after: int = 0, limit: int | None = None) -> list[RuleRecord]:
        found = [RuleRecord(i, r, RuleMeta(1000.0 + i)) for i, r in sorted(self.store.items())
                 if i > after]
        return found if limit is None else found[:limit]

    def is_backed_up(self, rule_id: int) -> bool | None:
        return rule_id % 2 == 1  # odd ids "committed", to tell the flag is passed through

    def import_records(self, records: list[RuleRecord]) -> tuple[int, int]:
        present = set(self.store.values())
        new = [r.rule for r in records if r.rule not in present]
        for rule in new:
            self.add_rule(rule)
        return len(new), len(records) - len(new)

    def stop(self) -> None:
        self.stopped = True


def ok(dispatcher: Dispatcher, method: str, *params: str) -> str:
    reply = dispatcher.dispatch(method, params)
    assert reply.ok, reply.text
    return reply.text


def error(dispatcher: Dispatcher, method: str, *params: Any) -> str:
    reply = dispatcher.dispatch(method, params)
    assert not reply.ok, reply.text
    assert reply.text.endswith("\n")
    return reply.text


def test_show_for_people_and_for_machines() -> None:
    dispatcher = Dispatcher(FakeDaemon())
    assert ok(dispatcher, "proxy/show") == (
        f"ovs-sriov-proxy {__version__}: 2 rules, 2 bridges connected\n"
        "br0: dpid 0000000000000001, OpenFlow13, 3 ports, 1 installed flow\n"
        "  hits=4 packet_ins=5\n"
        "br1: dpid 0000000000000002, OpenFlow10, 1 port, 0 installed flows\n"
        "  no traffic yet\n"
    )
    document = json.loads(ok(dispatcher, "proxy/show", "--json"))
    assert document["program"] == "ovs-sriov-proxy" and document["version"] == __version__
    assert document["rules"] == 2
    assert document["bridges"][1] == {**SNAPSHOT["bridges"][1], "protocol": "OpenFlow13"}  # type: ignore[dict-item]


def test_rules_are_listed_by_id_in_ovs_ofctl_syntax() -> None:
    daemon = FakeDaemon("priority=100,in_port=1,udp,tp_dst=5060 actions=output:2")
    dispatcher = Dispatcher(daemon)
    ok(dispatcher, "proxy/add-rule", "ip,nw_dst=10.0.0.0/8 actions=drop", "br-int")
    assert ok(dispatcher, "proxy/rules") == (
        "ID  ORIGIN  BRIDGE  FLOW\n"
        " 1  config  *       priority=100,in_port=1,udp,tp_dst=5060 actions=output:2\n"
        " 2  cli     br-int  priority=32768,ip,nw_dst=10.0.0.0/8 actions=drop\n"
    )
    assert json.loads(ok(dispatcher, "proxy/rules", "--json")) == {"rules": [
        {"id": 1, "origin": "config", "bridge": None,
         "flow": "priority=100,in_port=1,udp,tp_dst=5060 actions=output:2", "backed_up": True},
        {"id": 2, "origin": "cli", "bridge": "br-int",
         "flow": "priority=32768,ip,nw_dst=10.0.0.0/8 actions=drop", "backed_up": False},
    ]}
    assert ok(Dispatcher(FakeDaemon()), "proxy/rules") == "no rules\n"


def test_add_rule_goes_to_the_daemon_with_origin_cli() -> None:
    daemon = FakeDaemon()
    dispatcher = Dispatcher(daemon)
    assert ok(dispatcher, "proxy/add-rule", "priority=7,udp actions=output:2") == (
        "rule 1 added: priority=7,udp actions=output:2\n")
    assert json.loads(ok(dispatcher, "proxy/add-rule", "priority=8,udp actions=output:3", "br0",
                         "--json")) == {"id": 2, "origin": "cli", "bridge": "br0",
                                        "flow": "priority=8,udp actions=output:3"}
    assert daemon.store[1] == parse_flow("priority=7,udp actions=output:2", origin="cli")
    assert daemon.store[2].bridge == "br0"


def test_a_bad_flow_is_refused_with_the_parsers_message() -> None:
    daemon = FakeDaemon()
    text = error(Dispatcher(daemon), "proxy/add-rule", "udp actions=outptu:2")
    assert text == ("bad flow 'udp actions=outptu:2': unknown action 'outptu' "
                    "(did you mean 'output'?) at column 13\n")
    assert error(Dispatcher(daemon), "proxy/add-rule", "udp actions=drop", "br/0") == (
        "'br/0' is not a bridge name\n")
    assert daemon.store == {}


def test_the_same_rule_twice_is_refused_whatever_its_origin() -> None:
    daemon = FakeDaemon("priority=5,udp actions=output:2")
    dispatcher = Dispatcher(daemon)
    assert error(dispatcher, "proxy/add-rule", "udp,priority=5 actions=output:2") == (
        "rule 1 (origin config) is the same rule\n")
    ok(dispatcher, "proxy/add-rule", "priority=5,udp actions=output:2", "br0")  # scoped: another rule
    assert len(daemon.store) == 2


def test_del_rule() -> None:
    daemon = FakeDaemon("priority=5,udp actions=output:2")
    dispatcher = Dispatcher(daemon)
    assert error(dispatcher, "proxy/del-rule", "2") == "no rule 2 (proxy/rules lists them)\n"
    for bad in ("x", "-1", "0", "1.0"):
        assert error(dispatcher, "proxy/del-rule", bad) == (
            f"rule id must be a positive integer, got {bad!r}\n")
    assert json.loads(ok(dispatcher, "proxy/del-rule", "1", "--json")) == {
        "id": 1, "origin": "config", "bridge": None, "flow": "priority=5,udp actions=output:2"}
    assert daemon.store == {}


def test_requests_the_commands_do_not_take() -> None:
    dispatcher = Dispatcher(FakeDaemon())
    assert error(dispatcher, "proxy/nope") == '"proxy/nope" is not a valid command (try "help")\n'
    assert error(dispatcher, "proxy/del-rule") == (
        '"proxy/del-rule" takes 1 argument, got 0 (usage: proxy/del-rule ID [--json])\n')
    assert error(dispatcher, "proxy/add-rule", "a", "b", "c") == (
        '"proxy/add-rule" takes 1 to 2 arguments, got 3 '
        "(usage: proxy/add-rule FLOW [BRIDGE] [--json])\n")
    assert error(dispatcher, "proxy/show", 1) == '"proxy/show" command has a non-string argument\n'
    assert error(dispatcher, "exit", "--json").startswith('"exit" takes 0 arguments, got 1')


def test_exit_stops_the_daemon_only_after_replying() -> None:
    daemon = FakeDaemon()
    reply = Dispatcher(daemon).dispatch("exit", [])
    assert reply.ok and reply.text == "" and not daemon.stopped
    assert reply.after is not None
    reply.after()
    assert daemon.stopped


def test_help_and_version() -> None:
    dispatcher = Dispatcher(FakeDaemon())
    listing = ok(dispatcher, "help")
    assert listing == ok(dispatcher, "list-commands")
    for usage in ("exit", "proxy/show [--json]", "proxy/rules [--json]",
                  "proxy/add-rule FLOW [BRIDGE] [--json]", "proxy/del-rule ID [--json]",
                  "version [--json]"):
        assert f"\n  {usage}\n" in listing
    assert ok(dispatcher, "version") == f"ovs-sriov-proxy {__version__}\n"
    assert json.loads(ok(dispatcher, "version", "--json")) == {
        "program": "ovs-sriov-proxy", "version": __version__}


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, list[str]]]:
    """Records what the CLI sends instead of connecting; the reply is canned."""
    made: list[tuple[str, str, list[str]]] = []

    def fake(path: str, method: str, params: list[str], **_: object) -> str:
        made.append((str(path), method, list(params)))
        if method == "proxy/del-rule" and params[0] == "99":
            raise CommandFailed("no rule 99 (proxy/rules lists them)")
        return "reply\n"

    monkeypatch.setattr(control, "transact", fake)
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", "/nonexistent/proxy.toml")
    return made


def test_cli_commands_and_their_requests(calls: list[tuple[str, str, list[str]]],
                                         tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[proxy]\ncontrol_socket = "run/p.ctl"\n')
    runner = CliRunner()
    for argv in (["status"], ["status", "--json", "-t", "/s.ctl"],
                 ["rules", "list", "--config", str(config)],
                 ["rules", "add", "udp actions=drop", "--bridge", "br0", "--target", "/s.ctl"],
                 ["rules", "del", "3", "--json", "--target", "/s.ctl"]):
        result = runner.invoke(cli.main, argv)
        assert result.exit_code == 0, result.output
        assert result.output == "reply\n"
    assert calls == [
        (DEFAULT_CONTROL_SOCKET, "proxy/show", []),
        ("/s.ctl", "proxy/show", ["--json"]),
        (str(tmp_path / "run" / "p.ctl"), "proxy/rules", []),
        ("/s.ctl", "proxy/add-rule", ["udp actions=drop", "br0"]),
        ("/s.ctl", "proxy/del-rule", ["3", "--json"]),
    ]


def test_cli_errors_and_exit_codes(calls: list[tuple[str, str, list[str]]], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli.main, ["rules", "del", "99", "-t", "/s.ctl"])
    assert result.exit_code == 1
    assert result.output == "error: no rule 99 (proxy/rules lists them)\n"
    config = tmp_path / "proxy.toml"
    config.write_text('[proxy]\ncontrol_socket = ""\n')
    result = runner.invoke(cli.main, ["status", "--config", str(config)])
    assert result.exit_code == 2 and "disables the control socket" in result.output
    config.write_text("[proxy]\ncontrol_socket = 1\n")
    result = runner.invoke(cli.main, ["status", "--config", str(config)])
    assert result.exit_code == 2 and "proxy.control_socket: expected a socket path" in result.output
    assert calls == [("/s.ctl", "proxy/del-rule", ["99"])]


# --------------------------------------------------------------------------- config


def test_control_socket_setting(tmp_path: Path) -> None:
    source = tmp_path / "proxy.toml"
    assert parse_config("", source).proxy.control_socket == Path(DEFAULT_CONTROL_SOCKET)
    assert parse_config('[proxy]\ncontrol_socket = ""\n', source).proxy.control_socket is None
    relative = parse_config('[proxy]\ncontrol_socket = "run/p.ctl"\n', source)
    assert relative.proxy.control_socket == tmp_path / "run" / "p.ctl"
    absolute = parse_config('[proxy]\ncontrol_socket = "/x/p.ctl"\n', source)
    assert absolute.proxy.control_socket == Path("/x/p.ctl")


@pytest.mark.parametrize("value, problem", [
    ("5", "expected a socket path"),
    ('"run/"', "names a directory"),
    ('"."', "is a directory"),
    ('"a\\u0000b"', "NUL"),
])
def test_bad_control_socket_setting(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[proxy]\ncontrol_socket = {value}\n", tmp_path / "proxy.toml")
    assert caught.value.key == "proxy.control_socket" and caught.value.line == 2
    assert problem in caught.value.problem


def test_export_pages_json_lines_by_id_and_import_reads_them_back() -> None:
    source = FakeDaemon(*(f"priority={n},udp,tp_dst={n} actions=output:2" for n in range(1, 8)))
    dispatcher = Dispatcher(source)
    first = ok(dispatcher, "proxy/export").splitlines()
    assert [json.loads(line)["id"] for line in first] == list(range(1, 8))
    later = ok(dispatcher, "proxy/export", "5").splitlines()
    assert [json.loads(line)["id"] for line in later] == [6, 7]
    assert ok(dispatcher, "proxy/export", "7") == ""
    assert "AFTER-ID" in error(dispatcher, "proxy/export", "x")

    target = FakeDaemon("priority=1,udp,tp_dst=1 actions=output:2")  # one already present
    reply = json.loads(ok(Dispatcher(target), "proxy/import", "\n".join(first), "--json"))
    assert reply == {"added": 6, "skipped": 1}
    assert sorted(target.store.values(), key=lambda r: r.priority) == sorted(
        source.store.values(), key=lambda r: r.priority)


def test_import_refuses_the_whole_request_on_one_bad_line() -> None:
    source = FakeDaemon("priority=1,udp actions=output:2")
    line = ok(Dispatcher(source), "proxy/export").strip()
    target = FakeDaemon()
    text = error(Dispatcher(target), "proxy/import", line + "\n{\"format\": 1}")
    assert text.startswith("line 2:") and "nothing imported" in text
    assert target.store == {}


def test_rules_listing_says_which_rules_are_backed_up() -> None:
    rows = json.loads(ok(Dispatcher(FakeDaemon("priority=1 actions=drop", "priority=2 actions=drop")),
                         "proxy/rules", "--json"))["rules"]
    assert [(row["id"], row["backed_up"]) for row in rows] == [(1, True), (2, False)]
