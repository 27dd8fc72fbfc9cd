"""training/whisper_probe.py: the encoder cut to its first blocks, and a vector folder's recorded setup.

Whisper's front end, pooling and encoder are ``ser_core.whisper``'s (tests/test_whisper.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import struct

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import whisper_probe as wp  # noqa: E402

def _string(text: str) -> bytes:
    return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"


def _model_bin(names: list[str]) -> bytes:
    """A CTranslate2 version-6 model.bin (CTranslate2's ModelSpec._serialize layout) of small float32 variables,
    variable i holding the value i, and one alias."""
    out = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(names))
    for i, name in enumerate(names):
        data = np.full((2, 3), i, np.float32).tobytes()
        out += _string(name) + struct.pack("<B", 2) + struct.pack("<II", 2, 3) + struct.pack("<B", 0)
        out += struct.pack("<I", len(data)) + data
    return out + struct.pack("<I", 1) + _string("decoder/projection/weight") + _string("decoder/embeddings/weight")


def test_cut_encoder_drops_the_later_blocks_and_keeps_every_other_byte(tmp_path):
    """Cutting to K blocks leaves out encoder/layer_K and after, and nothing else: the header, the other
    variables (the decoder's layer_3 too), their bytes and the aliases stay; the other files are copied."""
    names = [f"encoder/layer_{i}/ffn/linear_0/weight" for i in range(4)] + [
        "encoder/layer_norm/gamma", "encoder/layer_10x/odd", "decoder/layer_3/ffn/linear_0/weight"]
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.bin").write_bytes(_model_bin(names))
    (src / "config.json").write_text("{}")
    dest = wp.cut_encoder(src, 2, tmp_path / "cut")
    assert (dest / "config.json").read_text() == "{}"
    buf = (dest / "model.bin").read_bytes()
    _, spans, tail = wp.model_variables(buf)
    kept = [name for name, _, _ in spans]
    assert kept == names[:2] + names[4:]
    full = (src / "model.bin").read_bytes()
    _, full_spans, full_tail = wp.model_variables(full)
    whole = {name: full[a:b] for name, a, b in full_spans}
    assert all(buf[a:b] == whole[name] for name, a, b in spans)
    assert buf[tail:] == full[full_tail:] and tail == len(buf) - len(full) + full_tail
    assert wp.cut_encoder(src, 4, tmp_path / "all").joinpath("model.bin").read_bytes() == full


def test_another_binary_version_is_refused():
    with pytest.raises(SystemExit, match="version 5"):
        wp.model_variables(struct.pack("<I", 5) + _string("WhisperSpec"))


def test_a_folder_records_its_setup_and_refuses_vectors_made_another_way(tmp_path):
    """Every later step (channel copies, shifts) embeds as the folder's vectors were made, so a folder cannot
    hold two setups; a folder from before the record reads as the default setup."""
    assert wp.read_setup(tmp_path) == wp.Setup()
    level = wp.Setup(level=True)
    wp.record_setup(tmp_path, level)
    assert wp.read_setup(tmp_path) == level
    (tmp_path / "vectors_ravdess.npz").write_bytes(b"")
    wp.record_setup(tmp_path, level)                                  # the same setup again: fine
    with pytest.raises(SystemExit, match="level=True"):
        wp.record_setup(tmp_path, wp.Setup(layers=2, level=True))
    assert wp.read_setup(tmp_path) == level


def test_a_cut_encoder_is_made_once_per_folder_and_then_reused(tmp_path):
    """A --layers folder's cut copy of the encoder (~75 MB) is written by its first step and read by every later
    one; the copy is the real encoder's first blocks, loaded and run."""
    from ser_core.whisper import weights_dir

    setup = wp.Setup(layers=2, level=True)
    embed = wp.setup_embedder(tmp_path, weights_dir(), setup)
    cut = tmp_path / "encoder-2-layers" / "model.bin"
    first = cut.stat().st_mtime_ns
    v = embed([np.zeros(8000, np.float32), np.full(16000, 0.1, np.float32)])
    assert v.shape == (2, wp.VECTOR_SIZE) and np.isfinite(v).all()
    wp.setup_embedder(tmp_path, weights_dir(), setup)
    assert cut.stat().st_mtime_ns == first
    assert not list(tmp_path.glob("**/*.part"))
