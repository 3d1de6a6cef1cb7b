"""Read and write rules in ovs-ofctl flow syntax.

Operators write the proxy's local rules the way `ovs-ofctl add-flow` takes them. This module owns
the translation between that text and `FlowRule` (OpenFlow 1.3 terms: OXM field names, 32-bit
port numbers), and every check a rule must pass before it reaches the store: known fields and
actions, value ranges, masks only where the field allows one, prerequisites (7.2.3.6 of the
OpenFlow 1.3 spec) for matches and for set-field actions.

Tokenizing uses the key-value parser of the `ovs` package (the engine of `ovs.flow.ofp.OFPFlow`),
with decoders that keep raw strings: `OFPFlow` itself targets `ovs-ofctl dump-flows` output, so it
rejects valid add-flow text (`table=0,priority=1,...`, OXM names such as `ipv4_dst`) and its errors
carry no position. Values are decoded here so each error can name its field and column.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from ovs.flow.kv import KVDecoders, KVParser, ParseError
from ovs.flow.ofp_fields import field_decoders as _OVS_FIELDS

from .fields import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    FIELDS,
    IP_PROTO_ICMP,
    IP_PROTO_ICMPV6,
    IP_PROTO_SCTP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    VLAN_PRESENT,
)
from .model import (
    DEFAULT_PRIORITY,
    OFPP_ALL,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_MAX,
    OFPP_NORMAL,
    Action,
    FlowRule,
    Match,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    SetQueue,
)

__all__ = [
    "FlowSyntaxError",
    "format_actions",
    "format_flow",
    "format_match",
    "parse_flow",
    "parse_match",
]


class FlowSyntaxError(ValueError):
    """A rule's text is not a flow the proxy accepts.

    `problem` names the offending field or action; `column` (1-based, within the flow text) says
    where, when known.
    """

    def __init__(self, problem: str, *, column: int | None = None) -> None:
        self.problem = problem
        self.column = column
        super().__init__(problem if column is None else f"{problem} at column {column}")


# --------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True, slots=True)
class _Token:
    key: str  # as written
    value: str | None  # None for a bare keyword such as `ip` or `drop`
    column: int  # 1-based column of the key in the whole flow text
    value_column: int
    delim: str  # "=", ":", "(" or "" for a bare keyword


# Every key accepted, every value kept as the raw string; meaning is decided below.
_RAW_DECODERS = KVDecoders(default=lambda key, value: (key, value))
_ACTIONS_RE = re.compile(r"(?:^|,)actions=")
_WHITESPACE_RE = re.compile(r"\s")


def _tokenize(section: str, offset: int) -> list[_Token]:
    parser = KVParser(section, _RAW_DECODERS)
    try:
        parser.parse()
    except ParseError as exc:
        raise FlowSyntaxError(
            "unbalanced parentheses", column=_unclosed_paren(section, offset)
        ) from exc
    tokens = []
    for kv in parser.kv():
        meta = kv.meta
        has_value = meta.delim in ("=", ":", "(")
        tokens.append(
            _Token(
                key=meta.kstring,
                value=meta.vstring if has_value else None,
                column=offset + meta.kpos + 1,
                value_column=offset + (meta.vpos if has_value else meta.kpos) + 1,
                delim=meta.delim if has_value else "",
            )
        )
    return tokens


def _unclosed_paren(section: str, offset: int) -> int | None:
    opened: list[int] = []
    for index, char in enumerate(section):
        if char == "(":
            opened.append(index)
        elif char == ")" and opened:
            opened.pop()
    return offset + opened[0] + 1 if opened else None


def _split(text: str) -> tuple[str, str | None, int]:
    """(head, actions or None, column offset of the actions) with whitespace made commas.

    ovs-ofctl treats spaces and commas alike between fields; the ovs tokenizer does not (a bare
    keyword followed by a space swallows the next key), so whitespace becomes commas here. That
    keeps every character at its column.
    """
    flat = _WHITESPACE_RE.sub(",", text)
    found = _ACTIONS_RE.search(flat)
    if found is None:
        return flat, None, 0
    return flat[: found.start()], flat[found.end() :], found.end()


# --------------------------------------------------------------------------------------------
# Values

_INT_RE = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_MAC_RE = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")

# How each OXM field's value is written.
_MAC_FIELDS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha"})
_IPV4_FIELDS = frozenset({"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"})
_IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst"})
# Fields a rule may match with an arbitrary mask (OpenFlow 1.3 plus OVS's masked L4 ports).
_MASKABLE = (
    _MAC_FIELDS
    | _IPV4_FIELDS
    | _IPV6_FIELDS
    | {"vlan_vid", "ipv6_flabel", "tcp_src", "tcp_dst", "udp_src", "udp_dst"}
    | {"sctp_src", "sctp_dst"}
)
# OpenFlow does not let set-field write these.
_READ_ONLY = frozenset({"in_port", "eth_type", "ip_proto"})

_MATCH_PORT_NAMES = {"local": OFPP_LOCAL, "controller": OFPP_CONTROLLER}
_OUTPUT_PORT_NAMES = {
    "in_port": OFPP_IN_PORT,
    "normal": OFPP_NORMAL,
    "flood": OFPP_FLOOD,
    "all": OFPP_ALL,
    "controller": OFPP_CONTROLLER,
    "local": OFPP_LOCAL,
}


def _int(text: str, what: str, column: int, limit: int) -> int:
    """An unsigned decimal or 0x-hex integer in 0..limit."""
    if not _INT_RE.fullmatch(text):
        raise FlowSyntaxError(f"{what}: {text!r} is not an integer", column=column)
    value = int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
    if value > limit:
        raise FlowSyntaxError(f"{what}: {text} is out of range 0..{limit}", column=column)
    return value


def _mac(text: str, what: str, column: int) -> int:
    if not _MAC_RE.fullmatch(text):
        raise FlowSyntaxError(
            f"{what}: {text!r} is not a MAC address (expected xx:xx:xx:xx:xx:xx)", column=column
        )
    return int("".join(part.zfill(2) for part in text.split(":")), 16)


def _ip(text: str, what: str, column: int, version: int) -> int:
    kind = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    try:
        return int(kind(text))
    except ValueError:
        raise FlowSyntaxError(
            f"{what}: {text!r} is not an IPv{version} address", column=column
        ) from None


def _ip_mask(text: str, what: str, column: int, version: int) -> int:
    bits = 32 if version == 4 else 128
    if text.isdigit():
        prefix = int(text)
        if prefix > bits:
            raise FlowSyntaxError(f"{what}: prefix /{text} is longer than {bits}", column=column)
        return ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    return _ip(text, what, column, version)


def _port(text: str, what: str, column: int, names: dict[str, int]) -> int:
    named = names.get(text.lower())
    if named is not None:
        return named
    if not _INT_RE.fullmatch(text):
        choices = ", ".join(names)
        raise FlowSyntaxError(
            f"{what}: invalid port {text!r} (expected a number 1..{OFPP_MAX} or one of {choices})",
            column=column,
        )
    number = _int(text, what, column, 0xFFFFFFFF)
    if not 1 <= number <= OFPP_MAX:
        raise FlowSyntaxError(
            f"{what}: port {text} is out of range 1..{OFPP_MAX}", column=column
        )
    return number


def _field_value(field: str, text: str, what: str, column: int) -> int:
    """One unmasked value of an OXM field."""
    if field in _MAC_FIELDS:
        return _mac(text, what, column)
    if field in _IPV4_FIELDS:
        return _ip(text, what, column, 4)
    if field in _IPV6_FIELDS:
        return _ip(text, what, column, 6)
    if field == "in_port":
        return _port(text, what, column, _MATCH_PORT_NAMES)
    return _int(text, what, column, FIELDS[field].full_mask)


def _field_value_mask(field: str, text: str, what: str, column: int) -> tuple[int, int]:
    """VALUE or VALUE/MASK (IP prefixes included) for a match on an OXM field."""
    full = FIELDS[field].full_mask
    value_text, slash, mask_text = text.partition("/")
    if not slash:
        return _field_value(field, text, what, column), full
    if field not in _MASKABLE:
        raise FlowSyntaxError(f"{what} does not take a mask", column=column)
    value = _field_value(field, value_text, what, column)
    mask_column = column + len(value_text) + 1
    if field in _IPV4_FIELDS or field in _IPV6_FIELDS:
        version = 4 if field in _IPV4_FIELDS else 6
        return value, _ip_mask(mask_text, what, mask_column, version)
    if field in _MAC_FIELDS:
        return value, _mac(mask_text, what, mask_column)
    return value, _int(mask_text, f"{what} mask", mask_column, full)


# --------------------------------------------------------------------------------------------
# Prerequisites

_ETH_TYPE_HINTS = {ETH_TYPE_IPV4: "ip", ETH_TYPE_IPV6: "ipv6", ETH_TYPE_ARP: "arp"}
_IP_PROTO_HINTS = {
    IP_PROTO_ICMP: ("icmp",),
    IP_PROTO_TCP: ("tcp", "tcp6"),
    IP_PROTO_UDP: ("udp", "udp6"),
    IP_PROTO_SCTP: ("sctp", "sctp6"),
    IP_PROTO_ICMPV6: ("icmp6",),
}
_L4_BY_PROTO = {IP_PROTO_TCP: "tcp", IP_PROTO_UDP: "udp", IP_PROTO_SCTP: "sctp"}


def _pinned_within(fields: dict[str, tuple[int, int]], name: str, allowed: frozenset[int]) -> bool:
    """Whether every value the match lets through for `name` is one of `allowed`."""
    if name not in fields:
        return False
    value, mask = fields[name]
    free = FIELDS[name].full_mask & ~mask
    if free.bit_count() > 16:
        return False
    subset = free
    while True:  # walk every combination of the unmasked bits
        if value | subset not in allowed:
            return False
        if subset == 0:
            return True
        subset = (subset - 1) & free


def _requirement(name: str, allowed: frozenset[int]) -> str:
    if name == "eth_type":
        numbers = " or ".join(f"0x{v:04x}" for v in sorted(allowed))
        hints = " or ".join(f"'{_ETH_TYPE_HINTS[v]}'" for v in sorted(allowed) if v in _ETH_TYPE_HINTS)
        return f"eth_type {numbers}" + (f" (add {hints})" if hints else "")
    if name == "ip_proto":
        numbers = " or ".join(str(v) for v in sorted(allowed))
        hints = " or ".join(f"'{h}'" for v in sorted(allowed) for h in _IP_PROTO_HINTS.get(v, ()))
        return f"ip_proto {numbers}" + (f" (add {hints})" if hints else "")
    if name == "vlan_vid":
        return "a VLAN tag (add dl_vlan=VID or vlan_tci=0x1000/0x1000)"
    return f"{name} in {sorted(allowed)}"


def _unmet(fields: dict[str, tuple[int, int]], name: str) -> str | None:
    for prerequisite, allowed in FIELDS[name].prerequisite:
        if not _pinned_within(fields, prerequisite, allowed):
            return _requirement(prerequisite, allowed)
    return None


def _pinned(fields: dict[str, tuple[int, int]], name: str) -> int | None:
    entry = fields.get(name)
    if entry is None or entry[1] != FIELDS[name].full_mask:
        return None
    return entry[0]


# --------------------------------------------------------------------------------------------
# Match


class _MatchBuilder:
    """Collects {oxm: (value, mask)} and which token set each field, for messages."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[int, int]] = {}
        self.origin: dict[str, _Token] = {}

    def set(self, name: str, value: int, mask: int, token: _Token) -> None:
        entry = (value & mask, mask)
        previous = self.fields.get(name)
        if previous is not None and previous != entry:
            first = self.origin[name]
            raise FlowSyntaxError(
                f"{token.key} conflicts with {first.key} (column {first.column}) on {name}",
                column=token.column,
            )
        self.fields[name] = entry
        self.origin.setdefault(name, token)

    def pinned(self, name: str) -> int | None:
        return _pinned(self.fields, name)


