"""Group and meter ids per controller on a bridge that several controllers program.

Every controller numbers its groups and meters as if it were alone, so two controllers both
using group 1 would overwrite each other's group, and one controller's "delete all groups"
(Faucet sends it on connect) would wipe the other's. So, like priorities (bands.py), ids are
split: controller k of N (config order) gets its own slice of the bridge's ids, and its id i is
installed as `slice.low + i`. Groups split OpenFlow's whole range (0..OFPG_MAX); meters split
1..max_meter as the bridge's METER_FEATURES reports it (OVS refuses meter ids above it). A
controller's id that does not fit its slice is refused with the error a bridge with that
many ids would give. With one controller nothing is remapped.

The proxy keeps, per bridge, which of the bridge's groups and meters fall in each controller's
slice: those it relayed adds of, plus those already on the bridge when the proxy connected
(`seed`, from a GROUP_DESC and METER_CONFIG dump, since a restarted proxy finds the groups a
controller made before). A controller's delete-all then becomes one delete per id it owns.

Stats replies show a controller only its own groups and meters, with its own ids; its flows'
group and meter references are mapped both ways. Special ids (OFPG_ANY/ALL, OFPM_ALL) pass
unchanged in filters and flows; the reserved meters (OFPM_CONTROLLER/SLOWPATH), one per bridge,
cannot be changed by one of several controllers. OpenFlow 1.0 has neither groups nor meters;
1.5's group layouts (bucket ids, watch_group as a bucket property) are mapped like 1.3's.

Pure logic on raw message bytes, which the caller has already checked well-formed
(openflow/wellformed.py); no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .openflow import actions

OFP13, OFP15 = 0x04, 0x06
OFPT_PACKET_OUT, OFPT_FLOW_MOD, OFPT_GROUP_MOD = 13, 14, 15
OFPT_MULTIPART_REQUEST, OFPT_MULTIPART_REPLY, OFPT_METER_MOD = 18, 19, 29
OFPMP_FLOW, OFPMP_AGGREGATE, OFPMP_GROUP, OFPMP_GROUP_DESC = 1, 2, 6, 7
OFPMP_METER, OFPMP_METER_CONFIG, OFPMP_METER_FEATURES = 9, 10, 11
OFPMP15_FLOW_STATS = 17  # 1.5: type 1 became FLOW_DESC, with instructions; 17 has none
OFPGC_ADD, OFPGC_DELETE = 0, 2
OFPGC_ADD_OR_MOD = 0x8000  # OVS's extension to 1.1-1.4
OFPMC_ADD, OFPMC_DELETE = 0, 2
OFPG_MAX, OFPG_ALL, OFPG_ANY = 0xFFFFFF00, 0xFFFFFFFC, 0xFFFFFFFF
OFPM_MAX = 0xFFFF0000  # above it: OFPM_SLOWPATH, OFPM_CONTROLLER, OFPM_ALL
OFPM_ALL = 0xFFFFFFFF
OFPIT_METER = 6
OFPAT_GROUP, OFPAT15_METER = 22, 29
OFPET_BAD_REQUEST, OFPBRC_BAD_LEN = 1, 6
OFPET_BAD_ACTION, OFPBAC_BAD_OUT_GROUP = 2, 9
OFPFC_DELETE, OFPFC_DELETE_STRICT = 3, 4
OFPET_GROUP_MOD_FAILED, OFPGMFC_INVALID_GROUP = 6, 1
OFPET_METER_MOD_FAILED, OFPMMFC_INVALID_METER, OFPMMFC_UNKNOWN_METER = 12, 2, 3
OFPMMFC_OUT_OF_METERS = 10
OFPGMFC_GROUP_EXISTS, OFPMMFC_METER_EXISTS = 0, 1

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class IdRefused(Exception):
    """A controller's message names an id outside its slice (or a layout not remapped): the
    OpenFlow error to answer it with."""

    def __init__(self, err_type: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.err_type = err_type
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IdSlice:
    """Bridge ids low+first .. low+last for a controller's ids first..last."""

    low: int
    first: int
    last: int

    def to_bridge(self, ident: int) -> int | None:
        if self.first <= ident <= self.last:
            return self.low + ident
        return None

    def from_bridge(self, ident: int) -> int | None:
        if self.first <= ident - self.low <= self.last:
            return ident - self.low
        return None

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def group_slices(count: int) -> list[IdSlice]:
    """OpenFlow's group ids 0..OFPG_MAX - 1 split into `count` slices (OFPG_MAX itself stays
    in nobody's, see _map_out_group); one controller: all of it."""
    width = OFPG_MAX // max(count, 1)
    return [IdSlice(k * width, 0, width - 1) for k in range(count)]


