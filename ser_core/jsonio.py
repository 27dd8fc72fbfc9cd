"""Reading and writing the JSON files of run and model folders.

Every write goes through :func:`ser_core.config.atomic_write_text`, so a reader sees the old
file or the new one, never half of one; a missing or torn file reads as ``default``.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import atomic_write_text


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def write_json(path: Path, obj) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=1, default=str))