_MatchHandler = Callable[[_MatchBuilder, _Token], None]


def _needs_value(token: _Token, noun: str = "a value", separator: str = "=") -> str:
    """The token's value; a clear error when it has none or is written KEY(...)."""
    if token.value is None or token.value == "":
        raise FlowSyntaxError(f"{token.key} needs {noun} ({token.key}{separator}...)",
                              column=token.column)
    if token.delim == "(":
        raise FlowSyntaxError(f"{token.key} takes {token.key}{separator}VALUE", column=token.column)
    return token.value


def _direct(field: str) -> _MatchHandler:
    def handle(builder: _MatchBuilder, token: _Token) -> None:
        value, mask = _field_value_mask(field, _needs_value(token), token.key, token.value_column)
        builder.set(field, value, mask, token)

    return handle


def _shorthand(eth_type: int, ip_proto: int | None) -> _MatchHandler:
    def handle(builder: _MatchBuilder, token: _Token) -> None:
        if token.value is not None:
            raise FlowSyntaxError(f"{token.key} takes no value", column=token.column)
        builder.set("eth_type", eth_type, 0xFFFF, token)
        if ip_proto is not None:
            builder.set("ip_proto", ip_proto, 0xFF, token)

    return handle


def _nw_proto(builder: _MatchBuilder, token: _Token) -> None:
    # ovs-ofctl: with arp, nw_proto matches the ARP opcode.
    if builder.pinned("eth_type") == ETH_TYPE_ARP:
        _direct("arp_op")(builder, token)
    else:
        _direct("ip_proto")(builder, token)


