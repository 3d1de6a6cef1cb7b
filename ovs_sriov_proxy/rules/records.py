"""Rules as stored outside the process: compact columns for the backup, JSON lines for export.

The backup needs speed (a million rules restored in seconds), so a match is its two packed
integers as bytes and an action list a short JSON text whose parse is memoized (rules learned
from one controller share a handful of action lists). Export needs portability between hosts
and versions of the proxy, so a rule is written in ovs-ofctl syntax (`format_flow`), which
`parse_flow` reads back to the same rule.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any, NamedTuple

from .flowparse import FlowSyntaxError, format_flow, parse_flow
from .model import Action, FlowRule, Match, Output, PopVlan, PushVlan, SetField, SetQueue
from .store import RuleMeta, cookie_for

EXPORT_FORMAT = 1  # the "format" of every exported line; readers refuse newer ones


class RecordError(ValueError):
    """A stored or imported rule that cannot be read back; str() says why."""


class RuleRecord(NamedTuple):  # a tuple for the same reason as RuleMeta
    rule_id: int
    rule: FlowRule
    meta: RuleMeta


# ---- columns of the backup ----

def int_to_blob(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def blob_to_int(blob: bytes) -> int:
    return int.from_bytes(blob, "big")


_ACTION_TEXTS: dict[tuple[Action, ...], str] = {}  # learned rules share a few action lists


def actions_to_text(actions: tuple[Action, ...]) -> str:
    text = _ACTION_TEXTS.get(actions)
    if text is None:
        if len(_ACTION_TEXTS) >= 4096:
            _ACTION_TEXTS.clear()
        text = _ACTION_TEXTS[actions] = _actions_to_text(actions)
    return text


def _actions_to_text(actions: tuple[Action, ...]) -> str:
    items: list[list[Any]] = []
    for action in actions:
        if isinstance(action, Output):
            items.append(["output", action.port, action.max_len])
        elif isinstance(action, SetField):
            items.append(["set_field", action.field, action.value])
        elif isinstance(action, PushVlan):
            items.append(["push_vlan", action.ethertype])
        elif isinstance(action, PopVlan):
            items.append(["pop_vlan"])
        elif isinstance(action, SetQueue):
            items.append(["set_queue", action.queue_id])
        else:  # pragma: no cover - the Action union is closed
            raise TypeError(f"unknown action {action!r}")
    return json.dumps(items, separators=(",", ":"))


@lru_cache(maxsize=4096)
def actions_from_text(text: str) -> tuple[Action, ...]:
    try:
        items = json.loads(text)
        actions: list[Action] = []
        for item in items:
            kind, args = item[0], item[1:]
            if kind == "output":
                actions.append(Output(int(args[0]), int(args[1])))
            elif kind == "set_field":
                actions.append(SetField(str(args[0]), int(args[1])))
            elif kind == "push_vlan":
                actions.append(PushVlan(int(args[0])))
            elif kind == "pop_vlan":
                actions.append(PopVlan())
            elif kind == "set_queue":
                actions.append(SetQueue(int(args[0])))
            else:
                raise RecordError(f"unknown action kind {kind!r}")
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise RecordError(f"bad action list {text[:80]!r}: {exc}") from None
    return tuple(actions)


def record_row(record: RuleRecord) -> tuple[Any, ...]:
    """The backup's row for a rule, in the order of backup.COLUMNS."""
    rule, meta = record.rule, record.meta
    return (record.rule_id, rule.origin, rule.bridge, rule.priority, rule.idle_timeout,
            rule.hard_timeout, cookie_for(record.rule_id), int_to_blob(rule.match.value),
            int_to_blob(rule.match.mask), actions_to_text(rule.actions), rule.text,
            meta.inserted_at, meta.expires_at)


def record_from_row(row: tuple[Any, ...]) -> RuleRecord:
    """The record of a full row (record_row's layout, cookie included)."""
    return decode_rows([row[:6] + row[7:]])[0]


_new = object.__new__
# Setting the slots directly skips the frozen dataclasses' __init__, a third of a restore's time.
_set_value, _set_mask = Match.value.__set__, Match.mask.__set__  # type: ignore[attr-defined,misc]
_RULE_SLOTS = tuple(getattr(FlowRule, name).__set__ for name in (  # type: ignore[attr-defined]
    "match", "actions", "priority", "idle_timeout", "hard_timeout", "bridge", "origin", "text"))


DECODE_CACHE_LIMIT = 50_000  # distinct action lists (and masks) remembered during one restore