def meter_slices(count: int, max_meter: int) -> list[IdSlice]:
    """Meter ids 1..max_meter split into `count` slices (a controller's meter 1 is the first of
    its slice); one controller: every id, the bridge judges."""
    if count <= 1:
        return [IdSlice(0, 1, OFPM_MAX)] * count
    width = max_meter // count
    return [IdSlice(k * width, 1, width) for k in range(count)]


@dataclass(slots=True)
class ControllerIds:
    """One controller's slices on one bridge, and the bridge ids it owns there."""

    groups: IdSlice
    meters: IdSlice
    owned_groups: set[int] = field(default_factory=set)
    owned_meters: set[int] = field(default_factory=set)


class BridgeIds:
    """Group and meter ids of every controller on one bridge (see the module docstring)."""

    def __init__(self, controllers: Sequence[str], max_meter: int = 0) -> None:
        self.shared = len(controllers) > 1  # False: nothing is remapped or tracked
        self.names = list(controllers)
        self.by_name: dict[str, ControllerIds] = {}
        self.set_max_meter(max_meter)

    def set_max_meter(self, max_meter: int) -> None:
        """The bridge's METER_FEATURES max_meter: the meter slices follow it."""
        groups = group_slices(len(self.names))
        meters = meter_slices(len(self.names), max_meter)
        for name, group_slice, meter_slice in zip(self.names, groups, meters, strict=True):
            old = self.by_name.get(name)
            ids = ControllerIds(group_slice, meter_slice)
            if old is not None:
                ids.owned_groups, ids.owned_meters = old.owned_groups, old.owned_meters
            self.by_name[name] = ids

    def seed(self, groups: Sequence[int] = (), meters: Sequence[int] = ()) -> None:
        """Groups and meters found on the bridge: each to the controller whose slice holds it."""
        if not self.shared:
            return
        for ids in self.by_name.values():
            ids.owned_groups.update(g for g in groups if ids.groups.from_bridge(g) is not None)
            ids.owned_meters.update(m for m in meters if ids.meters.from_bridge(m) is not None)

    # ---- controller -> bridge ----

    def down(self, controller: str, raw: bytes) -> list[bytes]:
        """A controller's message as the bridge must get it: ids moved into its slices, a
        delete-all expanded into deletes of its own ids (possibly none). Raises IdRefused."""
        if not self.shared or raw[0] < OFP13:
            return [raw]
        try:
            return self._down(self.by_name[controller], raw)
        except (struct.error, IndexError):
            raise IdRefused(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "message too short") from None

    def _down(self, ids: ControllerIds, raw: bytes) -> list[bytes]:
        msg_type = raw[1]
        if msg_type == OFPT_FLOW_MOD:
            out = bytearray(raw)
            _map_flow_mod(out, _down_mapper(ids, raw[0]))
            return [bytes(out)]
        if msg_type == OFPT_PACKET_OUT:
            out = bytearray(raw)
            _map_packet_out(out, _down_mapper(ids, raw[0]))
            return [bytes(out)]
        if msg_type == OFPT_GROUP_MOD:
            return self._group_mod(ids, raw)
        if msg_type == OFPT_METER_MOD:
            return self._meter_mod(ids, raw)
        if msg_type == OFPT_MULTIPART_REQUEST:
            out = bytearray(raw)
            _map_multipart_request(out, _down_mapper(ids, raw[0]))
            return [bytes(out)]
        return [raw]

    def _group_mod(self, ids: ControllerIds, raw: bytes) -> list[bytes]:
        (command,) = _U16.unpack_from(raw, 8)
        (group,) = _U32.unpack_from(raw, 12)
        head = 24 if raw[0] >= OFP15 else 16  # 1.5: bucket_array_len, command_bucket_id
        if command == OFPGC_DELETE and group == OFPG_ALL:
            owned, ids.owned_groups = sorted(ids.owned_groups), set()
            one = bytearray(raw[:head])
            if raw[0] >= OFP15:
                _U16.pack_into(one, 16, 0)  # no buckets
            return [_with_u32(bytes(one), 12, g, length=head) for g in owned]
        out = bytearray(raw)
        mapper = _down_mapper(ids, raw[0], group_mod=True)
        _U32.pack_into(out, 12, mapper.group(group))
        if raw[0] >= OFP15:
            (buckets_len,) = _U16.unpack_from(out, 16)
            _map_buckets15(out, 24, min(24 + buckets_len, len(out)), mapper)
        else:
            _map_buckets13(out, 16, len(out), mapper)
        (bridge_group,) = _U32.unpack_from(out, 12)
        if command in (OFPGC_ADD, OFPGC_ADD_OR_MOD):
            ids.owned_groups.add(bridge_group)
        elif command == OFPGC_DELETE:
            ids.owned_groups.discard(bridge_group)
        return [bytes(out)]

    def _meter_mod(self, ids: ControllerIds, raw: bytes) -> list[bytes]:
        (command,) = _U16.unpack_from(raw, 8)
        (meter,) = _U32.unpack_from(raw, 12)
        if command == OFPMC_DELETE and meter == OFPM_ALL:
            owned, ids.owned_meters = sorted(ids.owned_meters), set()
            return [_with_u32(raw[:16], 12, m, length=16) for m in owned]
        if meter > OFPM_MAX:  # OFPM_CONTROLLER, OFPM_SLOWPATH: one per bridge, for all
            raise IdRefused(OFPET_METER_MOD_FAILED, OFPMMFC_INVALID_METER,
                            f"meter 0x{meter:x} is reserved and shared by every controller")
        bridge_meter = _down_mapper(ids, raw[0], meter_mod=True).meter(meter)
        if command == OFPMC_ADD:
            ids.owned_meters.add(bridge_meter)
        elif command == OFPMC_DELETE:
            ids.owned_meters.discard(bridge_meter)
        return [_with_u32(raw, 12, bridge_meter)]

    def add_failed(self, controller: str, request: bytes, err_type: int, code: int) -> None:
        """The bridge refused a GROUP_MOD or METER_MOD (`request`: the start of it, from the
        error's data): an ADD that did not create anything does not make the id owned."""
        ids = self.by_name.get(controller)
        if not self.shared or ids is None or len(request) < 16:
            return
        (command,) = _U16.unpack_from(request, 8)
        (ident,) = _U32.unpack_from(request, 12)
        if request[1] == OFPT_GROUP_MOD and command in (OFPGC_ADD, OFPGC_ADD_OR_MOD):
            if (err_type, code) != (OFPET_GROUP_MOD_FAILED, OFPGMFC_GROUP_EXISTS):
                ids.owned_groups.discard(ident)
        elif request[1] == OFPT_METER_MOD and command == OFPMC_ADD:
            if (err_type, code) != (OFPET_METER_MOD_FAILED, OFPMMFC_METER_EXISTS):
                ids.owned_meters.discard(ident)

    def map_actions(self, controller: str, version: int, actions: bytes) -> bytes:
        """A controller's action list (a PACKET_OUT answering a miss) with its group ids moved."""
        if not self.shared or version < OFP13:
            return actions
        out = bytearray(actions)
        _map_actions(out, 0, len(out), _down_mapper(self.by_name[controller], version))
        return bytes(out)

    # ---- bridge -> controller ----

    def up(self, controller: str, raw: bytes) -> bytes:
        """A multipart reply for `controller`: only its own groups and meters, with its ids; its
        flows' group and meter references in its ids. Anything else is returned as is."""
        if not self.shared or raw[0] < OFP13 or raw[1] != OFPT_MULTIPART_REPLY or len(raw) < 16:
            return raw
        try:
            return self._up(self.by_name[controller], raw)
        except (struct.error, IndexError):  # malformed by the bridge inside an entry: as it came
            return raw

    def _up(self, ids: ControllerIds, raw: bytes) -> bytes:
        (kind,) = _U16.unpack_from(raw, 8)
        mapper = _up_mapper(ids, raw[0])
        if kind == OFPMP_FLOW:  # 1.3/1.4 flow stats, 1.5 flow descriptions
            out = bytearray(raw)
            if raw[0] >= OFP15:
                _each_entry(out, 16, 0, 24,
                            lambda at, end: _map_flow_desc15(out, at, end, mapper))
            else:
                _each_entry(out, 16, 0, 48,
                            lambda at, end: _map_flow_stats13(out, at, end, mapper))
            return bytes(out)
        if kind == OFPMP_METER_FEATURES and len(raw) >= 20:
            return _with_u32(raw, 16, ids.meters.size)
        keep: Callable[[bytearray, int, int], bool]
        if kind == OFPMP_GROUP:
            def keep(out: bytearray, at: int, end: int) -> bool:
                return _unmap_u32(out, at + 4, ids.groups)
        elif kind == OFPMP_GROUP_DESC:
            def keep(out: bytearray, at: int, end: int) -> bool:
                if not _unmap_u32(out, at + 4, ids.groups):
                    return False
                if out[0] >= OFP15:  # length, type, pad, group_id, bucket_array_len, pad6
                    (buckets_len,) = _U16.unpack_from(out, at + 8)
                    _map_buckets15(out, at + 16, min(at + 16 + buckets_len, end), mapper)
                else:
                    _map_buckets13(out, at + 8, end, mapper)
                return True
        elif kind == OFPMP_METER:
            def keep(out: bytearray, at: int, end: int) -> bool:
                return _unmap_u32(out, at, ids.meters)
        elif kind == OFPMP_METER_CONFIG:
            def keep(out: bytearray, at: int, end: int) -> bool:
                return _unmap_u32(out, at + 4, ids.meters)
        else:
            return raw
        length_at = 4 if kind == OFPMP_METER else 0
        return _filter_entries(raw, 16, length_at, keep)