def _nw_addr(ipv4_field: str, arp_field: str) -> _MatchHandler:
    # ovs-ofctl: with arp, nw_src/nw_dst match the ARP sender/target protocol address.
    def handle(builder: _MatchBuilder, token: _Token) -> None:
        arp = builder.pinned("eth_type") == ETH_TYPE_ARP
        _direct(arp_field if arp else ipv4_field)(builder, token)

    return handle


def _l4_field(
    fields: dict[str, tuple[int, int]], token: _Token, suffix: str, what: str | None = None
) -> str:
    """tcp_/udp_/sctp_ + suffix, by the transport protocol the match pins."""
    proto = _pinned(fields, "ip_proto")
    if proto in _L4_BY_PROTO:
        return f"{_L4_BY_PROTO[proto]}_{suffix}"
    have = "pins no transport protocol" if proto is None else f"has ip_proto={proto}"
    raise FlowSyntaxError(
        f"{what or token.key} needs tcp, udp or sctp in the match, but the match {have}",
        column=token.column,
    )


def _tp(suffix: str) -> _MatchHandler:
    def handle(builder: _MatchBuilder, token: _Token) -> None:
        _direct(_l4_field(builder.fields, token, suffix))(builder, token)

    return handle


def _icmp(suffix: str) -> _MatchHandler:
    def handle(builder: _MatchBuilder, token: _Token) -> None:
        v6 = builder.pinned("eth_type") == ETH_TYPE_IPV6
        _direct(f"icmpv6_{suffix}" if v6 else f"icmpv4_{suffix}")(builder, token)

    return handle


def _nw_tos(builder: _MatchBuilder, token: _Token) -> None:
    tos = _int(_needs_value(token), token.key, token.value_column, 0xFF)
    builder.set("ip_dscp", tos >> 2, 0x3F, token)


def _dl_vlan(builder: _MatchBuilder, token: _Token) -> None:
    text = _needs_value(token)
    vid = _int(text, token.key, token.value_column, 0xFFFF)
    if vid == 0xFFFF:
        builder.set("vlan_vid", 0, 0x1FFF, token)  # no tag
    elif vid <= 0xFFF:
        builder.set("vlan_vid", VLAN_PRESENT | vid, 0x1FFF, token)
    else:
        raise FlowSyntaxError(
            f"{token.key}: {text} is not a VLAN ID (0..4095, or 0xffff for no tag)",
            column=token.value_column,
        )