class DecodeCache:
    """Shared by every chunk of one restore: each distinct origin, bridge and text becomes one
    string object, and each distinct action list's text is parsed once into one tuple. A
    hypervisor's rules repeat a few action lists, and parsing each rule's JSON again was a third
    of a restore. Actions are immutable, so rules may share them."""

    __slots__ = ("strings", "actions", "masks")

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.actions: dict[str, tuple[Action, ...]] = {}
        self.masks: dict[bytes, int] = {}  # few distinct masks; each a ~100-byte int


def decode_rows(rows: list[tuple[Any, ...]], cache: DecodeCache | None = None) -> list[RuleRecord]:
    """Records from backup rows as a restore reads them (backup._SELECT: every column but the
    cookie). The hot loop of a restore, where every microsecond per rule counts."""
    from_bytes = int.from_bytes
    new_tuple = tuple.__new__
    cache = cache or DecodeCache()
    intern = cache.strings.setdefault
    parsed = cache.actions
    known = parsed.get
    masks = cache.masks
    known_mask = masks.get
    set_match, set_actions, set_priority, set_idle, set_hard, set_bridge, set_origin, set_text = (
        _RULE_SLOTS)
    records = []
    for (rule_id, origin, bridge, priority, idle_timeout, hard_timeout, value, mask, actions,
         text, inserted_at, expires_at) in rows:
        match = _new(Match)
        value = from_bytes(value, "big")
        mask_bytes = mask
        mask = known_mask(mask_bytes)
        if mask is None:
            mask = from_bytes(mask_bytes, "big")
            if len(masks) < DECODE_CACHE_LIMIT:
                masks[mask_bytes] = mask
        if value & mask != value:
            raise RecordError(f"rule {rule_id}: match value has bits outside its mask")
        _set_value(match, value)
        _set_mask(match, mask)
        rule = _new(FlowRule)
        set_match(rule, match)
        decoded = known(actions)
        if decoded is None:
            decoded = actions_from_text(actions)
            if len(parsed) < DECODE_CACHE_LIMIT:  # rules that each have their own actions
                parsed[actions] = decoded         # would only double the memory held
        set_actions(rule, decoded)
        set_priority(rule, priority)
        set_idle(rule, idle_timeout)
        set_hard(rule, hard_timeout)
        set_bridge(rule, bridge if bridge is None else intern(bridge, bridge))
        set_origin(rule, intern(origin, origin))
        set_text(rule, intern(text, text))
        # tuple.__new__ skips the NamedTuples' Python-level __new__ (same objects).
        records.append(new_tuple(RuleRecord, (rule_id, rule,
                                              new_tuple(RuleMeta, (inserted_at, expires_at)))))
    return records


# ---- JSON lines, for export and import ----

def to_json_line(record: RuleRecord) -> str:
    rule, meta = record.rule, record.meta
    document = {
        "format": EXPORT_FORMAT,
        "id": record.rule_id,
        "origin": rule.origin,
        "bridge": rule.bridge,
        "flow": format_flow(rule),
        "cookie": f"{cookie_for(record.rule_id):#x}",
        "inserted_at": meta.inserted_at,
        "expires_at": meta.expires_at,
    }
    return json.dumps(document, separators=(",", ":"))


def from_json_line(line: str) -> RuleRecord:
    """A record from one exported line; its id is the exporting host's (importers assign new ones)."""
    try:
        document = json.loads(line)
    except ValueError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RecordError("not a JSON object")
    version = document.get("format")
    if version != EXPORT_FORMAT:
        raise RecordError(f"format {version!r} is not {EXPORT_FORMAT} (written by another version?)")
    flow, origin, bridge = document.get("flow"), document.get("origin"), document.get("bridge")
    if not isinstance(flow, str) or not isinstance(origin, str) or not origin:
        raise RecordError('"flow" and "origin" must be strings')
    if bridge is not None and (not isinstance(bridge, str) or not bridge):
        raise RecordError('"bridge" must be a bridge name or null')
    try:
        rule = parse_flow(flow, bridge=bridge, origin=origin)
    except FlowSyntaxError as exc:
        raise RecordError(f"bad flow {flow!r}: {exc}") from None
    inserted_at = _time(document, "inserted_at", required=True)
    assert inserted_at is not None
    rule_id = document.get("id")
    return RuleRecord(rule_id if isinstance(rule_id, int) else 0, rule,
                      RuleMeta(inserted_at, _time(document, "expires_at", required=False)))


def _time(document: dict[str, Any], key: str, *, required: bool) -> float | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f'"{key}" must be a number of seconds since the epoch')
    return float(value)