# ---- id mappers ----


@dataclass(frozen=True, slots=True)
class _Mapper:
    version: int  # of the message walked: 1.5 added a meter action
    group: Callable[[int], int]
    meter: Callable[[int], int]


def _down_mapper(ids: ControllerIds, version: int, group_mod: bool = False,
                 meter_mod: bool = False) -> _Mapper:
    """Controller ids to bridge ids; one outside the controller's slice is refused with what a
    bridge with that many ids answers: a group-mod's or meter-mod's own error, else a bad
    output group or an unknown meter."""
    group_error = ((OFPET_GROUP_MOD_FAILED, OFPGMFC_INVALID_GROUP) if group_mod
                   else (OFPET_BAD_ACTION, OFPBAC_BAD_OUT_GROUP))

    def group(ident: int) -> int:
        if ident > OFPG_MAX:  # OFPG_ALL, OFPG_ANY
            return ident
        mapped = ids.groups.to_bridge(ident)
        if mapped is None:
            raise IdRefused(*group_error,
                            f"group {ident} is outside this controller's {ids.groups.size} ids")
        return mapped

    def meter(ident: int) -> int:
        if ident > OFPM_MAX:  # OFPM_SLOWPATH, OFPM_CONTROLLER, OFPM_ALL: shared
            return ident
        mapped = ids.meters.to_bridge(ident)
        if mapped is None:
            if not meter_mod:
                code = OFPMMFC_UNKNOWN_METER
            else:
                code = OFPMMFC_INVALID_METER if ident == 0 else OFPMMFC_OUT_OF_METERS
            raise IdRefused(OFPET_METER_MOD_FAILED, code,
                            f"meter {ident} is outside this controller's {ids.meters.size} ids")
        return mapped

    return _Mapper(version, group, meter)