def _vlan_tci(builder: _MatchBuilder, token: _Token) -> None:
    text = _needs_value(token)
    value_text, slash, mask_text = text.partition("/")
    tci = _int(value_text, token.key, token.value_column, 0xFFFF)
    mask = 0xFFFF
    if slash:
        mask = _int(mask_text, f"{token.key} mask", token.value_column + len(value_text) + 1, 0xFFFF)
    tci &= mask
    pcp, pcp_mask = tci >> 13, mask >> 13
    if pcp_mask not in (0, 7):
        raise FlowSyntaxError(
            f"{token.key}: the PCP bits (0xe000) must be masked all or none", column=token.column
        )
    if mask & VLAN_PRESENT and not tci & VLAN_PRESENT:
        # CFI matched as 0: a packet with no tag, whose TCI OVS reads as 0.
        if tci:
            raise FlowSyntaxError(
                f"{token.key}: {text} can never match (VID/PCP bits set without the 0x1000 bit)",
                column=token.value_column,
            )
        builder.set("vlan_vid", 0, mask & 0x1FFF, token)
        return
    if mask & 0x1FFF:
        builder.set("vlan_vid", tci & 0x1FFF, mask & 0x1FFF, token)
    if pcp_mask:
        builder.set("vlan_pcp", pcp, 7, token)


def _vlan_pcp(builder: _MatchBuilder, token: _Token) -> None:
    pcp = _int(_needs_value(token), token.key, token.value_column, 7)
    builder.set("vlan_pcp", pcp, 7, token)


# Handlers run in phases so that order in the text does not matter: first what fixes eth_type,
# then ip_proto (whose meaning depends on eth_type), then the rest (which may depend on both).
_MATCH_FIELDS: dict[str, tuple[int, _MatchHandler]] = {
    "ip": (0, _shorthand(ETH_TYPE_IPV4, None)),
    "ipv6": (0, _shorthand(ETH_TYPE_IPV6, None)),
    "arp": (0, _shorthand(ETH_TYPE_ARP, None)),
    "icmp": (0, _shorthand(ETH_TYPE_IPV4, IP_PROTO_ICMP)),
    "icmp6": (0, _shorthand(ETH_TYPE_IPV6, IP_PROTO_ICMPV6)),
    "tcp": (0, _shorthand(ETH_TYPE_IPV4, IP_PROTO_TCP)),
    "tcp6": (0, _shorthand(ETH_TYPE_IPV6, IP_PROTO_TCP)),
    "udp": (0, _shorthand(ETH_TYPE_IPV4, IP_PROTO_UDP)),
    "udp6": (0, _shorthand(ETH_TYPE_IPV6, IP_PROTO_UDP)),
    "sctp": (0, _shorthand(ETH_TYPE_IPV4, IP_PROTO_SCTP)),
    "sctp6": (0, _shorthand(ETH_TYPE_IPV6, IP_PROTO_SCTP)),
    "dl_type": (0, _direct("eth_type")),
    "eth_type": (0, _direct("eth_type")),
    "nw_proto": (1, _nw_proto),
    "ip_proto": (1, _direct("ip_proto")),
    "in_port": (2, _direct("in_port")),
    "dl_src": (2, _direct("eth_src")),
    "dl_dst": (2, _direct("eth_dst")),
    "dl_vlan": (2, _dl_vlan),
    "dl_vlan_pcp": (2, _vlan_pcp),
    "vlan_pcp": (2, _vlan_pcp),
    "vlan_tci": (2, _vlan_tci),
    "nw_src": (2, _nw_addr("ipv4_src", "arp_spa")),
    "nw_dst": (2, _nw_addr("ipv4_dst", "arp_tpa")),
    "ip_src": (2, _direct("ipv4_src")),
    "ip_dst": (2, _direct("ipv4_dst")),
    "nw_tos": (2, _nw_tos),
    "nw_ecn": (2, _direct("ip_ecn")),
    "tp_src": (2, _tp("src")),
    "tp_dst": (2, _tp("dst")),
    "icmp_type": (2, _icmp("type")),
    "icmp_code": (2, _icmp("code")),
    "ipv6_label": (2, _direct("ipv6_flabel")),
}
# Every OXM name is accepted as itself (vlan_pcp is already above).
_MATCH_FIELDS |= {name: (2, _direct(name)) for name in FIELDS if name not in _MATCH_FIELDS}

_RULE_KEYS = frozenset({"priority", "idle_timeout", "hard_timeout", "table", "cookie"})


