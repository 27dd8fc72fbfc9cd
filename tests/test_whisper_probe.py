"""training/whisper_probe.py: a vector folder's recorded setup.

Whisper's front end, pooling, encoder and its setups are ``ser_core.whisper``'s (tests/test_whisper.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import whisper_probe as wp  # noqa: E402


def test_a_folder_records_its_setup_and_refuses_vectors_made_another_way(tmp_path):
    """Every later step (channel copies, shifts) embeds as the folder's vectors were made, so a folder cannot
    hold two setups; a folder from before the record reads as the default setup."""
    assert wp.read_setup(tmp_path) == wp.Setup()
    level = wp.Setup(level=True)
    wp.record_setup(tmp_path, level)
    assert wp.read_setup(tmp_path) == level
    fast = wp.Setup(unpadded=True, layers=2, level=True, compute="int8")
    wp.record_setup(tmp_path / "fast", fast)
    assert wp.read_setup(tmp_path / "fast") == fast
    (tmp_path / "vectors_ravdess.npz").write_bytes(b"")
    wp.record_setup(tmp_path, level)                                  # the same setup again: fine
    with pytest.raises(SystemExit, match="level=True"):
        wp.record_setup(tmp_path, wp.Setup(layers=2, level=True))
    assert wp.read_setup(tmp_path) == level
    fast = wp.Setup(unpadded=True, layers=2, level=True, compute="int8")
    wp.record_setup(tmp_path / "fast", fast)
    assert wp.read_setup(tmp_path / "fast") == fast