def _up_mapper(ids: ControllerIds, version: int) -> _Mapper:
    """Bridge ids back to the controller's; ids of other controllers' slices stay as they are."""
    def group(ident: int) -> int:
        if ident > OFPG_MAX:
            return ident
        mapped = ids.groups.from_bridge(ident)
        return ident if mapped is None else mapped

    def meter(ident: int) -> int:
        if ident > OFPM_MAX:
            return ident
        mapped = ids.meters.from_bridge(ident)
        return ident if mapped is None else mapped

    return _Mapper(version, group, meter)


# ---- walking raw messages (lengths already checked by openflow/wellformed.py) ----


def _with_u32(raw: bytes, at: int, value: int, length: int | None = None) -> bytes:
    out = bytearray(raw)
    _U32.pack_into(out, at, value)
    if length is not None:
        _U16.pack_into(out, 2, length)
    return bytes(out)


def _remap_u32(buf: bytearray, at: int, mapping: Callable[[int], int]) -> None:
    (value,) = _U32.unpack_from(buf, at)
    _U32.pack_into(buf, at, mapping(value))


def _unmap_u32(buf: bytearray, at: int, id_slice: IdSlice) -> bool:
    """The bridge id at `at` back in the controller's ids; False if it is not in its slice."""
    (value,) = _U32.unpack_from(buf, at)
    mapped = id_slice.from_bridge(value)
    if mapped is None:
        return False
    _U32.pack_into(buf, at, mapped)
    return True