def _unknown(kind: str, word: str, known: list[str], ovs_known: bool) -> str:
    if ovs_known:
        return f"unsupported {kind} '{word}' (the proxy does not handle it)"
    close = difflib.get_close_matches(word, known, n=1)
    return f"unknown {kind} '{word}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def _build_match(tokens: list[_Token]) -> tuple[dict[str, tuple[int, int]], dict[str, _Token]]:
    builder = _MatchBuilder()
    for token in tokens:
        if not token.key:
            raise FlowSyntaxError("missing field name", column=token.column)
        if token.key not in _MATCH_FIELDS:
            known = sorted(_MATCH_FIELDS) + sorted(_RULE_KEYS)
            raise FlowSyntaxError(
                _unknown("field", token.key, known, token.key in _OVS_FIELDS), column=token.column
            )
    for phase in range(3):
        for token in tokens:
            handler_phase, handler = _MATCH_FIELDS[token.key]
            if handler_phase == phase:
                handler(builder, token)
    # Matching the PCP implies a tag, as it does for ovs-ofctl's dl_vlan_pcp.
    if "vlan_pcp" in builder.fields:
        value, mask = builder.fields.get("vlan_vid", (0, 0))
        if not mask & VLAN_PRESENT:
            builder.fields["vlan_vid"] = (value | VLAN_PRESENT, mask | VLAN_PRESENT)
            builder.origin.setdefault("vlan_vid", builder.origin["vlan_pcp"])
    for name, (_, mask) in sorted(builder.fields.items(), key=lambda kv: builder.origin[kv[0]].column):
        if not mask:
            continue
        missing = _unmet(builder.fields, name)
        if missing is not None:
            token = builder.origin[name]
            raise FlowSyntaxError(f"{token.key} requires {missing}", column=token.column)
    return builder.fields, builder.origin


# --------------------------------------------------------------------------------------------
# Actions


class _ActionContext:
    """What the actions may rely on: the match, updated by the actions before them."""

    def __init__(self, fields: dict[str, tuple[int, int]]) -> None:
        self.fields = dict(fields)
        self.actions: list[Action] = []

    def add(self, action: Action) -> None:
        self.actions.append(action)
        if isinstance(action, SetField):
            self.fields[action.field] = (action.value, FIELDS[action.field].full_mask)
        elif isinstance(action, PushVlan):
            self.fields["vlan_vid"] = (VLAN_PRESENT, VLAN_PRESENT)
        elif isinstance(action, PopVlan):
            self.fields["vlan_vid"] = (0, 0x1FFF)
            self.fields.pop("vlan_pcp", None)

    def set_field(self, field: str, value: int, token: _Token) -> None:
        if field in _READ_ONLY:
            raise FlowSyntaxError(f"{token.key}: {field} cannot be written", column=token.column)
        if field == "vlan_vid":
            value = VLAN_PRESENT | (value & 0xFFF)
        else:
            # VLAN presence is not checked: like ovs-ofctl's mod_vlan_pcp, setting the PCP is
            # left to the encoder to honour on untagged packets.
            missing = _unmet(self.fields, field) if field != "vlan_pcp" else None
            if missing is not None:
                what = f"set_field to {field}" if token.key.lower() == "set_field" else token.key
                raise FlowSyntaxError(
                    f"{what} requires {missing} in the match", column=token.column
                )
        self.add(SetField(field, value))


_ActionHandler = Callable[[_ActionContext, _Token], None]


def _action_value(token: _Token) -> str:
    return _needs_value(token, "an argument", ":")


def _no_argument(token: _Token) -> None:
    if token.value is not None:
        raise FlowSyntaxError(f"{token.key} takes no argument", column=token.column)


def _output(context: _ActionContext, token: _Token) -> None:
    port = _port(_action_value(token), token.key, token.value_column, _OUTPUT_PORT_NAMES)
    context.add(Output(port))


def _reserved_output(port: int) -> _ActionHandler:
    def handle(context: _ActionContext, token: _Token) -> None:
        _no_argument(token)
        context.add(Output(port))

    return handle


def _controller(context: _ActionContext, token: _Token) -> None:
    max_len = 0xFFFF
    if token.value:
        options = token.value
        if token.delim == "(":
            key, equals, options = token.value.partition("=")
            if key != "max_len" or not equals:
                raise FlowSyntaxError(
                    f"{token.key}: only controller(max_len=N) is supported, not {token.value!r}",
                    column=token.value_column,
                )
        max_len = _int(options, f"{token.key} max_len", token.value_column, 0xFFFF)
    context.add(Output(OFPP_CONTROLLER, max_len))


def _field_setter(field: str) -> _ActionHandler:
    def handle(context: _ActionContext, token: _Token) -> None:
        value = _field_value(field, _action_value(token), token.key, token.value_column)
        context.set_field(field, value, token)

    return handle


def _mod_vlan_vid(context: _ActionContext, token: _Token) -> None:
    vid = _int(_action_value(token), token.key, token.value_column, 0xFFF)
    context.set_field("vlan_vid", vid, token)


def _mod_nw_tos(context: _ActionContext, token: _Token) -> None:
    text = _action_value(token)
    tos = _int(text, token.key, token.value_column, 0xFF)
    if tos & 3:
        raise FlowSyntaxError(
            f"{token.key}: {text} is not a multiple of 4 (the low two bits are ECN)",
            column=token.value_column,
        )
    context.set_field("ip_dscp", tos >> 2, token)


def _mod_tp(suffix: str) -> _ActionHandler:
    def handle(context: _ActionContext, token: _Token) -> None:
        field = _l4_field(context.fields, token, suffix)
        _field_setter(field)(context, token)

    return handle


def _pop_vlan(context: _ActionContext, token: _Token) -> None:
    _no_argument(token)
    context.add(PopVlan())


def _push_vlan(context: _ActionContext, token: _Token) -> None:
    text = _action_value(token)
    ethertype = _int(text, token.key, token.value_column, 0xFFFF)
    if ethertype not in (0x8100, 0x88A8):
        raise FlowSyntaxError(
            f"{token.key}: ethertype {text} is not 0x8100 or 0x88a8", column=token.value_column
        )
    context.add(PushVlan(ethertype))


