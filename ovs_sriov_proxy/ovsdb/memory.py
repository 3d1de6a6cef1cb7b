"""What attached bridges had before the proxy changed them, kept in [proxy] state_dir.

The file is JSON, `{"version": 1, "bridges": {NAME: {"controllers": [{"target",
"connection_mode", "inactivity_probe", "max_backoff"}], "fail_mode", "protocols"}}}`, written
whole to a temporary file and renamed over the old one, so a crash leaves either version. A
restarted proxy reads it and can still restore the bridges on detach.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from .model import BridgeSettings

log = logging.getLogger(__name__)

FILE_NAME = "ovsdb-bridges.json"
VERSION = 1


class BadMemoryFile(ValueError):
    """The file exists but cannot be understood."""


def load(path: Path) -> dict[str, BridgeSettings]:
    """The remembered settings; {} if there is no file. Raises BadMemoryFile for a bad file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(text)
        if document.get("version") != VERSION:
            raise ValueError(f"unknown version {document.get('version')!r}")
        return {str(name): BridgeSettings.from_json(settings)
                for name, settings in document["bridges"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadMemoryFile(f"{path}: {exc}") from None


def save(path: Path, saved: Mapping[str, BridgeSettings]) -> None:
    document = {"version": VERSION,
                "bridges": {name: saved[name].to_json() for name in sorted(saved)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
