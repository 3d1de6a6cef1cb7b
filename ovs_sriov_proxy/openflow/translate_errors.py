"""OpenFlow 1.0 <-> 1.3 ERROR numbering, for openflow/translate.py.

The error types moved between the versions (1.3 added BAD_INSTRUCTION, BAD_MATCH and more
before FLOW_MOD_FAILED), and some codes moved within a type. `map_error` gives an error's
nearest meaning in the other version; translate.py names its own refusals in 1.3 numbering
(the constants below) and maps them for an OpenFlow 1.0 sender.
"""

from __future__ import annotations

from .framing import OFP10

# ---- OpenFlow 1.3 error numbering (the canonical one here) ----
ET_BAD_REQUEST, ET_BAD_ACTION, ET_BAD_INSTRUCTION, ET_BAD_MATCH = 1, 2, 3, 4
ET_FLOW_MOD_FAILED, ET_PORT_MOD_FAILED = 5, 7
BRC_BAD_TYPE, BRC_BAD_MULTIPART, BRC_BAD_EXPERIMENTER, BRC_BAD_LEN = 1, 2, 3, 6
BRC_BAD_TABLE_ID, BRC_BAD_PORT = 9, 11
BAC_BAD_TYPE, BAC_BAD_OUT_PORT, BAC_BAD_ARGUMENT, BAC_BAD_OUT_GROUP = 0, 4, 5, 9
BAC_MATCH_INCONSISTENT, BAC_BAD_SET_TYPE = 10, 13
BIC_UNSUP_INST = 1
BMC_BAD_FIELD, BMC_BAD_MASK = 6, 8
FMFC_UNKNOWN, FMFC_BAD_TABLE_ID, FMFC_BAD_FLAGS = 0, 2, 7
PMFC_BAD_CONFIG = 2


# (1.0 type, 1.0 code) <-> (1.3 type, 1.3 code) for the codes whose meaning moved; codes of a
# type not listed here keep their number when the type is in _TYPES_10_TO_13.
# HELLO_FAILED, BAD_REQUEST, BAD_ACTION, FLOW_MOD_FAILED, PORT_MOD_FAILED, QUEUE_OP_FAILED:
_TYPES_10_TO_13 = {0: 0, 1: 1, 2: 2, 3: 5, 4: 7, 5: 9}
_FLOW_MOD_10_TO_13 = {0: 1, 1: 3, 2: 4, 3: 5, 4: 6, 5: 0}
_FLOW_MOD_13_TO_10 = {0: 5, 1: 0, 2: 5, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
# OF1.3 codes past what OF1.0 has, per type: the nearest OF1.0 code.
_BAD_REQUEST_13_TO_10 = {9: 5, 10: 5, 11: 5, 12: 5, 13: 6}  # table/slave/port/packet: EPERM
_BAD_ACTION_13_TO_10 = {9: 5, 10: 5, 11: 5, 12: 5, 13: 0, 14: 1, 15: 5}
_LAST_CODE_10 = {0: 1, 1: 8, 2: 8, 3: 5, 4: 1, 5: 2}
_UNSUPPORTED_10 = (3, 5)  # FLOW_MOD_FAILED/UNSUPPORTED: what OF1.0 says for the rest
_EPERM_13 = (1, 5)  # BAD_REQUEST/EPERM


def map_error(from_version: int, to_version: int, err_type: int, code: int) -> tuple[int, int]:
    """An ERROR's (type, code) in the other version's numbering (nearest meaning)."""
    if from_version == to_version:
        return err_type, code
    if from_version == OFP10:
        to_type = _TYPES_10_TO_13.get(err_type)
        if to_type is None:  # OVS's vendor errors (NXET_VENDOR) and anything unknown
            return _EPERM_13
        if err_type == 3:
            return to_type, _FLOW_MOD_10_TO_13.get(code, 0)
        return to_type, code
    if err_type == 5:
        return 3, _FLOW_MOD_13_TO_10.get(code, 5)
    if err_type == 7:
        return 4, code if code <= 1 else 0
    if err_type == 9:
        return 5, code
    if err_type in (0, 1, 2):
        if code <= _LAST_CODE_10[err_type]:
            return err_type, code
        table = _BAD_REQUEST_13_TO_10 if err_type == 1 else _BAD_ACTION_13_TO_10
        return err_type, table.get(code, 5)  # EPERM / BAD_ARGUMENT
    return _UNSUPPORTED_10