def _set_queue(context: _ActionContext, token: _Token) -> None:
    context.add(SetQueue(_int(_action_value(token), token.key, token.value_column, 0xFFFFFFFF)))


# set_field destinations by ovs-ofctl name, when that differs from the OXM name.
_SET_FIELD_ALIASES = {
    "dl_src": "eth_src",
    "dl_dst": "eth_dst",
    "nw_src": "ipv4_src",
    "ip_src": "ipv4_src",
    "nw_dst": "ipv4_dst",
    "ip_dst": "ipv4_dst",
    "nw_proto": "ip_proto",
    "nw_ecn": "ip_ecn",
    "ipv6_label": "ipv6_flabel",
    "dl_vlan": "vlan_vid",
    "dl_vlan_pcp": "vlan_pcp",
}


def _set_field(context: _ActionContext, token: _Token) -> None:
    text = _action_value(token)
    value_text, arrow, name = text.rpartition("->")
    if not arrow or not value_text or not name:
        raise FlowSyntaxError(f"{token.key} takes {token.key}:VALUE->FIELD", column=token.column)
    what = f"{token.key} to {name}"
    if "/" in value_text:
        raise FlowSyntaxError(f"{what}: masked set_field is not supported", column=token.value_column)
    if name in ("tp_src", "tp_dst"):
        field = _l4_field(context.fields, token, name[3:], what)
    elif name in ("icmp_type", "icmp_code"):
        v6 = _pinned(context.fields, "eth_type") == ETH_TYPE_IPV6
        field = f"icmpv6_{name[5:]}" if v6 else f"icmpv4_{name[5:]}"
    elif name == "nw_tos":
        tos = _int(value_text, what, token.value_column, 0xFF)
        if tos & 3:
            raise FlowSyntaxError(f"{what}: {value_text} is not a multiple of 4", column=token.value_column)
        context.set_field("ip_dscp", tos >> 2, token)
        return
    else:
        field = _SET_FIELD_ALIASES.get(name, name)
    if field not in FIELDS:
        known = sorted(FIELDS) + sorted(_SET_FIELD_ALIASES)
        problem = _unknown("field", name, known, name in _OVS_FIELDS)
        raise FlowSyntaxError(f"{token.key}: {problem}", column=token.value_column + len(value_text) + 2)
    context.set_field(field, _field_value(field, value_text, what, token.value_column), token)


_ACTIONS: dict[str, _ActionHandler] = {
    "output": _output,
    "controller": _controller,
    "normal": _reserved_output(OFPP_NORMAL),
    "flood": _reserved_output(OFPP_FLOOD),
    "all": _reserved_output(OFPP_ALL),
    "local": _reserved_output(OFPP_LOCAL),
    "in_port": _reserved_output(OFPP_IN_PORT),
    "mod_vlan_vid": _mod_vlan_vid,
    "set_vlan_vid": _mod_vlan_vid,
    "mod_vlan_pcp": _field_setter("vlan_pcp"),
    "set_vlan_pcp": _field_setter("vlan_pcp"),
    "strip_vlan": _pop_vlan,
    "pop_vlan": _pop_vlan,
    "push_vlan": _push_vlan,
    "set_field": _set_field,
    "mod_dl_src": _field_setter("eth_src"),
    "mod_dl_dst": _field_setter("eth_dst"),
    "mod_nw_src": _field_setter("ipv4_src"),
    "mod_nw_dst": _field_setter("ipv4_dst"),
    "mod_nw_tos": _mod_nw_tos,
    "mod_nw_ecn": _field_setter("ip_ecn"),
    "mod_tp_src": _mod_tp("src"),
    "mod_tp_dst": _mod_tp("dst"),
    "set_queue": _set_queue,
}
# Actions ovs-ofctl knows that the proxy does not implement: named as unsupported, not unknown.
_OVS_ONLY_ACTIONS = frozenset({
    "enqueue", "bundle", "bundle_load", "group", "pop_mpls", "push_mpls", "decap", "encap",
    "load", "move", "mod_nw_ttl", "dec_ttl", "dec_mpls_ttl", "dec_nsh_ttl", "set_mpls_label",
    "set_mpls_tc", "set_mpls_ttl", "delete_field", "check_pkt_larger", "set_tunnel",
    "set_tunnel64", "pop_queue", "ct", "ct_clear", "fin_timeout", "resubmit", "push", "pop",
    "exit", "multipath", "learn", "clone", "write_actions", "conjunction", "note", "sample",
    "meter", "clear_actions", "write_metadata", "goto_table", "table", "nat",
})


def _build_actions(tokens: list[_Token], fields: dict[str, tuple[int, int]]) -> tuple[Action, ...]:
    context = _ActionContext(fields)
    drops = [t for t in tokens if t.key.lower() == "drop"]
    if drops:
        if len(tokens) > 1:
            raise FlowSyntaxError("drop must be the only action", column=drops[0].column)
        _no_argument(drops[0])
        return ()
    for token in tokens:
        name = token.key.lower()
        handler = _ACTIONS.get(name)
        if handler is not None:
            handler(context, token)
        elif token.value is None and _INT_RE.fullmatch(token.key):
            context.add(Output(_port(token.key, "output", token.column, _OUTPUT_PORT_NAMES)))
        else:
            known = sorted(_ACTIONS) + ["drop"]
            problem = _unknown("action", token.key, known, name in _OVS_ONLY_ACTIONS)
            raise FlowSyntaxError(problem, column=token.column)
    return tuple(context.actions)