def _action_visitor(mapper: _Mapper) -> actions.Visitor:
    def visit(buf: bytearray, at: int, action_type: int, length: int) -> None:
        if action_type == OFPAT_GROUP:
            _remap_u32(buf, at + 4, mapper.group)
        elif action_type == OFPAT15_METER and mapper.version >= OFP15:
            _remap_u32(buf, at + 4, mapper.meter)
    return visit


def _map_actions(buf: bytearray, at: int, end: int, mapper: _Mapper) -> None:
    actions.walk_actions(buf, at, end, _action_visitor(mapper))


def _map_instructions(buf: bytearray, at: int, end: int, mapper: _Mapper) -> None:
    def visit_instruction(buf: bytearray, at: int, kind: int, length: int) -> None:
        if kind == OFPIT_METER:
            _remap_u32(buf, at + 4, mapper.meter)
    actions.walk_instructions(buf, at, end, _action_visitor(mapper), visit_instruction)


def _map_flow_mod(buf: bytearray, mapper: _Mapper) -> None:
    if buf[25] in (OFPFC_DELETE, OFPFC_DELETE_STRICT):
        _map_out_group(buf, 40, mapper)  # only deletes read it
    _map_instructions(buf, actions.padded_match_end(buf, 48), len(buf), mapper)


def _map_packet_out(buf: bytearray, mapper: _Mapper) -> None:
    actions.walk_message(buf, _action_visitor(mapper))