# --------------------------------------------------------------------------------------------
# Public API


def _rule_int(token: _Token, limit: int) -> int:
    return _int(_needs_value(token), token.key, token.value_column, limit)


def parse_flow(text: str, *, bridge: str | None = None, origin: str = "config") -> FlowRule:
    """A rule from ovs-ofctl add-flow text, e.g. `priority=100,in_port=1,udp actions=output:2`."""
    head, actions_text, actions_offset = _split(text)
    if actions_text is None:
        raise FlowSyntaxError("flow has no actions= (use actions=drop to drop)")
    tokens = _tokenize(head, 0)
    priority, idle_timeout, hard_timeout = DEFAULT_PRIORITY, 0, 0
    match_tokens = []
    for token in tokens:
        if token.key == "priority":
            priority = _rule_int(token, 0xFFFF)
        elif token.key == "idle_timeout":
            idle_timeout = _rule_int(token, 0xFFFF)
        elif token.key == "hard_timeout":
            hard_timeout = _rule_int(token, 0xFFFF)
        elif token.key == "table":
            if _rule_int(token, 0xFF) != 0:
                raise FlowSyntaxError(
                    "table: the proxy only answers from table 0", column=token.column
                )
        elif token.key == "cookie":
            raise FlowSyntaxError("cookie: the proxy assigns cookies", column=token.column)
        else:
            match_tokens.append(token)
    fields, _ = _build_match(match_tokens)
    actions = _build_actions(_tokenize(actions_text, actions_offset), fields)
    return FlowRule(
        match=Match.from_fields(fields),
        actions=actions,
        priority=priority,
        idle_timeout=idle_timeout,
        hard_timeout=hard_timeout,
        bridge=bridge,
        origin=origin,
        text=text.strip(),
    )


def parse_match(text: str) -> Match:
    """A match alone, e.g. `udp,tp_dst=5060`: no priority, timeouts or actions."""
    head, actions_text, actions_offset = _split(text)
    if actions_text is not None:
        raise FlowSyntaxError("a match takes no actions", column=actions_offset - len("actions=") + 1)
    tokens = _tokenize(head, 0)
    for token in tokens:
        if token.key in _RULE_KEYS:
            raise FlowSyntaxError(f"{token.key} is not a match field", column=token.column)
    fields, _ = _build_match(tokens)
    return Match.from_fields(fields)


# --------------------------------------------------------------------------------------------
# Formatting


def _format_int(value: int, mask: int, full: int) -> str:
    return str(value) if mask == full else f"0x{value:x}/0x{mask:x}"


def _format_mac(value: int) -> str:
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def _format_field(field: str, value: int, mask: int | None = None) -> str:
    """VALUE or VALUE/MASK for `field`; mask None means an unmasked value (set_field)."""
    full = FIELDS[field].full_mask
    if mask is None:
        mask = full
    if field in _MAC_FIELDS:
        return _format_mac(value) + ("" if mask == full else f"/{_format_mac(mask)}")
    if field in _IPV4_FIELDS or field in _IPV6_FIELDS:
        bits = 32 if field in _IPV4_FIELDS else 128
        kind = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
        address = str(kind(value))
        if mask == full:
            return address
        prefix = bits - (full ^ mask).bit_length()
        if mask == full ^ ((1 << (bits - prefix)) - 1):
            return f"{address}/{prefix}"
        return f"{address}/{kind(mask)}"
    if field == "in_port":
        names = {OFPP_LOCAL: "LOCAL", OFPP_CONTROLLER: "CONTROLLER"}
        return names.get(value, str(value))
    return _format_int(value, mask, full)


_SHORTHANDS: dict[tuple[int | None, int | None], str] = {
    (ETH_TYPE_IPV4, None): "ip",
    (ETH_TYPE_IPV6, None): "ipv6",
    (ETH_TYPE_ARP, None): "arp",
    (ETH_TYPE_IPV4, IP_PROTO_ICMP): "icmp",
    (ETH_TYPE_IPV6, IP_PROTO_ICMPV6): "icmp6",
    (ETH_TYPE_IPV4, IP_PROTO_TCP): "tcp",
    (ETH_TYPE_IPV6, IP_PROTO_TCP): "tcp6",
    (ETH_TYPE_IPV4, IP_PROTO_UDP): "udp",
    (ETH_TYPE_IPV6, IP_PROTO_UDP): "udp6",
    (ETH_TYPE_IPV4, IP_PROTO_SCTP): "sctp",
    (ETH_TYPE_IPV6, IP_PROTO_SCTP): "sctp6",
}
# ovs-ofctl names for OXM fields, where they differ; the L4 and ICMP ones depend on the protocol.
_MATCH_NAMES = {
    "eth_src": "dl_src",
    "eth_dst": "dl_dst",
    "ipv4_src": "nw_src",
    "ipv4_dst": "nw_dst",
    "ip_ecn": "nw_ecn",
    "ipv6_flabel": "ipv6_label",
    "icmpv4_type": "icmp_type",
    "icmpv4_code": "icmp_code",
}