def _map_buckets13(buf: bytearray, at: int, end: int, mapper: _Mapper) -> None:
    """OpenFlow 1.3/1.4 buckets, each bucket's watch_group too."""
    def watch_group(buf: bytearray, bucket_at: int) -> None:
        _remap_u32(buf, bucket_at + 8, mapper.group)
    actions.walk_buckets(buf, at, end, _action_visitor(mapper), watch_group)


def _map_buckets15(buf: bytearray, at: int, end: int, mapper: _Mapper) -> None:
    """OpenFlow 1.5 buckets, each one's watch_group property too."""
    def watch_group(buf: bytearray, value_at: int) -> None:
        _remap_u32(buf, value_at, mapper.group)
    actions.walk_buckets15(buf, at, end, _action_visitor(mapper), watch_group)


def _map_out_group(buf: bytearray, at: int, mapper: _Mapper) -> None:
    """A filter on the group flows output to. One outside the controller's slice would match
    nothing on a bridge of its own: OFPG_MAX, in nobody's slice, matches nothing here."""
    try:
        _remap_u32(buf, at, mapper.group)
    except IdRefused:
        _U32.pack_into(buf, at, OFPG_MAX)


def _map_multipart_request(buf: bytearray, mapper: _Mapper) -> None:
    if len(buf) < 16:
        return
    (kind,) = _U16.unpack_from(buf, 8)
    flow_kinds = (OFPMP_FLOW, OFPMP_AGGREGATE, OFPMP15_FLOW_STATS) if buf[0] >= OFP15 else (
        OFPMP_FLOW, OFPMP_AGGREGATE)
    if kind in flow_kinds and len(buf) >= 28:
        _map_out_group(buf, 24, mapper)
    elif kind == OFPMP_GROUP and len(buf) >= 20:
        _remap_u32(buf, 16, mapper.group)
    elif kind == OFPMP_GROUP_DESC and buf[0] >= OFP15 and len(buf) >= 20:
        _remap_u32(buf, 16, mapper.group)  # 1.5 can ask for one group's description
    elif kind in (OFPMP_METER, OFPMP_METER_CONFIG) and len(buf) >= 20:
        _remap_u32(buf, 16, mapper.meter)


def _map_flow_stats13(buf: bytearray, at: int, end: int, mapper: _Mapper) -> None:
    """One 1.3/1.4 flow-stats entry: 48 fixed bytes, the match, the instructions."""
    _map_instructions(buf, actions.padded_match_end(buf, at + 48), end, mapper)


def _map_flow_desc15(buf: bytearray, at: int, end: int, mapper: _Mapper) -> None:
    """One 1.5 flow description: 24 fixed bytes, the match, the stats, the instructions."""
    stats_at = actions.padded_match_end(buf, at + 24)
    (stats_len,) = _U16.unpack_from(buf, stats_at + 2)
    _map_instructions(buf, stats_at + (stats_len + 7) // 8 * 8, end, mapper)


def _each_entry(buf: bytearray, at: int, length_at: int, minimum: int,
                visit: Callable[[int, int], None]) -> None:
    while at + minimum <= len(buf):
        (length,) = _U16.unpack_from(buf, at + length_at)
        if length < minimum or at + length > len(buf):
            return  # malformed from the bridge: the rest untouched
        visit(at, at + length)
        at += length


def _filter_entries(raw: bytes, body_at: int, length_at: int,
                    keep: Callable[[bytearray, int, int], bool]) -> bytes:
    """A multipart reply with only the entries `keep` accepts (it may also rewrite them)."""
    out = bytearray(raw[:body_at])
    buf = bytearray(raw)
    at = body_at
    while at + length_at + 2 <= len(buf):
        (length,) = _U16.unpack_from(buf, at + length_at)
        if length < length_at + 8 or at + length > len(buf):
            break  # malformed from the bridge: what follows is dropped, not guessed at
        if keep(buf, at, at + length):
            out += buf[at:at + length]
        at += length
    _U16.pack_into(out, 2, len(out))
    return bytes(out)