def _format_protocol(fields: dict[str, tuple[int, int]]) -> list[str]:
    eth_type, ip_proto = _pinned(fields, "eth_type"), _pinned(fields, "ip_proto")
    out: list[str] = []
    if (eth_type, ip_proto) in _SHORTHANDS:
        return [_SHORTHANDS[(eth_type, ip_proto)]]
    if eth_type is not None and (eth_type, None) in _SHORTHANDS:
        out.append(_SHORTHANDS[(eth_type, None)])
    elif "eth_type" in fields:
        value, mask = fields["eth_type"]
        out.append(f"dl_type=0x{value:04x}" + ("" if mask == 0xFFFF else f"/0x{mask:04x}"))
    if "ip_proto" in fields:
        out.append("nw_proto=" + _format_int(*fields["ip_proto"], 0xFF))
    return out


def _format_vlan(fields: dict[str, tuple[int, int]]) -> list[str]:
    vid, vid_mask = fields.get("vlan_vid", (0, 0))
    pcp, pcp_mask = fields.get("vlan_pcp", (0, 0))
    if not vid_mask and not pcp_mask:
        return []
    if vid_mask == 0x1FFF and vid & VLAN_PRESENT and pcp_mask in (0, 7):
        out = [f"dl_vlan={vid & 0xFFF}"]
        return out + ([f"dl_vlan_pcp={pcp}"] if pcp_mask else [])
    if vid_mask == 0x1FFF and vid == 0 and not pcp_mask:
        return ["vlan_tci=0x0000"]
    tci, tci_mask = (pcp << 13) | vid, (pcp_mask << 13) | vid_mask
    return [f"vlan_tci=0x{tci:04x}/0x{tci_mask:04x}"]


def format_match(match: Match) -> str:
    """ovs-ofctl text for a match, which parse_match reads back to an equal match."""
    fields = match.fields()
    out = []
    if "in_port" in fields:
        out.append(f"in_port={_format_field('in_port', *fields['in_port'])}")
    out += _format_protocol(fields) + _format_vlan(fields)
    proto = _pinned(fields, "ip_proto")
    v6 = _pinned(fields, "eth_type") == ETH_TYPE_IPV6
    for name, (value, mask) in fields.items():
        if name in ("in_port", "eth_type", "ip_proto", "vlan_vid", "vlan_pcp"):
            continue
        label = _MATCH_NAMES.get(name, name)
        if name.endswith(("_src", "_dst")) and name.split("_")[0] in ("tcp", "udp", "sctp"):
            if proto is not None and _L4_BY_PROTO.get(proto) == name.split("_")[0]:
                label = "tp_" + name.split("_")[1]
        elif name.startswith("icmpv6_") and v6:
            label = "icmp_" + name[len("icmpv6_") :]
        out.append(f"{label}={_format_field(name, value, mask)}")
    return ",".join(out)


_OUTPUT_NAMES = {
    OFPP_IN_PORT: "IN_PORT",
    OFPP_NORMAL: "NORMAL",
    OFPP_FLOOD: "FLOOD",
    OFPP_ALL: "ALL",
    OFPP_LOCAL: "LOCAL",
}
# Set-field actions with an ovs-ofctl spelling of their own.
_SETTERS = {
    "eth_src": "mod_dl_src",
    "eth_dst": "mod_dl_dst",
    "ipv4_src": "mod_nw_src",
    "ipv4_dst": "mod_nw_dst",
    "vlan_pcp": "mod_vlan_pcp",
    "ip_ecn": "mod_nw_ecn",
}

_SET_FIELD_NAMES = {"icmpv4_type": "icmp_type", "icmpv4_code": "icmp_code", "ipv6_flabel": "ipv6_label"}


def _format_action(action: Action) -> str:
    if isinstance(action, Output):
        if action.port == OFPP_CONTROLLER:
            # max_len only means something for the controller port (OpenFlow 1.3, 7.2.5).
            return "CONTROLLER" if action.max_len == 0xFFFF else f"CONTROLLER:{action.max_len}"
        name = _OUTPUT_NAMES.get(action.port)
        return name if name is not None else f"output:{action.port}"
    if isinstance(action, SetField):
        if action.field == "vlan_vid":
            return f"mod_vlan_vid:{action.value & 0xFFF}"
        if action.field == "ip_dscp":
            return f"mod_nw_tos:{action.value << 2}"
        setter = _SETTERS.get(action.field)
        if setter is not None:
            return f"{setter}:{_format_field(action.field, action.value)}"
        name = _SET_FIELD_NAMES.get(action.field, action.field)
        return f"set_field:{_format_field(action.field, action.value)}->{name}"
    if isinstance(action, PushVlan):
        return f"push_vlan:0x{action.ethertype:04x}"
    if isinstance(action, PopVlan):
        return "pop_vlan"
    return f"set_queue:{action.queue_id}"


def format_actions(actions: tuple[Action, ...]) -> str:
    return ",".join(_format_action(a) for a in actions) if actions else "drop"


def format_flow(rule: FlowRule) -> str:
    """ovs-ofctl text for a rule; parse_flow(format_flow(r), bridge=r.bridge, origin=r.origin) == r.

    The bridge and origin are not part of the flow syntax.
    """
    head = [f"priority={rule.priority}"]
    if rule.idle_timeout:
        head.append(f"idle_timeout={rule.idle_timeout}")
    if rule.hard_timeout:
        head.append(f"hard_timeout={rule.hard_timeout}")
    match = format_match(rule.match)
    if match:
        head.append(match)
    return f"{','.join(head)} actions={format_actions(rule.actions)}"
